"""Signal errors: why a signal update was refused (the last good state stays in force).

::

    SignalError (trustfabric.errors)          signal.invalid
    ├── PostureError                          posture.*  (unsigned, bad_signature, stale, malformed, config,
    │                                                       agent_unreachable; failing checks: kernel, os...)
    ├── ThreatIntelError                      signal.intel.*   (malformed, not_a_bundle, empty, not_stix,
    │                                                             no_indicators, pattern, no_usable_indicator)
    ├── RiskScoreError                        signal.risk.*    (out_of_range, not_a_number, storage)
    ├── MarketSignalError                     signal.market.*  (unknown kill-switch state or scope, bad calendar)
    └── UnknownPrincipalError                 signal.unknown_principal

stix2's ``STIXError``/``ValueError``, ``sqlite3.Error`` and calendar parse errors are
translated into these where those libraries are called.
"""

from __future__ import annotations

from trustfabric.errors import SignalError

__all__ = ["SignalError", "PostureError", "ThreatIntelError", "RiskScoreError", "MarketSignalError",
           "UnknownPrincipalError"]


class PostureError(SignalError):
    reason = "posture.failing"


class ThreatIntelError(SignalError):
    reason = "signal.intel.invalid"


class RiskScoreError(SignalError):
    reason = "signal.risk.invalid"


class MarketSignalError(SignalError):
    reason = "signal.market.invalid"


class UnknownPrincipalError(SignalError):
    reason = "signal.unknown_principal"
