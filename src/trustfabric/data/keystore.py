"""The key store: key-encryption keys and tokenization keys per (segment, environment), 0600 files.

Layout under its own directory (``$TRUSTFABRIC_HOME/vault-keys/`` by default, never the
objects' directory ``$TRUSTFABRIC_HOME/vault/``)::

    <environment>/<segment>/kek-v<N>.key   256-bit KEK, version N (the highest is current)
    <environment>/<segment>/tokenize.key   256-bit HMAC-SHA256 key for field tokenization
    <environment>/<segment>/shredded       tombstone: the scope was crypto-shredded (time, versions)

Every file is 0600 from its creation in 0700 directories; a key file readable by others
is refused (``data.keystore_exposed``), as is a missing key (``data.kek_missing``) or one
of a shredded scope (``data.kek_shredded``). :meth:`KekStore.destroy` overwrites a key
file with zeros, syncs it and unlinks it. Loaded keys are kept in memory (the key
service's hot path reads no file); :meth:`rotate`, :meth:`destroy` and :meth:`shred`
drop them. Randomness is passed in.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from trustfabric.data.envelope import DATA_KEY_BYTES, Kek
from trustfabric.data.errors import KeyStoreError, OpenRefused
from trustfabric.data.labels import Labels
from trustfabric.keyfiles import write_private_file

_KEK_FILE = re.compile(r"kek-v(\d{1,9})\.key")
TOKENIZE_FILE = "tokenize.key"
TOMBSTONE = "shredded"


class KekStore:
    def __init__(self, directory: Path | str, random: Callable[[int], bytes] = os.urandom) -> None:
        self.directory = Path(directory)
        self._random = random
        self._lock = threading.RLock()
        self._keks: dict[tuple[str, str, int], Kek] = {}
        self._stamps: dict[tuple[str, str], int] = {}  # the scope directory's mtime when its keys were read
        self._tokenize: dict[tuple[str, str], bytes] = {}

    def _scope_dir(self, segment: str, environment: str) -> Path:
        Labels("public", environment, segment)  # validates both names (no path tricks)
        return self.directory / environment / segment

    def _read_key(self, path: Path, what: str) -> bytes | None:
        try:
            info = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyStoreError(f"{path}: {exc.strerror}") from exc
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyStoreError(f"{path} is readable by others (chmod 600)", reason="data.keystore_exposed")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyStoreError(f"{path}: {exc.strerror}") from exc
        if len(data) != DATA_KEY_BYTES:
            raise KeyStoreError(f"{what} {path} is not a 256-bit key")
        return data

    def tombstone(self, segment: str, environment: str) -> dict | None:
        path = self._scope_dir(segment, environment) / TOMBSTONE
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"{path}: {exc}") from exc

    def versions(self, segment: str, environment: str) -> list[int]:
        directory = self._scope_dir(segment, environment)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise KeyStoreError(f"{directory}: {exc.strerror}") from exc
        return sorted(int(m.group(1)) for m in map(_KEK_FILE.fullmatch, names) if m)

    def _fresh(self, segment: str, environment: str) -> None:
        """Forget the scope's cached keys when its directory changed since they were read.

        Another process (the control plane applying ``data rotate`` / ``data shred`` on a
        running floor) changes the files; the directory's change time moves with every
        key written, wiped or tombstoned, so one ``stat`` per use is enough for a shredded
        KEK to stop opening anything at once in every process that held it in memory.
        """
        try:
            stamp = os.stat(self._scope_dir(segment, environment)).st_mtime_ns
        except OSError:
            stamp = -1
        if self._stamps.get((segment, environment)) != stamp:
            with self._lock:
                for key in [k for k in self._keks if k[:2] == (segment, environment)]:
                    del self._keks[key]
                self._tokenize.pop((segment, environment), None)
                self._stamps[(segment, environment)] = stamp

    def get(self, segment: str, environment: str, version: int) -> Kek:
        """The KEK of a scope at ``version``: from memory while the scope is unchanged, else from its file."""
        self._fresh(segment, environment)
        cached = self._keks.get((segment, environment, version))
        if cached is not None:
            return cached
        with self._lock:
            path = self._scope_dir(segment, environment) / f"kek-v{int(version)}.key"
            key = self._read_key(path, "KEK")
            if key is None:
                stone = self.tombstone(segment, environment)
                if stone is not None and int(version) in stone.get("versions", []):
                    raise OpenRefused(f"KEK {environment}/{segment}/v{version} was crypto-shredded at "
                                      f"{stone.get('at')}", reason="data.kek_shredded")
                raise OpenRefused(f"no KEK {environment}/{segment}/v{version}", reason="data.kek_missing")
            kek = Kek(segment, environment, int(version), key)
            self._keks[(segment, environment, kek.version)] = kek
            return kek

    def current(self, segment: str, environment: str, *, create: bool = False) -> Kek:
        """The newest KEK of a scope (created on first use when ``create``)."""
        versions = self.versions(segment, environment)
        if versions:
            return self.get(segment, environment, versions[-1])
        if not create:
            raise OpenRefused(f"no KEK for {environment}/{segment}", reason="data.kek_missing")
        return self._create(segment, environment, self._next_version(segment, environment))

    def _next_version(self, segment: str, environment: str) -> int:
        stone = self.tombstone(segment, environment) or {}
        used = self.versions(segment, environment) + list(stone.get("versions", []))
        return max(used, default=0) + 1

    def _create(self, segment: str, environment: str, version: int) -> Kek:
        with self._lock:
            path = self._scope_dir(segment, environment) / f"kek-v{version}.key"
            if path.exists():
                raise KeyStoreError(f"{path} exists")
            try:
                write_private_file(path, self._random(DATA_KEY_BYTES))
            except OSError as exc:
                raise KeyStoreError(f"{path}: {exc.strerror}") from exc
            return self.get(segment, environment, version)

    def rotate(self, segment: str, environment: str) -> tuple[Kek, Kek]:
        """A new current KEK for the scope; returns (previous, new). The previous stays until destroyed."""
        previous = self.current(segment, environment)
        return previous, self._create(segment, environment, self._next_version(segment, environment))

    def destroy(self, segment: str, environment: str, version: int) -> bool:
        """Overwrite, sync and unlink one KEK file (a rotated-out version). False when absent."""
        with self._lock:
            directory = self._scope_dir(segment, environment)
            path = directory / f"kek-v{int(version)}.key"
            self._keks.pop((segment, environment, int(version)), None)
            return _wipe(path)

    def tokenization_key(self, segment: str, environment: str) -> bytes:
        """The scope's HMAC key for tokenizing client fields (created on first use)."""
        self._fresh(segment, environment)
        cached = self._tokenize.get((segment, environment))
        if cached is not None:
            return cached
        with self._lock:
            path = self._scope_dir(segment, environment) / TOKENIZE_FILE
            key = self._read_key(path, "tokenization key")
            if key is None:
                if self.tombstone(segment, environment) is not None:
                    raise OpenRefused(f"{environment}/{segment} was crypto-shredded", reason="data.kek_shredded")
                key = self._random(DATA_KEY_BYTES)
                try:
                    write_private_file(path, key)
                except OSError as exc:
                    raise KeyStoreError(f"{path}: {exc.strerror}") from exc
            self._tokenize[(segment, environment)] = key
            return key

    def shred(self, segment: str, environment: str, now: float) -> list[int]:
        """Crypto-shred a scope: every KEK version and the tokenization key destroyed, a tombstone left."""
        with self._lock:
            directory = self._scope_dir(segment, environment)
            versions = self.versions(segment, environment)
            stone = self.tombstone(segment, environment) or {"versions": []}
            stone = {"at": now, "versions": sorted(set(stone["versions"]) | set(versions))}
            try:
                write_private_file(directory / TOMBSTONE, json.dumps(stone).encode())
            except OSError as exc:
                raise KeyStoreError(f"{directory}: {exc.strerror}") from exc
            for version in versions:
                self._keks.pop((segment, environment, version), None)
                _wipe(directory / f"kek-v{version}.key")
            self._tokenize.pop((segment, environment), None)
            _wipe(directory / TOKENIZE_FILE)
            return versions

    def scopes(self) -> list[tuple[str, str]]:
        """Every (segment, environment) with a KEK or a tombstone."""
        found = []
        for env_dir in sorted(self.directory.glob("*")) if self.directory.exists() else []:
            for seg_dir in sorted(env_dir.glob("*")):
                found.append((seg_dir.name, env_dir.name))
        return found


def _wipe(path: Path) -> bool:
    """Zero a key file in place, sync, unlink."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise KeyStoreError(f"{path}: {exc.strerror}") from exc
    try:
        size = os.fstat(fd).st_size
        os.write(fd, b"\0" * size)
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    return True
