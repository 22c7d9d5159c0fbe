"""Data exposure: what an attacker reading the floor's data directly (not through a service) gets.

The lateral-movement, insider and credential-theft scenarios also go around the services
to the data itself, three ways, and count the plaintext records they reach:

* ``disk``: every file of the data directories on the floor's disk (the vault's sealed
  objects on the zero-trust floor, the plain ``records/`` of the perimeter floor);
* ``backup``: a copy of those directories taken elsewhere (a backup, a stolen disk), read
  there;
* ``other_keys``: a key-encryption key the attacker can get (a segment's own KEK of its
  foothold's segment) tried on every sealed object's data key.

A record counts when it is JSON with a client or trade field (what a file of client orders
or fills holds); ciphertext never parses. The key store lives on the key service's host,
not the foothold's: a foothold's host holds its own segment's KEK at most (modelled; the
result says so). Pure apart from the files it reads; no service is asked.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from trustfabric.data.envelope import decode, unwrap_data_key
from trustfabric.data.errors import DataError
from trustfabric.data.floor import PLAIN_DIR, json_lines
from trustfabric.data.keystore import KekStore
from trustfabric.data.local import OBJECTS_DIR

DATA_CATEGORIES = frozenset({"lateral_movement", "insider", "credential_theft"})
RECORD_FIELDS = frozenset({"cl_ord_id", "client_id", "client_name", "account", "symbol"})
MODEL_NOTE = "modelled: the key store is on the key service's host; the foothold's host holds its own segment's KEK"


def _records_in(directory: Path) -> int:
    found = 0
    for value in json_lines(sorted(p for p in directory.rglob("*") if p.is_file())):
        if isinstance(value, dict) and RECORD_FIELDS & set(value):
            found += 1
    return found


def _data_dirs(home: Path) -> list[Path]:
    return [d for d in (home / OBJECTS_DIR, home / PLAIN_DIR) if d.is_dir()]


def _with_other_keys(home: Path, segment: str, environment: str) -> int:
    """Data keys that open under a KEK of the foothold's own segment (AES key wrap checks its integrity)."""
    with tempfile.TemporaryDirectory(prefix="sim-keys-") as tmp:
        kek = KekStore(Path(tmp)).current(segment, environment, create=True)
        opened = 0
        for path in sorted((home / OBJECTS_DIR).rglob("*.sealed")) if (home / OBJECTS_DIR).is_dir() else []:
            try:
                sealed = decode(path.read_bytes())
                unwrap_data_key(sealed, type(kek)(sealed.segment, sealed.environment, sealed.kek_version, kek.key))
            except (OSError, DataError):
                continue
            opened += 1
        return opened


def data_exposure(home: Path, foothold_segment: str, environment: str) -> dict[str, object]:
    """Records reached per way in, their sum (``records_exposed``), and the sealed objects that were there."""
    disk = sum(_records_in(d) for d in _data_dirs(home))
    with tempfile.TemporaryDirectory(prefix="sim-backup-") as tmp:
        for d in _data_dirs(home):
            # the floor keeps writing: a file being written (``*.tmp``, renamed when complete) is not in a backup
            shutil.copytree(d, Path(tmp) / d.name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.tmp"))
        backup = _records_in(Path(tmp))
    other = _with_other_keys(home, foothold_segment, environment)
    sealed = len(list((home / OBJECTS_DIR).rglob("*.sealed"))) if (home / OBJECTS_DIR).is_dir() else 0
    return {"sealed_objects": sealed, "disk": disk, "backup": backup, "other_keys": other, "records_exposed": disk + backup + other,
            "note": MODEL_NOTE}
