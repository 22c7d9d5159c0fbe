"""The promotion gateway: a release moves dev -> test -> prod only with provenance, tests and two approvals.

Theory of operation
-------------------
A *release* is an artefact digest (SHA-256). It is **submitted** with its build
provenance: an in-toto Statement v1 (``_type`` ``https://in-toto.io/Statement/v1``) whose
predicate is SLSA provenance v1, in a DSSE envelope (payload type
``application/vnd.in-toto+json``; ``securesystemslib``'s DSSE, the ``in-toto`` package's
payload type) signed by the *build identity*: a workload certificate of one of our trust
domains whose SPIFFE ID is in the ``build`` segment (``spiffe://<td>/build/<builder>``).
:func:`verify_provenance` checks, each with its reason: the envelope parses
(``release.provenance_malformed``), the certificate chains to its trust domain's CA and
is valid now (``cert.*``), it is a build identity (``release.provenance_not_build``), the
DSSE signature verifies with its key (``release.provenance_bad_signature``), and a subject's
``sha256`` is the artefact's digest (``release.digest_mismatch``: a tampered artefact).
No provenance at all is ``release.no_provenance``.

It is then **approved** per target environment by people of the identity plane, each with
a TOTP code verified with the request (the operator action ``release.approve`` is a step-up
action): never the author (``release.author_approval``), never the same person twice
(``release.duplicate_approval``). It is **promoted** to an environment only when every
condition holds: the previous environment already has it (``release.out_of_order``: dev,
then test, then prod), two approvals of different people for that environment
(``release.approvals_missing``), the release's policy tests pass
(``release.policy_tests_failed``), and Cedar allows the promoting person
(``operator.release.promote``). The promotion adds the digest to the trust domain's
promoted releases (:class:`~trustfabric.identity.attestation.Releases`), so from then on,
and only then, workloads of that code attest there. Every step is an audit record
(``release`` events, allow or deny with the reason, beside the operator authority's own).

``ca promote`` (the operator's direct path) stays for dev only: :func:`check_direct_promotion`
refuses test and prod (``release.gateway_required``).

Candidates live in the identity store's ``meta`` table (``release:<digest>``), so the
same checks hold offline and inside a control plane.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from in_toto.models.metadata import ENVELOPE_PAYLOAD_TYPE
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import Error as SslibError
from securesystemslib.signer import CryptoSigner, SSlibKey

from trustfabric.audit.events import Emitter, Kind
from trustfabric.identity.attestation import Releases, validate_digest
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.certs import load_certificate, peer_spiffe_id, verify_chain
from trustfabric.identity.errors import IdentityError
from trustfabric.identity.operators import Operator
from trustfabric.identity.store import IdentityStore, ReleaseRow

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://trustfabric.dev/build/v1"
BUILD_SEGMENT = "build"
ORDER = ("dev", "test", "prod")
REQUIRED_APPROVALS = 2
MAX_ENVELOPE_BYTES = 256 * 1024
_KEY = "release:"
_INDEX = "release_candidates"


class ReleaseRefused(IdentityError):
    """A release step refused (``release.*``)."""

    reason = "release.refused"


def release_target(digest: str, environment: str = "") -> str:
    """The operator target of a release step: ``<digest>`` (submit) or ``<digest>@<environment>``."""
    return f"{digest}@{environment}" if environment else digest


@dataclass(frozen=True)
class Provenance:
    builder: str  # the build identity's SPIFFE ID
    subjects: tuple[tuple[str, str], ...]  # (name, sha256)
    statement: dict


@dataclass(frozen=True)
class PolicyTestOutcome:
    passed: int
    failed: int
    summary: str = ""


@dataclass
class Candidate:
    digest: str
    name: str
    author: str
    submitted_at: float
    builder: str
    envelope: dict
    approvals: dict[str, list[dict]] = field(default_factory=dict)  # env -> [{"by", "at"}]
    promoted: dict[str, float] = field(default_factory=dict)  # env -> at

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def approvers(self, environment: str) -> list[str]:
        return [a["by"] for a in self.approvals.get(environment, [])]


# --------------------------------------------------------------------------- provenance (pure)


def make_provenance(digest: str, name: str, build_key: Any, build_cert: x509.Certificate,
                    parameters: Mapping[str, Any] | None = None) -> dict:
    """A DSSE envelope (dict form) of an in-toto Statement with SLSA provenance, signed by the build key."""
    builder = str(peer_spiffe_id(build_cert))
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": validate_digest(digest)}}],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {"buildType": BUILD_TYPE, "externalParameters": dict(parameters or {})},
            "runDetails": {"builder": {"id": builder}},
        },
    }
    envelope = Envelope(json.dumps(statement, sort_keys=True).encode(), ENVELOPE_PAYLOAD_TYPE, {})
    envelope.sign(CryptoSigner(build_key, SSlibKey.from_crypto(build_cert.public_key())))
    return envelope.to_dict()


def _malformed(detail: str) -> ReleaseRefused:
    return ReleaseRefused(detail, reason="release.provenance_malformed")


def verify_provenance(envelope: object, digest: str, build_cert_pem: bytes | None,
                      cas: Mapping[str, CertificateAuthority], now: float) -> Provenance:
    """The verified provenance of ``digest``, or a typed refusal (see the module's reasons)."""
    digest = validate_digest(digest)
    if envelope is None or envelope == {}:
        raise ReleaseRefused("no provenance statement for this artefact", reason="release.no_provenance")
    if not isinstance(envelope, dict) or len(json.dumps(envelope, default=str)) > MAX_ENVELOPE_BYTES:
        raise _malformed("provenance must be one DSSE envelope (JSON object)")
    try:
        parsed = Envelope.from_dict(dict(envelope))
    except (KeyError, TypeError, ValueError, binascii.Error, SslibError) as exc:
        raise _malformed(f"not a DSSE envelope: {exc!r}"[:200]) from exc
    if parsed.payload_type != ENVELOPE_PAYLOAD_TYPE:
        raise _malformed(f"payload type {parsed.payload_type!r} is not {ENVELOPE_PAYLOAD_TYPE}")
    if not build_cert_pem:
        raise ReleaseRefused("the build identity's certificate is needed to check the signature",
                             reason="release.provenance_untrusted_signer")
    cert = load_certificate(build_cert_pem)
    sid = peer_spiffe_id(cert)
    ca = cas.get(sid.trust_domain)
    if ca is None:
        raise ReleaseRefused(f"{sid} is of no trust domain of ours", reason="release.provenance_untrusted_signer")
    verify_chain(cert, ca.bundle_pem(now), now, sid.trust_domain)
    if sid.segment != BUILD_SEGMENT:
        raise ReleaseRefused(f"provenance signed by {sid}, not a build identity (segment {BUILD_SEGMENT})",
                             reason="release.provenance_not_build")
    try:
        parsed.verify([SSlibKey.from_crypto(cert.public_key())], 1)
    except (SslibError, ValueError) as exc:
        raise ReleaseRefused(f"DSSE signature does not verify with {sid}'s key",
                             reason="release.provenance_bad_signature") from exc
    try:
        statement = json.loads(parsed.payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _malformed("statement is not JSON") from exc
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE \
            or statement.get("predicateType") != SLSA_PROVENANCE or not isinstance(statement.get("subject"), list):
        raise _malformed("not an in-toto Statement v1 with SLSA provenance")
    subjects = tuple((str(s.get("name", "")), str((s.get("digest") or {}).get("sha256", "")).lower())
                     for s in statement["subject"] if isinstance(s, dict) and isinstance(s.get("digest"), dict))
    if digest not in {d for _, d in subjects}:
        raise ReleaseRefused(f"no subject of the provenance has digest {digest[:16]}... (tampered artefact?)",
                             reason="release.digest_mismatch")
    return Provenance(str(sid), subjects, statement)


def check_direct_promotion(trust_domain: str) -> None:
    """``ca promote`` reaches dev only; test and prod go through the gateway (``release promote``)."""
    if trust_domain.split(".", 1)[0] != "dev":
        raise ReleaseRefused(f"{trust_domain}: releases reach test and prod only through the promotion gateway "
                             "(trustfabric release submit | approve | promote)", reason="release.gateway_required")


# --------------------------------------------------------------------------- the gateway


class PromotionGateway:
    """The rules of each step. The person comes authorized already: the operator authority (Cedar on
    ``operator.release.<step>``, a fresh TOTP for approve and promote) decided on the same action and
    :func:`release_target` - in the running control plane or, with no floor, in the command."""

    def __init__(self, store: IdentityStore, cas: Mapping[str, CertificateAuthority], emitter: Emitter, firm: str,
                 policy_tests: Callable[[], PolicyTestOutcome]) -> None:
        self._store = store
        self._releases = Releases(store)
        self._cas = cas
        self._emitter = emitter
        self.firm = firm
        self._policy_tests = policy_tests

    def _record(self, action: str, principal: str, digest: str, environment: str, decision: str, reason: str = "",
                detail: dict | None = None) -> None:
        self._emitter.emit(Kind.RELEASE, principal=principal, action=action, resource=digest,
                           trust_domain=f"{environment}.{self.firm}" if environment else "", decision=decision,
                           reason=reason, detail=detail or {})

    def get(self, digest: str) -> Candidate | None:
        raw = self._store.get_meta(_KEY + validate_digest(digest))
        return Candidate(**raw) if isinstance(raw, dict) else None

    def _put(self, candidate: Candidate) -> None:
        self._store.set_meta(_KEY + candidate.digest, candidate.to_dict())
        index = list(self._store.get_meta(_INDEX, []) or [])
        if candidate.digest not in index:
            index.append(candidate.digest)
            self._store.set_meta(_INDEX, index)

    def list(self) -> list[Candidate]:
        return [c for c in (self.get(d) for d in self._store.get_meta(_INDEX, []) or []) if c is not None]

    def _guard(self, action: str, operator: Operator, digest: str, environment: str,
               step: Callable[[], Any]) -> Any:
        try:
            return step()
        except IdentityError as exc:
            who = operator.principal
            self._record(action, who, str(digest)[:64], environment, "deny", exc.reason,
                         {"message": exc.detail[:200]})
            raise

    def submit(self, operator: Operator, digest: str, envelope: object, build_cert_pem: bytes | None,
               name: str, now: float) -> Candidate:
        def step() -> Candidate:
            d = validate_digest(digest)
            provenance = verify_provenance(envelope, d, build_cert_pem, self._cas, now)
            existing = self.get(d)
            if existing is not None:
                raise ReleaseRefused(f"{d[:16]}... was submitted already by {existing.author}",
                                     reason="release.duplicate")
            candidate = Candidate(d, name, operator.name, now, provenance.builder, dict(envelope))  # type: ignore[arg-type]
            self._put(candidate)
            self._record("release.submit", operator.principal, d, "", "allow",
                         detail={"name": name, "builder": provenance.builder})
            return candidate
        return self._guard("release.submit", operator, digest, "", step)

    def _candidate(self, digest: str, environment: str) -> Candidate:
        if environment not in ORDER:
            raise ReleaseRefused(f"environment {environment!r} not one of {', '.join(ORDER)}",
                                 reason="release.bad_environment")
        candidate = self.get(digest)
        if candidate is None:
            raise ReleaseRefused(f"{str(digest)[:16]}... was never submitted (no provenance)",
                                 reason="release.no_provenance")
        return candidate

    def approve(self, operator: Operator, digest: str, environment: str, now: float) -> Candidate:
        def step() -> Candidate:
            candidate = self._candidate(digest, environment)
            if operator.name == candidate.author:
                raise ReleaseRefused(f"{operator.name} wrote this release and cannot approve it",
                                     reason="release.author_approval")
            if operator.name in candidate.approvers(environment):
                raise ReleaseRefused(f"{operator.name} approved this release for {environment} already",
                                     reason="release.duplicate_approval")
            candidate.approvals.setdefault(environment, []).append({"by": operator.name, "at": now})
            self._put(candidate)
            self._record("release.approve", operator.principal, candidate.digest, environment, "allow",
                         detail={"approvals": candidate.approvers(environment)})
            return candidate
        return self._guard("release.approve", operator, digest, environment, step)

    def promote(self, operator: Operator, digest: str, environment: str, now: float) -> ReleaseRow:
        def step() -> ReleaseRow:
            candidate = self._candidate(digest, environment)
            previous = ORDER[ORDER.index(environment) - 1] if ORDER.index(environment) else None
            if previous is not None and not self._releases.is_promoted(f"{previous}.{self.firm}", candidate.digest):
                raise ReleaseRefused(f"{environment} only after {previous}", reason="release.out_of_order")
            approvers = {a for a in candidate.approvers(environment) if a != candidate.author}
            if len(approvers) < REQUIRED_APPROVALS:
                raise ReleaseRefused(f"{environment} needs {REQUIRED_APPROVALS} approvals by people other than the "
                                     f"author; has {sorted(approvers)}", reason="release.approvals_missing")
            outcome = self._policy_tests()
            if outcome.failed or not outcome.passed:
                raise ReleaseRefused(f"policy tests: {outcome.passed} passed, {outcome.failed} failed "
                                     f"{outcome.summary}"[:300], reason="release.policy_tests_failed")
            row = self._releases.promote(f"{environment}.{self.firm}", candidate.digest, now, candidate.name)
            candidate.promoted[environment] = now
            self._put(candidate)
            self._record("release.promote", operator.principal, candidate.digest, environment, "allow",
                         detail={"approvers": sorted(approvers), "builder": candidate.builder,
                                 "policy_tests": outcome.passed, "policies": list(operator.policy_ids)})
            return row
        return self._guard("release.promote", operator, digest, environment, step)


def provenance_payload(envelope: Mapping[str, Any]) -> dict:
    """The statement inside an envelope, for display (not verified: :func:`verify_provenance` is)."""
    try:
        return json.loads(base64.b64decode(str(envelope.get("payload", ""))))
    except (ValueError, binascii.Error):
        return {}
