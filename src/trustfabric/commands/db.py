"""``trustfabric db migrate | status``: the PostgreSQL schema of the fabric's stores beyond one machine.

The DSN comes from ``--dsn`` or ``$TRUSTFABRIC_DATABASE_URL`` (``postgresql://user@host/db``),
the schema from ``--schema`` or ``$TRUSTFABRIC_DATABASE_SCHEMA`` (``trustfabric``). ``migrate``
applies the numbered migrations not applied yet, each in its own transaction, and refuses a
database whose schema is newer than this trustfabric (``db.schema_newer``). The embedded
default (SQLite files under ``$TRUSTFABRIC_HOME``) needs none of this.
"""

from __future__ import annotations

import os
from typing import Optional

import typer

from trustfabric.commands.common import console, fail, refusals_exit

app = typer.Typer(no_args_is_help=True, help="PostgreSQL schema of the stores beyond one machine: migrate, status.")

DSN = typer.Option(None, "--dsn", help="PostgreSQL DSN (default $TRUSTFABRIC_DATABASE_URL).")
SCHEMA = typer.Option(None, "--schema", help="Schema (default $TRUSTFABRIC_DATABASE_SCHEMA or trustfabric).")


def _target(dsn: Optional[str], schema: Optional[str]) -> tuple[str, str]:
    from trustfabric.audit.log import DATABASE_SCHEMA_ENV, DATABASE_URL_ENV
    from trustfabric.audit.postgres import DEFAULT_SCHEMA

    dsn = dsn or os.environ.get(DATABASE_URL_ENV, "")
    if not dsn:
        raise fail("db.no_dsn", f"give --dsn or set ${DATABASE_URL_ENV}", code=2)
    return dsn, schema or os.environ.get(DATABASE_SCHEMA_ENV, DEFAULT_SCHEMA)


@app.command("migrate")
def migrate(dsn: Optional[str] = DSN, schema: Optional[str] = SCHEMA) -> None:
    """Apply the pending schema migrations (refused against a newer schema)."""
    from trustfabric.audit import postgres

    dsn, schema = _target(dsn, schema)
    with refusals_exit():
        applied = postgres.migrate(dsn, schema)
        version = postgres.schema_version(dsn, schema)
    console.print(f"schema {schema} at version {version}" + (f" (applied {applied})" if applied else " (up to date)"),
                  highlight=False)


@app.command("status")
def status(dsn: Optional[str] = DSN, schema: Optional[str] = SCHEMA) -> None:
    """The schema's version against this trustfabric's."""
    from trustfabric.audit import postgres

    dsn, schema = _target(dsn, schema)
    with refusals_exit():
        version = postgres.schema_version(dsn, schema)
    known = postgres.known_version()
    state = "up to date" if version == known else ("NEWER than this trustfabric" if version > known
                                                  else "needs: trustfabric db migrate")
    console.print(f"schema {schema}: version {version}, trustfabric knows {known}: {state}", highlight=False)
    if version != known:
        raise typer.Exit(1)
