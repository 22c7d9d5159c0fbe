"""The CLI's command groups, one module per group; assembled by :mod:`trustfabric.cli`.

Part of the CLI leaf: nothing outside the CLI imports these modules. Each group
module exposes ``app`` (a ``typer.Typer``); each single command module exposes
``command``; each ``bench_<name>`` module exposes ``command`` for ``trustfabric bench <name>``.
"""
