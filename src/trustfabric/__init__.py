"""trustfabric: a Zero Trust control fabric for trading systems.

Every hop between trading components is authenticated by cryptographic identity,
authorized by policy with least privilege for the shortest time, and logged
tamper-evidently. The architecture is described in DESIGN.md; one sub-package per
part (identity, policy, signals, enforcement, transport, audit, response, trading,
simulation, console), with ``cli.py`` as the operator's entry point.
"""

__version__ = "0.1.0"
