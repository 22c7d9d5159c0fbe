"""Host posture: signed, fresh reports of what a host is, checked against what the floor requires of it.

A host's posture agent (:mod:`trustfabric.signals.host_agent`) inspects its host
and signs a :class:`PostureReport` of *facts* with its Ed25519 key: OS and version,
kernel, which mounts sit on dm-crypt, which of the security agents it was told to
look for are running, the TCP ports listening, whether the clock is synchronised.
The report travels as a :class:`SignedPostureReport`. The verifier (the CA's
attestation, the signal hub) holds the requirements, a :class:`PostureMinimum` per
host, and :func:`evaluate_posture` checks, in this order: the signing key is
registered for that host, the signature, freshness (not older than ``max_age_s``,
not from the future beyond the skew bound), then every requirement, each failing
one a reason code:

==============================  ==============================================================
``posture.os``                  not the required OS, or a distribution/version below its minimum
``posture.kernel``              kernel release below ``min_kernel`` (or unreadable)
``posture.disk_encryption``     a required data mount (``data_mounts``) is not on dm-crypt
``posture.security_agent``      none of ``security_agents`` runs (when any is required)
``posture.listening_ports``     a TCP port listens outside the declared ``listen_ports``
``posture.time_sync``           the clock is not synchronised (when required)
==============================  ==============================================================

Anything missing or unverifiable fails: a stale or unsigned report is a failing
posture, never a passing one, and a fact the agent could not read has its failing
value. The reasons reach the policy context (``posture_ok`` false, the reasons in
``posture_reasons``) and ``guard.posture`` denies.

Requirements come from the floor manifest's ``[posture]`` table (defaults for every
host, ``[posture.hosts.<host>]`` overrides; :func:`load_requirements`); without one
the trust domain's built-in minimum applies, which demands disk encryption, a
security agent and a synchronised clock.

Used by workload attestation (identity) and as policy context (policy).
"""

from __future__ import annotations

import base64
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trustfabric.signals.errors import PostureError
from trustfabric.nesting import json_nesting_exceeds
from trustfabric.policy.paths import FLOOR_MANIFEST

MAX_CLOCK_SKEW_S = 30.0
FLOOR_PORTS = (20000, 65535)  # "floor" in listen_ports: the launcher's service ports and the ephemeral range
DEFAULT_SECURITY_AGENTS = ("falcon-sensor", "wdavdaemon", "SentinelAgent", "elastic-endpoint", "cbagentd")


class PostureReport(msgspec.Struct, frozen=True, kw_only=True):
    """What the agent saw (facts, not verdicts); a field it could not read keeps its failing default."""

    host: str
    issued_at: float  # Unix seconds, by the host's clock
    os: str = ""  # kernel ostype: "Linux"
    os_id: str = ""  # /etc/os-release ID: "debian"
    os_version: str = ""  # /etc/os-release VERSION_ID: "12"
    kernel: str = ""  # kernel release: "6.1.0-18-amd64"
    encrypted_mounts: tuple[str, ...] = ()  # mount points on a dm-crypt device
    security_agents: tuple[str, ...] = ()  # those of the agent's watch list found running
    listening_ports: tuple[int, ...] = ()  # TCP (v4 and v6) ports in LISTEN
    time_synced: bool = False
    time_source: str = ""  # how time_synced was read: "adjtimex", "timesyncd"... ("" unknown)
    agent_version: str = ""


class SignedPostureReport(msgspec.Struct, frozen=True, kw_only=True):
    report: bytes  # canonical JSON of a PostureReport
    signature: bytes  # Ed25519 over ``report``
    key_id: str


