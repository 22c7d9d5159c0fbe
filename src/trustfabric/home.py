"""Where trustfabric keeps its state: ``$TRUSTFABRIC_HOME`` (default ``./.trustfabric``).

Layout under the home directory::

    identity.db          identity store (CAs, releases, users, revocations, JWKS) - SQLite
    ca/<trust-domain>/   CA private keys (0600) and certificates
    policy/              active policy bundle and decision epochs
    audit/               central audit log (SQLite, WAL) and tree heads
    spool/<source>/      enforcement points' local append-only audit segments
    reports/             demo and simulation reports
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "TRUSTFABRIC_HOME"
DEFAULT_HOME = ".trustfabric"


def home_dir(create: bool = True) -> Path:
    """The state directory, created 0700 when missing."""
    path = Path(os.environ.get(ENV_VAR) or DEFAULT_HOME).expanduser().resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def sub_dir(*parts: str, create: bool = True) -> Path:
    path = home_dir(create=create).joinpath(*parts)
    if create:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
