"""The control plane's wire messages: extra frame types on the transport's framed codec.

Bootstrap (server-authenticated TLS, one exchange): :class:`JoinRequest` ->
:class:`JoinReply` (certificate chain, trust bundle, token issuer and JWKS) or an
``ErrorFrame`` with the refusal reason.

Control channel (mTLS, the caller is its certificate's SPIFFE ID):

* :class:`TokenRequest` -> :class:`TokenReply` - an access token bound to the
  caller's certificate for the named audience service;
* :class:`TableRequest` -> :class:`TableReply` - the decision table of a principal
  connecting to the caller's service, cut to the resources that service owns;
* :class:`RenewRequest` -> :class:`RenewReply` - a new certificate for a new CSR;
* :class:`Subscribe` -> a stream of :class:`PushInvalidation`,
  :class:`PushRevocation` and :class:`Command` frames (rid 0);
* :class:`Report` (service -> control, no reply): stats, security events for the
  response engine, and quarantine confirmations.

Operators (the bootstrap port, server-authenticated TLS, one exchange): a person
sends :class:`KillSwitchRequest` with their password and TOTP code; the control
plane logs them in (password + TOTP, then a fresh step-up check), hands the
command to pre-trade-risk as a :class:`Command` and relays its
:class:`CommandResult` as a :class:`KillSwitchReply`. A security officer releases a
quarantined principal the same way: :class:`ReleaseRequest` (password + TOTP) ->
:class:`ReleaseReply` (the control plane's release path, fresh step-up checked).

Any state-changing operator action (the same bootstrap port, one exchange):
:class:`OperatorRequest` (the person's :class:`~trustfabric.identity.operators.OperatorCredential`,
an action name of :data:`~trustfabric.identity.operators.ACTIONS`, its target and arguments)
-> :class:`OperatorReply`, ``ok`` only once the change is applied in the plane *and* every
enforcement point confirmed it (``applied``); the points that did not are ``missing``.
An enforcement point confirms a change by answering the :class:`PushBarrier` the control
plane sends after it with a :class:`PushAck` (the channel is ordered: the ack means every
push before the barrier was applied). :class:`PushJwks` carries a new token-key set.

Every reply carries the request's ``rid``; a refusal is ``TokenReply(ok=False,
reason=...)`` etc. so the caller never has to parse free text.
"""

from __future__ import annotations

import msgspec

from trustfabric.identity.operators import OperatorCredential
from trustfabric.policy.decision import DecisionTable, Invalidation
from trustfabric.transport.frames import Frame, FrameCodec

MAX_CONTROL_FRAME = 4 * 1024 * 1024


class JoinRequest(Frame, frozen=True, tag="join"):
    join_token: str
    spiffe_id: str
    csr_pem: bytes
    code_digest: str
    posture: bytes  # encoded SignedPostureReport (trustfabric.signals.posture.encode_signed)


class JoinReply(Frame, frozen=True, tag="joined"):
    cert_pem: bytes
    bundle_pem: bytes
    issuer: str
    jwks: bytes  # JSON
    control_id: str
    # the firm's other trust domains' CAs: their chains pass the TLS layer so that the identity step can
    # refuse them by name (cert.wrong_trust_domain, an alert naming the presented SPIFFE ID); never trusted
    sibling_bundle_pem: bytes = b""


class TokenRequest(Frame, frozen=True, tag="tokreq"):
    rid: int
    audience: str  # a service name of the topology


class TokenReply(Frame, frozen=True, tag="tok"):
    rid: int
    ok: bool
    token: str = ""
    audience_id: str = ""
    reason: str = ""
    retryable: bool = False  # the refusal is transient (the state of record away): ask again later


class TableRequest(Frame, frozen=True, tag="tabreq"):
    rid: int
    principal: str
    now: float


class TableReply(Frame, frozen=True, tag="tab"):
    rid: int
    ok: bool
    table: DecisionTable | None = None
    reason: str = ""
    retryable: bool = False  # the refusal is transient (the state of record away): ask again later


class RenewRequest(Frame, frozen=True, tag="renewreq"):
    rid: int
    csr_pem: bytes
    posture: bytes


class RenewReply(Frame, frozen=True, tag="renewed"):
    rid: int
    ok: bool
    cert_pem: bytes = b""
    bundle_pem: bytes = b""
    reason: str = ""
    retryable: bool = False  # the refusal is transient (the state of record away): ask again later


