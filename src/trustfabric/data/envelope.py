"""Envelope encryption of one object: AES-256-GCM under its own data key, the data key wrapped by a KEK.

Pure: bytes in, bytes out, randomness passed in. :func:`seal` draws a fresh 256-bit data
key and a 96-bit nonce, encrypts the plaintext with AES-256-GCM
(``cryptography``'s ``AESGCM``) whose associated data is the object id and its labels
(:func:`~trustfabric.data.labels.associated_data`), and wraps the data key with the
KEK of the labels' (segment, environment) by AES key wrap (RFC 3394,
``cryptography.hazmat.primitives.keywrap``). :func:`open_sealed` reverses it for the id
and labels the caller *expects*: a ciphertext copied to another id, or whose labels were
edited, fails (``data.binding_mismatch``); a data key that does not unwrap under the KEK
fails (``data.unwrap_failed``). :func:`rewrap` moves a data key to a new KEK without
touching the ciphertext (key rotation). No primitive is written here by hand.

The stored form is a MessagePack map (:func:`encode` / :func:`decode`), bounded in size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from trustfabric.data.errors import LabelError, OpenRefused, SealedFormatError
from trustfabric.data.labels import Labels, associated_data, check_object_id

FORMAT_VERSION = 1
DATA_KEY_BYTES = 32
NONCE_BYTES = 12
MAX_SEALED_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class Kek:
    """A key-encryption key: its scope (segment, environment), version and 256-bit key."""

    segment: str
    environment: str
    version: int
    key: bytes

    @property
    def kek_id(self) -> str:
        return f"{self.environment}/{self.segment}/v{self.version}"


class SealedObject(msgspec.Struct, frozen=True, kw_only=True):
    """One sealed object as stored: header in the clear, ciphertext and wrapped key opaque."""

    v: int
    object_id: str
    classification: str
    environment: str
    segment: str
    kek_version: int
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes

    @property
    def labels(self) -> Labels:
        return Labels(self.classification, self.environment, self.segment)


_DECODER = msgspec.msgpack.Decoder(SealedObject)
_ENCODER = msgspec.msgpack.Encoder()


def seal(object_id: str, labels: Labels, plaintext: bytes, kek: Kek,
         random: Callable[[int], bytes] = os.urandom) -> SealedObject:
    """Encrypt ``plaintext`` as object ``object_id`` of dataset ``labels`` under a fresh data key."""
    check_object_id(object_id)
    if (kek.segment, kek.environment) != labels.kek_scope:
        raise LabelError(f"KEK {kek.kek_id} is not the KEK of {labels.environment}/{labels.segment}",
                         reason="data.wrong_kek")
    data_key = random(DATA_KEY_BYTES)
    nonce = random(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, bytes(plaintext), associated_data(object_id, labels))
    return SealedObject(v=FORMAT_VERSION, object_id=object_id, classification=labels.classification,
                        environment=labels.environment, segment=labels.segment, kek_version=kek.version,
                        wrapped_key=aes_key_wrap(kek.key, data_key), nonce=nonce, ciphertext=ciphertext)


def unwrap_data_key(sealed: SealedObject, kek: Kek) -> bytes:
    """The object's data key, unwrapped by ``kek`` (``data.unwrap_failed`` when it is not that KEK's)."""
    if (kek.segment, kek.environment, kek.version) != (sealed.segment, sealed.environment, sealed.kek_version):
        raise OpenRefused(f"{sealed.object_id} is wrapped by {sealed.environment}/{sealed.segment}/"
                          f"v{sealed.kek_version}, not {kek.kek_id}", reason="data.unwrap_failed")
    try:
        return aes_key_unwrap(kek.key, sealed.wrapped_key)
    except (InvalidUnwrap, ValueError) as exc:
        raise OpenRefused(f"{sealed.object_id}: data key does not unwrap under {kek.kek_id}",
                          reason="data.unwrap_failed") from exc


def open_with_key(sealed: SealedObject, object_id: str, labels: Labels, data_key: bytes) -> bytes:
    """Decrypt for the id and labels the caller expects; anything moved or relabelled is refused."""
    try:
        return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, associated_data(object_id, labels))
    except (InvalidTag, ValueError) as exc:
        raise OpenRefused(f"{object_id}: ciphertext is not bound to this id and these labels "
                          "(moved, relabelled or altered)", reason="data.binding_mismatch") from exc


def open_sealed(sealed: SealedObject, object_id: str, labels: Labels, kek: Kek) -> bytes:
    return open_with_key(sealed, object_id, labels, unwrap_data_key(sealed, kek))


def rewrap(sealed: SealedObject, old: Kek, new: Kek) -> SealedObject:
    """The same ciphertext with its data key wrapped by ``new`` (rotation: no re-encryption)."""
    if (new.segment, new.environment) != (sealed.segment, sealed.environment):
        raise LabelError(f"KEK {new.kek_id} is not of {sealed.environment}/{sealed.segment}", reason="data.wrong_kek")
    data_key = unwrap_data_key(sealed, old)
    return msgspec.structs.replace(sealed, kek_version=new.version, wrapped_key=aes_key_wrap(new.key, data_key))


def encode(sealed: SealedObject) -> bytes:
    return _ENCODER.encode(sealed)


def decode(data: bytes) -> SealedObject:
    """A sealed object from its stored bytes; anything else is ``data.malformed``."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) > MAX_SEALED_BYTES:
        raise SealedFormatError("not a sealed object (type or size)")
    try:
        sealed = _DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SealedFormatError(f"not a sealed object: {exc}") from exc
    if sealed.v != FORMAT_VERSION or len(sealed.nonce) != NONCE_BYTES or len(sealed.wrapped_key) != DATA_KEY_BYTES + 8:
        raise SealedFormatError("unknown format version or field sizes")
    try:
        _ = sealed.labels  # the header names valid labels
        check_object_id(sealed.object_id)
    except LabelError as exc:
        raise SealedFormatError(f"header: {exc.detail}") from exc
    return sealed
