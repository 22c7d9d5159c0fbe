"""Host posture: signed, fresh reports checked against a trust domain's minimum.

A host's posture agent signs a :class:`PostureReport` with its Ed25519 key; the
report travels as a :class:`SignedPostureReport`. :func:`evaluate_posture` checks,
in this order, that the signing key is registered for that host, the signature,
freshness (not older than ``minimum.max_age_s``, not from the future beyond the
skew bound), and the domain's minimum (patch age, disk encryption, EDR running,
secure boot). Anything missing or unverifiable fails: a stale or unsigned report
is a failing posture, never a passing one.

Used by workload attestation (identity) and as policy context (policy).
"""

from __future__ import annotations

import base64

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trustfabric.errors import SignalError
from trustfabric.nesting import json_nesting_exceeds

MAX_CLOCK_SKEW_S = 30.0


class PostureError(SignalError):
    reason = "posture.failing"


class PostureReport(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    issued_at: float  # Unix seconds, by the host's clock
    patch_age_days: int  # days since the last OS security patch
    disk_encrypted: bool
    edr_running: bool
    secure_boot: bool
    agent_version: str = ""


class SignedPostureReport(msgspec.Struct, frozen=True, kw_only=True):
    report: bytes  # canonical JSON of a PostureReport
    signature: bytes  # Ed25519 over ``report``
    key_id: str


class PostureMinimum(msgspec.Struct, frozen=True, kw_only=True):
    max_patch_age_days: int = 30
    require_disk_encryption: bool = True
    require_edr: bool = True
    require_secure_boot: bool = True
    max_age_s: float = 300.0


PROD_MINIMUM = PostureMinimum(max_patch_age_days=14, max_age_s=300.0)
TEST_MINIMUM = PostureMinimum(max_patch_age_days=30, max_age_s=600.0)
DEV_MINIMUM = PostureMinimum(max_patch_age_days=60, require_secure_boot=False, max_age_s=3600.0)


class PostureVerdict(msgspec.Struct, frozen=True):
    ok: bool
    host: str
    reasons: tuple[str, ...]  # reason codes of every failure; empty when ok
    issued_at: float = 0.0


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(PostureReport)
_signed_dec = msgspec.json.Decoder(SignedPostureReport)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(raw)
    return base64.urlsafe_b64encode(digest.finalize()[:12]).decode().rstrip("=")


def sign_report(report: PostureReport, key: Ed25519PrivateKey) -> SignedPostureReport:
    """What a host's posture agent does."""
    body = _enc.encode(report)
    return SignedPostureReport(report=body, signature=key.sign(body), key_id=key_id_of(key.public_key()))


def encode_signed(signed: SignedPostureReport) -> bytes:
    return _enc.encode(signed)


def decode_signed(data: bytes) -> SignedPostureReport:
    if json_nesting_exceeds(data):
        raise PostureError("malformed posture report: nested too deep", reason="posture.malformed")
    try:
        return _signed_dec.decode(data)
    except Exception as exc:  # noqa: BLE001 - msgspec's errors, or anything else: a refusal
        raise PostureError(f"malformed posture report: {exc}", reason="posture.malformed") from exc


class HostKeyRegistry:
    """Registered posture-agent keys: ``key_id -> (host, public key)``."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[str, Ed25519PublicKey]] = {}

    def register(self, host: str, public_key: Ed25519PublicKey) -> str:
        kid = key_id_of(public_key)
        self._keys[kid] = (host, public_key)
        return kid

    def get(self, key_id: str) -> tuple[str, Ed25519PublicKey] | None:
        return self._keys.get(key_id)

    def __len__(self) -> int:
        return len(self._keys)


def verify_report(signed: SignedPostureReport | None, registry: HostKeyRegistry) -> PostureReport:
    """Signature and key checks only; raises :class:`PostureError`."""
    if signed is None or not signed.signature:
        raise PostureError("no signed posture report", reason="posture.unsigned")
    entry = registry.get(signed.key_id)
    if entry is None:
        raise PostureError(f"posture key {signed.key_id!r} is not registered", reason="posture.unknown_key")
    host, public_key = entry
    try:
        public_key.verify(signed.signature, signed.report)
    except InvalidSignature as exc:
        raise PostureError("posture report signature does not verify", reason="posture.bad_signature") from exc
    try:
        if json_nesting_exceeds(signed.report):
            raise ValueError("nested too deep")
        report = _dec.decode(signed.report)
    except Exception as exc:  # noqa: BLE001 - msgspec's errors, or anything else: a refusal
        raise PostureError(f"malformed posture report: {exc}", reason="posture.malformed") from exc
    if report.host != host:
        raise PostureError(
            f"report for host {report.host!r} signed by the key of {host!r}", reason="posture.wrong_host"
        )
    return report


def evaluate_posture(
    signed: SignedPostureReport | None,
    registry: HostKeyRegistry,
    minimum: PostureMinimum,
    now: float,
) -> PostureVerdict:
    """A verdict with every failing reason; never raises for bad input."""
    try:
        report = verify_report(signed, registry)
    except PostureError as exc:
        return PostureVerdict(ok=False, host="", reasons=(exc.reason,))
    reasons: list[str] = []
    age = now - report.issued_at
    if age > minimum.max_age_s:
        reasons.append("posture.stale")
    if age < -MAX_CLOCK_SKEW_S:
        reasons.append("posture.from_future")
    if report.patch_age_days > minimum.max_patch_age_days or report.patch_age_days < 0:
        reasons.append("posture.patch_level")
    if minimum.require_disk_encryption and not report.disk_encrypted:
        reasons.append("posture.disk_encryption")
    if minimum.require_edr and not report.edr_running:
        reasons.append("posture.edr")
    if minimum.require_secure_boot and not report.secure_boot:
        reasons.append("posture.secure_boot")
    return PostureVerdict(ok=not reasons, host=report.host, reasons=tuple(reasons), issued_at=report.issued_at)


def require_posture(
    signed: SignedPostureReport | None,
    registry: HostKeyRegistry,
    minimum: PostureMinimum,
    now: float,
) -> PostureReport:
    """Like :func:`evaluate_posture` but raises :class:`PostureError` with the first reason."""
    verdict = evaluate_posture(signed, registry, minimum, now)
    if not verdict.ok:
        raise PostureError(", ".join(verdict.reasons), reason=verdict.reasons[0])
    return _dec.decode(signed.report)  # type: ignore[union-attr]
