"""Signed tree heads: an Ed25519 signature over (tree size, timestamp, Merkle root).

A tree head commits the log to its first ``tree_size`` records. Heads are exported as
JSON for an outside witness, who checks the signature with the public key alone and,
later, a consistency proof (:mod:`trustfabric.audit.merkle`) between two heads.

Signed message (fixed, unambiguous bytes)::

    b"trustfabric.tree_head.v1\\n" || u64be(tree_size) || u64be(timestamp_ns) || root_hash(32)

The key lives at ``$TRUSTFABRIC_HOME/audit/tree_head.key`` (PKCS#8 PEM, mode 0600); the
log id is the SHA-256 of the raw public key.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from pathlib import Path

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trustfabric.audit.errors import TreeHeadError

SIGNED_PREFIX = b"trustfabric.tree_head.v1\n"
KEY_FILE = "tree_head.key"
PUBLIC_KEY_FILE = "tree_head.pub"


class TreeHead(msgspec.Struct, frozen=True, kw_only=True):
    tree_size: int
    timestamp_ns: int
    root_hash: str  # hex
    log_id: str  # hex SHA-256 of the raw Ed25519 public key
    signature: str  # hex

    @property
    def root(self) -> bytes:
        return bytes.fromhex(self.root_hash)


def signed_bytes(tree_size: int, timestamp_ns: int, root: bytes) -> bytes:
    return SIGNED_PREFIX + struct.pack(">QQ", tree_size, timestamp_ns) + root


def public_key_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def log_id_of(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_key_raw(key)).hexdigest()


class TreeHeadSigner:
    """Signs tree heads with the log's Ed25519 key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.log_id = log_id_of(self.public_key)

    @classmethod
    def generate(cls) -> "TreeHeadSigner":
        return cls(Ed25519PrivateKey.generate())

    def sign(self, tree_size: int, timestamp_ns: int, root: bytes) -> TreeHead:
        signature = self._key.sign(signed_bytes(tree_size, timestamp_ns, root))
        return TreeHead(tree_size=tree_size, timestamp_ns=timestamp_ns, root_hash=root.hex(),
                        log_id=self.log_id, signature=signature.hex())


def verify_tree_head(head: TreeHead, public_key: Ed25519PublicKey) -> None:
    """Raise :class:`TreeHeadError` unless ``head`` is signed by ``public_key``."""
    try:
        root = bytes.fromhex(head.root_hash)
        signature = bytes.fromhex(head.signature)
    except ValueError:
        raise TreeHeadError(f"tree head {head.tree_size}: not hex", reason="audit.tree_head.malformed") from None
    if len(root) != 32 or head.tree_size < 0 or head.timestamp_ns < 0:
        raise TreeHeadError(f"tree head {head.tree_size}: malformed", reason="audit.tree_head.malformed")
    if head.log_id != log_id_of(public_key):
        raise TreeHeadError(f"tree head {head.tree_size}: another log's id", reason="audit.tree_head.log_id")
    try:
        public_key.verify(signature, signed_bytes(head.tree_size, head.timestamp_ns, root))
    except InvalidSignature:
        raise TreeHeadError(f"tree head {head.tree_size}: bad signature", reason="audit.tree_head.signature") from None


def load_or_create_signer(directory: Path) -> TreeHeadSigner:
    """The log's signing key under ``directory`` (created 0600 on first use)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / KEY_FILE
    if path.exists():
        return _load_signer(path)
    signer = TreeHeadSigner.generate()
    pem = signer._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    public = signer.public_key.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    # Written whole under a name of its own, then linked into place: a second opener at the same
    # moment (a collector thread and a command) either wins the link or loads the winner's key.
    tmp = directory / f".{KEY_FILE}.{os.getpid()}.{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _load_signer(path)
    finally:
        tmp.unlink(missing_ok=True)
    public_tmp = tmp.with_name(tmp.name + ".pub")
    public_tmp.write_bytes(public)
    os.replace(public_tmp, directory / PUBLIC_KEY_FILE)
    return signer


def _load_signer(path: Path) -> TreeHeadSigner:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise TreeHeadError(f"{path}: {exc}", reason="audit.tree_head.key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise TreeHeadError(f"{path}: not an Ed25519 key", reason="audit.tree_head.key")
    return TreeHeadSigner(key)


def load_public_key(directory: Path) -> Ed25519PublicKey:
    path = directory / PUBLIC_KEY_FILE
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TreeHeadError(f"{path}: {exc}", reason="audit.tree_head.key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise TreeHeadError(f"{path}: not an Ed25519 key", reason="audit.tree_head.key")
    return key


def import_tree_head(exported: dict) -> TreeHead:
    """A tree head back from its exported JSON (the signature is checked by the verifier)."""
    try:
        return msgspec.convert({k: exported[k] for k in ("tree_size", "timestamp_ns", "root_hash", "log_id",
                                                         "signature")}, TreeHead)
    except (KeyError, TypeError, msgspec.ValidationError) as exc:
        raise TreeHeadError(f"not an exported tree head: {exc}", reason="audit.tree_head.malformed") from None


def export_tree_head(head: TreeHead, public_key: Ed25519PublicKey) -> dict:
    """The JSON an outside witness needs: the head plus the public key (base64, raw)."""
    return {**msgspec.to_builtins(head), "public_key": base64.b64encode(public_key_raw(public_key)).decode(),
            "signed_message": "trustfabric.tree_head.v1\\n || u64be(tree_size) || u64be(timestamp_ns) || root"}