class PostureMinimum(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one host must show. The defaults are a production host's."""

    os: str = "Linux"
    min_os_versions: dict[str, str] = {}  # os_id -> minimum VERSION_ID; when set, other distributions fail
    min_kernel: str = "5.10"
    require_disk_encryption: bool = True
    data_mounts: tuple[str, ...] = ("/",)  # each must be on dm-crypt when encryption is required
    security_agents: tuple[str, ...] = DEFAULT_SECURITY_AGENTS  # one must run; () requires none
    listen_ports: tuple[str, ...] = ("floor",)  # "floor", "<port>" or "<low>-<high>"; () checks nothing
    require_time_sync: bool = True
    max_age_s: float = 300.0

    def for_host(self, host: str) -> "PostureMinimum":
        return self

    def with_max_age(self, max_age_s: float) -> "PostureMinimum":
        return msgspec.structs.replace(self, max_age_s=float(max_age_s))


PROD_MINIMUM = PostureMinimum(max_age_s=300.0)
TEST_MINIMUM = PostureMinimum(max_age_s=600.0)
DEV_MINIMUM = PostureMinimum(security_agents=(), require_time_sync=False, max_age_s=3600.0)


class PostureRequirements(msgspec.Struct, frozen=True, kw_only=True):
    """Requirements by host: a default and per-host overrides (one posture window for all)."""

    default: PostureMinimum = PROD_MINIMUM
    hosts: dict[str, PostureMinimum] = {}

    @property
    def max_age_s(self) -> float:
        return self.default.max_age_s

    def for_host(self, host: str) -> PostureMinimum:
        return self.hosts.get(host, self.default)

    def with_max_age(self, max_age_s: float) -> "PostureRequirements":
        return PostureRequirements(default=self.default.with_max_age(max_age_s),
                                   hosts={h: m.with_max_age(max_age_s) for h, m in self.hosts.items()})


Requirements = PostureMinimum | PostureRequirements


class PostureVerdict(msgspec.Struct, frozen=True):
    ok: bool
    host: str
    reasons: tuple[str, ...]  # reason codes of every failure; empty when ok
    issued_at: float = 0.0


def requirements_from_dict(raw: dict[str, Any], base: PostureMinimum = PROD_MINIMUM) -> PostureRequirements:
    """``[posture]`` of a floor manifest: fields of :class:`PostureMinimum`, and ``hosts.<host>`` overrides."""
    if not isinstance(raw, dict):
        raise PostureError("[posture] must be a table", reason="posture.config")
    fields = {k: v for k, v in raw.items() if k != "hosts"}
    hosts = raw.get("hosts", {})
    try:
        default = msgspec.convert({**msgspec.structs.asdict(base), **fields}, PostureMinimum)
        if not isinstance(hosts, dict):
            raise msgspec.ValidationError("hosts must be a table of host tables")
        per_host = {}
        for host, override in hosts.items():
            if not isinstance(override, dict) or "max_age_s" in override:
                raise msgspec.ValidationError(f"hosts.{host}: a table without max_age_s (one window for all)")
            per_host[str(host)] = msgspec.convert({**msgspec.structs.asdict(default), **override}, PostureMinimum)
    except msgspec.ValidationError as exc:
        raise PostureError(f"posture requirements: {exc}", reason="posture.config") from exc
    for minimum in (default, *per_host.values()):
        for spec in minimum.listen_ports:
            port_ranges((spec,))  # a bad spec is refused when loading, not at the first report
        if kernel_version(minimum.min_kernel) is None:
            raise PostureError(f"posture requirements: min_kernel {minimum.min_kernel!r}", reason="posture.config")
    return PostureRequirements(default=default, hosts=per_host)


BUILTIN_MINIMUMS = {"prod": PROD_MINIMUM, "test": TEST_MINIMUM, "dev": DEV_MINIMUM}
_declared: dict[Path, tuple[float, str, PostureRequirements | None]] = {}


def requirements_for_domain(trust_domain: str, manifest: Path | str | None = None) -> Requirements:
    """What hosts of ``trust_domain`` must meet.

    The ``[posture]`` table of the floor manifest (``manifest``, default the installation's
    ``policies/floor.toml``) when the manifest's environment is the trust domain's, on top of
    the environment's built-in minimum; otherwise that built-in minimum (prod's, the strictest,
    for an unknown environment). A manifest that cannot be read or declares bad requirements
    is a :class:`PostureError` (``posture.config``), never a weaker minimum.
    """
    env = trust_domain.split(".", 1)[0]
    builtin = BUILTIN_MINIMUMS.get(env, PROD_MINIMUM)
    path = Path(manifest) if manifest is not None else FLOOR_MANIFEST
    if manifest is None and not path.exists():
        return builtin
    try:
        mtime = path.stat().st_mtime
    except OSError as exc:
        raise PostureError(f"cannot read {path}: {exc}", reason="posture.config") from exc
    cached = _declared.get(path)
    if cached is None or cached[0] != mtime or cached[1] != env:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise PostureError(f"cannot read {path}: {exc}", reason="posture.config") from exc
        declared = None
        if "posture" in raw and raw.get("environment", "prod") == env:
            declared = requirements_from_dict(raw["posture"], builtin)
        cached = _declared[path] = (mtime, env, declared)
    return cached[2] if cached[2] is not None else builtin


_VERSION = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def kernel_version(release: str) -> tuple[int, int, int] | None:
    """``"6.1.0-18-amd64"`` -> ``(6, 1, 0)``; None when it does not start with a version."""
    match = _VERSION.match(release.strip()) if isinstance(release, str) else None
    if match is None:
        return None
    return tuple(int(g or 0) for g in match.groups())  # type: ignore[return-value]


def port_ranges(specs: tuple[str, ...]) -> list[tuple[int, int]]:
    """``("floor", "22", "8000-8099")`` -> inclusive ranges; a bad spec is ``posture.config``."""
    out = []
    for spec in specs:
        text = str(spec).strip()
        if text == "floor":
            out.append(FLOOR_PORTS)
            continue
        low, _, high = text.partition("-")
        try:
            lo, hi = int(low), int(high or low)
        except ValueError:
            lo, hi = -1, -1
        if not 0 < lo <= hi <= 65535:
            raise PostureError(f"listen port spec {text!r}", reason="posture.config")
        out.append((lo, hi))
    return out


def check_report(report: "PostureReport", minimum: PostureMinimum) -> list[str]:
    """The reason code of every requirement ``report`` fails (pure)."""
    reasons: list[str] = []
    os_ok = report.os == minimum.os
    if os_ok and minimum.min_os_versions:
        floor_version = minimum.min_os_versions.get(report.os_id)
        have, need = kernel_version(report.os_version), kernel_version(floor_version or "")
        os_ok = floor_version is not None and have is not None and need is not None and have >= need
    if not os_ok:
        reasons.append("posture.os")
    have_kernel, need_kernel = kernel_version(report.kernel), kernel_version(minimum.min_kernel)
    if have_kernel is None or need_kernel is None or have_kernel < need_kernel:
        reasons.append("posture.kernel")
    if minimum.require_disk_encryption and not set(minimum.data_mounts) <= set(report.encrypted_mounts):
        reasons.append("posture.disk_encryption")
    if minimum.security_agents and not set(minimum.security_agents) & set(report.security_agents):
        reasons.append("posture.security_agent")
    if minimum.listen_ports:
        allowed = port_ranges(minimum.listen_ports)
        if any(not any(lo <= port <= hi for lo, hi in allowed) for port in report.listening_ports):
            reasons.append("posture.listening_ports")
    if minimum.require_time_sync and not report.time_synced:
        reasons.append("posture.time_sync")
    return reasons


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

    def assign(self, other: "HostKeyRegistry") -> None:
        """Hold exactly ``other``'s keys (the store's, re-read: a host enrolled or re-keyed meanwhile)."""
        self._keys = dict(other._keys)

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
    minimum: Requirements,
    now: float,
) -> PostureVerdict:
    """A verdict with every failing reason; never raises for bad input."""
    try:
        report = verify_report(signed, registry)
    except PostureError as exc:
        return PostureVerdict(ok=False, host="", reasons=(exc.reason,))
    required = minimum.for_host(report.host)
    reasons: list[str] = []
    age = now - report.issued_at
    if age > required.max_age_s:
        reasons.append("posture.stale")
    if age < -MAX_CLOCK_SKEW_S:
        reasons.append("posture.from_future")
    reasons.extend(check_report(report, required))
    return PostureVerdict(ok=not reasons, host=report.host, reasons=tuple(reasons), issued_at=report.issued_at)


def require_posture(
    signed: SignedPostureReport | None,
    registry: HostKeyRegistry,
    minimum: Requirements,
    now: float,
) -> PostureReport:
    """Like :func:`evaluate_posture` but raises :class:`PostureError` with the first reason."""
    verdict = evaluate_posture(signed, registry, minimum, now)
    if not verdict.ok:
        raise PostureError(", ".join(verdict.reasons), reason=verdict.reasons[0])
    return _dec.decode(signed.report)  # type: ignore[union-attr]