class Subscribe(Frame, frozen=True, tag="sub"):
    service: str


class RevocationSnapshot(msgspec.Struct, frozen=True):
    serials: tuple[int, ...] = ()
    spiffe_ids: tuple[str, ...] = ()


class Subscribed(Frame, frozen=True, tag="subok"):
    jwks: bytes
    revoked: RevocationSnapshot
    global_epoch: int = 0


class PushInvalidation(Frame, frozen=True, tag="inv"):
    invalidation: Invalidation


class PushRevocation(Frame, frozen=True, tag="rev"):
    kind: str  # "serial" | "spiffe_id" | "release_spiffe_id"
    value: str
    reason: str


class Command(Frame, frozen=True, tag="cmd"):
    name: str  # "bench" | "eod" | "stop"
    args: dict[str, str] = {}


class Report(Frame, frozen=True, tag="report"):
    service: str
    stats: dict[str, float] = {}
    links: dict[str, list[float]] = {}  # link -> [p50_us, p99_us, n]
    events: list[bytes] = []  # encoded AuditEventV1 (security-relevant only)
    quarantine_acks: list[str] = []


class KillSwitchRequest(Frame, frozen=True, tag="ksreq"):
    user: str
    password: str
    totp: str
    action: str  # "halt" | "reduce" | "resume"
    scope: str  # "firm" | "account" | "agent"
    target: str = ""


class KillSwitchReply(Frame, frozen=True, tag="ksrep"):
    ok: bool
    reason: str = ""
    state: str = ""
    pending: bool = False  # a resume waiting for its second person
    cancels: int = 0
    operator: str = ""


class CommandResult(Frame, frozen=True, tag="cmdres"):
    """A service's answer to a :class:`Command` that carried an ``id`` argument."""

    id: str
    ok: bool
    reason: str = ""
    result: dict[str, str] = {}


class ReleaseRequest(Frame, frozen=True, tag="relreq"):
    """A security officer's release of a quarantined principal (SPIFFE ID or ``user:<name>``)."""

    user: str
    password: str
    totp: str
    principal: str


class ReleaseReply(Frame, frozen=True, tag="relrep"):
    ok: bool
    reason: str = ""
    incident_id: str = ""
    officer: str = ""


class PushBarrier(Frame, frozen=True, tag="barrier"):
    """Control plane -> service: answer with a :class:`PushAck` of this id once every earlier push is applied."""

    id: int


class PushAck(Frame, frozen=True, tag="pushack"):
    """Service -> control plane: every push before barrier ``id`` is applied at ``service``."""

    service: str
    id: int


class PushJwks(Frame, frozen=True, tag="jwks"):
    """Control plane -> service: the token-signing keys to verify with from now on (JSON JWKS)."""

    jwks: bytes


class OperatorRequest(Frame, frozen=True, tag="opreq"):
    """A person's state-changing action (see :mod:`trustfabric.identity.operators`)."""

    credential: OperatorCredential
    action: str
    target: str = ""
    args: dict[str, str] = {}


class OperatorReply(Frame, frozen=True, tag="oprep"):
    ok: bool
    reason: str = ""
    operator: str = ""
    result: dict[str, str] = {}
    applied: list[str] = []  # the enforcement points that confirmed the change
    missing: list[str] = []  # those that did not, within the bound


class PostureSubmit(Frame, frozen=True, tag="posture"):
    """A host's runner -> the lease holder, over the bootstrap port: its agent's fresh signed posture report.

    Needs no client certificate: the report is signed by the host key an operator enrolled
    (``trustfabric host enrol``) and is good for the posture window only; anything else is refused.
    """

    report: bytes


class PostureReply(Frame, frozen=True, tag="posturerep"):
    ok: bool
    reason: str = ""


CONTROL_TYPES = (JoinRequest, JoinReply, TokenRequest, TokenReply, TableRequest, TableReply, RenewRequest,
                 RenewReply, Subscribe, Subscribed, PushInvalidation, PushRevocation, Command, Report,
                 KillSwitchRequest, KillSwitchReply, CommandResult, ReleaseRequest, ReleaseReply,
                 PushBarrier, PushAck, PushJwks, OperatorRequest, OperatorReply, PostureSubmit, PostureReply)

CONTROL_CODEC = FrameCodec(CONTROL_TYPES, max_frame=MAX_CONTROL_FRAME)
