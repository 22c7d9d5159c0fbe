"""Private keys sealed under the operator's key-encryption key before they reach a database.

Beyond one machine the identity store is PostgreSQL, shared by every control-plane replica;
the CA keys and the token signing keys it holds are never written in plaintext. Each secret
is sealed with AES-256-GCM (``cryptography``'s AEAD) under a 256-bit KEK the operator
supplies, with a fresh 96-bit nonce and the secret's name as associated data, so a sealed
value moved to another row (another kid, another trust domain) does not open::

    sealed = b"\\x01" | nonce (12) | ciphertext + tag

The KEK comes from ``$TRUSTFABRIC_KEK`` (64 hex characters or unpadded/padded base64 of 32
bytes) or from the file named by ``$TRUSTFABRIC_KEK_FILE`` (the same text, or 32 raw bytes;
refused when group or others may read it). It never enters the database: a store keeps a
*check value* (a known text sealed under the KEK at the store's first use), and a store
opened with another KEK is refused at once (``db.kek_wrong``), before anything is read or
written. No KEK at all is ``db.kek_missing``; one that does not decode is ``db.kek_invalid``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustfabric.identity.errors import StoreError

KEK_ENV = "TRUSTFABRIC_KEK"
KEK_FILE_ENV = "TRUSTFABRIC_KEK_FILE"
KEK_BYTES = 32
_VERSION = b"\x01"
_NONCE = 12
CHECK_NAME = "kek-check"
_CHECK_TEXT = b"trustfabric key-encryption key check v1"


class KekRefused(StoreError):
    reason = "db.kek_wrong"


def _decode(text: bytes) -> bytes:
    stripped = text.strip()
    if len(stripped) == KEK_BYTES * 2:
        try:
            return bytes.fromhex(stripped.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            pass
    try:
        raw = base64.b64decode(stripped + b"=" * (-len(stripped) % 4), altchars=b"-_" if b"-" in stripped
                               or b"_" in stripped else None, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEK_BYTES:
        raise KekRefused(f"a key-encryption key is {KEK_BYTES} bytes (64 hex characters or base64)",
                         reason="db.kek_invalid")
    return raw


class Sealer:
    """Seals and opens named secrets under one KEK (AES-256-GCM, the name as associated data)."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != KEK_BYTES:
            raise KekRefused(f"a key-encryption key is {KEK_BYTES} bytes, not {len(kek)}", reason="db.kek_invalid")
        self._aead = AESGCM(kek)
        self.kek_id = hashlib.sha256(b"trustfabric.kek-id:" + kek).hexdigest()[:16]  # names it in messages only

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Sealer":
        """The KEK from ``$TRUSTFABRIC_KEK`` or the file ``$TRUSTFABRIC_KEK_FILE``; refused when neither is set."""
        env = os.environ if environ is None else environ
        if env.get(KEK_ENV):
            return cls(_decode(env[KEK_ENV].encode()))
        path = env.get(KEK_FILE_ENV)
        if not path:
            raise KekRefused(f"the identity store on PostgreSQL needs a key-encryption key: set ${KEK_ENV} "
                             f"or ${KEK_FILE_ENV}", reason="db.kek_missing")
        file = Path(path)
        try:
            mode = file.stat().st_mode
            data = file.read_bytes()
        except OSError as exc:
            raise KekRefused(f"cannot read the key-encryption key file {file}: {exc.strerror}",
                             reason="db.kek_missing") from None
        if stat.S_IMODE(mode) & 0o077:
            raise KekRefused(f"{file} is readable by others; chmod 600 it", reason="db.kek_exposed")
        return cls(data if len(data) == KEK_BYTES else _decode(data))

    def seal(self, name: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, name.encode())

    def open(self, name: str, sealed: bytes) -> bytes:
        """The plaintext of ``sealed`` under ``name``; ``db.kek_wrong`` when this KEK (or name) does not open it."""
        blob = bytes(sealed)
        if len(blob) < 1 + _NONCE + 16 or blob[:1] != _VERSION:
            raise KekRefused(f"{name}: not a sealed value", reason="db.sealed_malformed")
        try:
            return self._aead.decrypt(blob[1:1 + _NONCE], blob[1 + _NONCE:], name.encode())
        except InvalidTag:
            raise KekRefused(f"{name}: the key-encryption key (id {self.kek_id}) does not open it; "
                             "start with the KEK this database was sealed under") from None

    def check_value(self) -> bytes:
        """What a store keeps to recognise its KEK (a known text sealed under it)."""
        return self.seal(CHECK_NAME, _CHECK_TEXT)

    def verify_check(self, sealed: bytes) -> None:
        """Refuse (``db.kek_wrong``) unless ``sealed`` is this KEK's check value."""
        if self.open(CHECK_NAME, sealed) != _CHECK_TEXT:
            raise KekRefused("the key-encryption key check value is not ours")
