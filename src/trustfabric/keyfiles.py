"""Private key material on disk: PKCS#8 PEM encoding and files that are 0600 from creation.

A bottom-layer helper shared by every part that keeps a key (the CAs, workload and
operator credentials, policy bundle signing keys, the data vault's key store): no
trustfabric import, so any layer may use it.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

__all__ = ["key_to_pem", "write_private_file"]


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a file that is 0600 from its creation."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def key_to_pem(key: PrivateKeyTypes) -> bytes:
    """PKCS#8 PEM, unencrypted (written only to 0600 files)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
