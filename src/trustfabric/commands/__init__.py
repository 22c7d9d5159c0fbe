"""The CLI's command groups, one module per group; assembled by :mod:`trustfabric.cli`.

Part of the CLI leaf: nothing outside the CLI imports these modules. Each group
module exposes ``app`` (a ``typer.Typer``); each single command module exposes
``command``; each ``bench_<name>`` module exposes ``command`` for ``trustfabric bench <name>``.

A command imports the heavy parts it alone needs (the floor launcher, the PostgreSQL and
NATS clients, the console) inside its function: ``cli.py`` imports every command module to
register it, and importing those parts at module top would add about 0.3 s (1.28 s -> 1.57 s
measured for ``import trustfabric.cli``) to every command, ``--help`` included.
"""
