"""The object store: sealed objects as files, ``<directory>/<environment>/<segment>/<object id>.sealed``.

It holds ciphertext only, so a copy of it (another host, a backup, a stolen disk) is
useless without the key service. Writes are atomic (temporary file, fsync, rename).
The path follows the labels the caller names; what the file says about itself is
checked by the AEAD when opened, never trusted.
"""

from __future__ import annotations

import os
from pathlib import Path

from trustfabric.data.envelope import SealedObject, decode, encode
from trustfabric.data.errors import DataError, KeyStoreError, OpenRefused
from trustfabric.data.labels import ENVIRONMENTS, Labels, check_object_id

SUFFIX = ".sealed"


class ObjectStore:
    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def path_of(self, object_id: str, segment: str, environment: str) -> Path:
        Labels("public", environment, segment)
        return self.directory / environment / segment / (check_object_id(object_id) + SUFFIX)

    def put(self, sealed: SealedObject) -> Path:
        path = self.path_of(sealed.object_id, sealed.segment, sealed.environment)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, encode(sealed))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            raise KeyStoreError(f"{path}: {exc.strerror}") from exc
        return path

    def read_bytes(self, object_id: str, segment: str, environment: str) -> bytes:
        path = self.path_of(object_id, segment, environment)
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise OpenRefused(f"no object {environment}/{segment}/{object_id}", reason="data.not_found") from None
        except OSError as exc:
            raise KeyStoreError(f"{path}: {exc.strerror}") from exc

    def get(self, object_id: str, segment: str, environment: str) -> SealedObject:
        return decode(self.read_bytes(object_id, segment, environment))

    def list(self, environment: str | None = None, segment: str | None = None) -> list[SealedObject]:
        """Every readable sealed object's header (ciphertext included, never plaintext)."""
        found: list[SealedObject] = []
        for env in ENVIRONMENTS if environment is None else (environment,):
            base = self.directory / env
            segs = [base / segment] if segment else sorted(p for p in base.glob("*") if p.is_dir())
            for seg in segs:
                for path in sorted(seg.glob("*" + SUFFIX)):
                    try:
                        found.append(decode(path.read_bytes()))
                    except (OSError, DataError):  # a listing skips what is not a sealed object
                        continue
        return found
