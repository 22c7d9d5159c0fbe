"""The enforcement point (PEP) of one service: rigorous session checks, a microsecond hot path.

Theory of operation
-------------------
*Session open / renewal* (:meth:`EnforcementPoint.open_session`,
:meth:`~EnforcementPoint.renew`) is where the expensive checks live:

1. the peer's identity comes from the TLS layer (its certificate's SPIFFE ID);
   a revoked certificate or a quarantined principal is refused at once;
2. the access token is verified by the identity provider's verifier for *this*
   service's audience and bound (``cnf.x5t#S256``) to the certificate just
   presented; then the PEP checks again itself: subject = peer, not expired,
   ``jti`` never seen before (replay);
3. the principal's :class:`~trustfabric.policy.decision.DecisionTable` is pulled
   from the table source (the policy engine) and compiled into the session.

If the engine cannot be reached (raises, times out, is dead or hung) a session
opens only from a cached table that is still valid (epoch current, before its
hard ``expires_at``); otherwise it is refused. Nothing else.

A table source in another process (the control plane) is *awaited*, never
blocked on: it offers ``async fetch_table`` with its own deadline, and the
transport calls :meth:`~EnforcementPoint.open_session_async`,
:meth:`~EnforcementPoint.renew_async` and, before a message of a session whose
table must be re-pulled (:meth:`~EnforcementPoint.needs_redecide`),
:meth:`~EnforcementPoint.refresh`; the event loop serves every other connection
meanwhile. The synchronous methods are the same checks for in-process sources.

*The hot path* (:meth:`EnforcementPoint.check`) does no policy evaluation and no
I/O: a dict lookup, two epoch comparisons, two deadline comparisons against one
monotonic clock read, the obligations (notional cap, symbol set, token bucket),
and one tuple written into a preallocated decision buffer. When an invalidation
has moved an epoch (or the table's TTL ran out) the next message re-pulls the
table before being decided - or is denied if the engine is unreachable.

*Push*: :meth:`on_invalidation` (subscribe it to the invalidation bus) bumps the
epochs; a quarantine invalidation, :meth:`quarantine` or :meth:`revoke_certificate`
close every affected session at once and refuse the next handshake;
:meth:`revoke_token_key` closes the sessions a revoked signing key's tokens admitted
(each session keeps the ``kid`` of its token).

*Audit*: :meth:`flush_decisions` drains the decision buffer into the enforcement
point's sink and flushes the sink; the transport calls it before any effect leaves
(``on_before_flush``). With a sink that takes compact decision records
(``append_decisions``: the audit :class:`~trustfabric.audit.spool.Spool`, best in its
``durability="write"`` mode) each decision is spooled as one small MessagePack array
and the batch leaves with ONE ``write()`` - no ``AuditEventV1`` is built on the hop; the
collector expands the records into the same ``Kind.DECISION`` events. The PEP's other
events then go through the spool's own ``emit`` so that one sequence covers both.
With any other sink (a :class:`~trustfabric.audit.events.MemorySink` in tests) each
decision is emitted as a full event. While
draining it re-checks every recorded allow against the epochs and deadlines
captured with it; an allow that was not covered increments ``fail_open`` - a
tripwire that must stay 0.
"""

from __future__ import annotations

import collections

import threading
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable

import msgspec

from trustfabric.audit.events import Emitter, EventSink, Kind, MemorySink
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.enforcement import errors as E
from trustfabric.enforcement.errors import SessionClosed, SessionRefused
from trustfabric.enforcement.obligations import compile_entries
from trustfabric.enforcement.ports import PeerLike, TableSource, TokenCheck
from trustfabric.enforcement.session import PrincipalState, Session
from trustfabric.errors import TrustFabricError
from trustfabric.identity.certs import x5t_s256
from trustfabric.identity.tokens import is_desk_device
from trustfabric.policy.decision import QUARANTINE, RELEASE, DecisionTable, Invalidation

QUARANTINE_PREFIX = "quarantine"  # a close reason of a quarantine starts so
UNREACHABLE = "policy.engine_unreachable"  # a table source's own "cannot reach the engine"

DEFAULT_BUFFER = 8192
PERSON_PREFIX = "user:"
TOKEN_CNF_MISMATCH = "token.cnf_mismatch"  # a person's token presented from another device than its own
TOKEN_KEY_REVOKED = "token.key_revoked"  # the signing key of the session's token was revoked


@dataclass(frozen=True, slots=True)
class _Presented:
    """A :class:`PeerLike` re-presented: a session's certificate, under the principal being admitted."""

    spiffe_id: str
    cert_der: bytes
    fingerprint_sha256: str
    serial: int | None


def _deny_reason(exc: SessionRefused) -> str:
    """A failed re-pull's refusal as the hot path's deny reason."""
    return E.ENGINE_UNREACHABLE if exc.reason == E.SESSION_ENGINE_UNREACHABLE else exc.reason


def _claim(claims: Any, name: str) -> Any:
    """A claim from a claims object or mapping (``None`` when absent)."""
    if isinstance(claims, dict):
        return claims.get(name)
    return getattr(claims, name, None)


def _bound_thumbprint(claims: Any) -> Any:
    """The ``cnf.x5t#S256`` a token is bound to (``Claims.cnf_x5t_s256``, or the raw ``cnf`` mapping)."""
    if isinstance(claims, dict):
        cnf = claims.get("cnf")
        return cnf.get("x5t#S256") if isinstance(cnf, dict) else None
    return getattr(claims, "cnf_x5t_s256", None)


class DecisionRecord(msgspec.Struct, gc=False):
    """One decision of :meth:`EnforcementPoint.check`, held in the buffer until the audit sink takes it.

    Everything the audit record needs is captured when the check runs (``policy_ids`` too:
    a re-decision may replace the session's table before the buffer drains). The epochs and
    ``deadline`` are the fail-open tripwire's inputs: an allow recorded from a table older
    than the current epochs, or past its deadline (monotonic), counts in ``fail_open``.
    """

    at: float  # monotonic
    session: Session | None
    action: str
    resource: str
    allowed: bool
    reason: str
    notional: float
    symbol: str | None
    policy_ids: tuple[str, ...] = ()
    table_epoch: int = 0
    current_epoch: int = 0
    table_global: int = 0
    current_global: int = 0
    deadline: float = 0.0

    def uncovered_allow(self) -> bool:
        """An allow no current, unexpired table covered (the fail-open tripwire)."""
        return self.allowed and (self.session is None or self.table_epoch < self.current_epoch
                                 or self.table_global < self.current_global or self.at >= self.deadline)


class EnforcementPoint:
    """The PEP of one service; ``audience`` is the service's own SPIFFE ID."""

    def __init__(
        self,
        audience: str,
        tables: TableSource,
        tokens: TokenCheck,
        *,
        clock: Clock = SYSTEM_CLOCK,
        sink: EventSink | None = None,
        is_revoked: Callable[[PeerLike], bool] | None = None,
        buffer_size: int = DEFAULT_BUFFER,
        source: str | None = None,
    ) -> None:
        self.audience = str(audience)
        self._tables = tables
        # a source reached over the network answers asynchronously (``fetch_table``): session opens,
        # renewals and re-pulls await it (the ``*_async`` methods, :meth:`refresh`) and the hot path never does
        self._fetch_async: Callable[[str, float], Awaitable[DecisionTable]] | None = getattr(tables, "fetch_table",
                                                                                              None)
        self._tokens = tokens
        self._clock = clock
        self._mono = clock.monotonic
        self.sink: EventSink = sink if sink is not None else MemorySink()
        self._append_decisions = getattr(self.sink, "append_decisions", None)
        self._sink_flush = getattr(self.sink, "flush", None)
        self._write_decisions = getattr(self.sink, "write_decisions", None)  # append + flush in one call
        if not hasattr(self.sink, "last_seq"):
            self._write_decisions = None
        if self._append_decisions is not None and callable(getattr(self.sink, "emit", None)):
            self.events: Any = self.sink  # a spool: its emit stamps from the sequence it shares with decisions
        else:
            self._append_decisions = self._write_decisions = None
            self.events = Emitter(source or f"pep:{self.audience}", self.sink, clock)
        self._is_revoked = is_revoked
        self._principals: dict[str, PrincipalState] = {}
        self._global = [0]  # the newest global epoch pushed (a cell so the hot path reads one index)
        self._cached: dict[str, DecisionTable] = {}
        self._seen_jti: dict[str, float] = {}  # jti -> exp (wall), pruned on open
        self._revoked_fingerprints: set[str] = set()
        self._revoked_kids: set[str] = set()
        self._lock = threading.RLock()
        # Decision buffer: preallocated; the hot path writes one tuple per decision.
        self._buf: list[DecisionRecord | None] = [None] * buffer_size
        self._n = 0
        self._drain_lock = threading.Lock()
        # Counters (plain ints, read by tests, the bench and the console).
        self.audit_down = False  # the audit sink refused a flush: nothing is allowed until one succeeds
        self.fail_open = 0  # allows not covered by a current, unexpired decision: must stay 0
        self.allowed = 0
        self.denied = 0
        self.refused = 0
        self.deny_reasons: collections.Counter[str] = collections.Counter()  # the deny path's reasons
        self.session_open_ns: collections.deque[int] = collections.deque(maxlen=4096)  # recent opens' durations
        self.session_opens = 0
        self.engine_failures = 0
        self.internal_errors = 0

    # ------------------------------------------------------------------ sessions

    def _state(self, principal: str) -> PrincipalState:
        state = self._principals.get(principal)
        if state is None:
            with self._lock:
                state = self._principals.setdefault(principal, PrincipalState(principal))
        return state

    def admit_peer(self, peer: PeerLike) -> None:
        """The handshake-time check: refuse a revoked certificate or a quarantined principal."""
        principal = str(peer.spiffe_id)
        if peer.fingerprint_sha256 in self._revoked_fingerprints:
            raise SessionRefused(f"{principal}: certificate revoked", reason=E.SESSION_PEER_REVOKED)
        if self._is_revoked is not None:
            try:
                revoked = self._is_revoked(peer)
            except Exception as exc:  # noqa: BLE001 - an unanswerable revocation check refuses
                raise SessionRefused(f"revocation check failed: {exc!r}",
                                     reason=E.SESSION_IDENTITY_UNREACHABLE) from None
            if revoked is not False:
                raise SessionRefused(f"{principal}: certificate revoked", reason=E.SESSION_PEER_REVOKED)
        state = self._principals.get(principal)
        if state is not None and state.quarantined:
            raise SessionRefused(f"{principal}: quarantined", reason=E.SESSION_PEER_QUARANTINED)

    def _verify_token(self, token: str, principal: str, cert_der: bytes, wall: float
                      ) -> tuple[str, float, str, str]:
        """Run the identity provider's verifier, then the PEP's own checks; returns (jti, exp, subject, kid).

        The subject is the peer itself, or - when the peer is a desk terminal's device
        certificate - the person (``user:<name>``) whose MFA login token it presents; a
        person's token must be bound to that very device certificate (``token.cnf_mismatch``).
        A token signed by a key revoked since this point started is refused (``token.key_revoked``).
        """
        try:
            claims = self._tokens.verify(token, self.audience, cert_der, now=wall)
        except TrustFabricError as exc:
            raise SessionRefused(exc.detail or str(exc), reason=exc.reason) from None
        except Exception as exc:  # noqa: BLE001 - foreign failure of the identity provider: refuse
            raise SessionRefused(f"token verifier failed: {exc!r}",
                                 reason=E.SESSION_IDENTITY_UNREACHABLE) from None
        if claims is None:
            raise SessionRefused("verifier returned no claims", reason=E.SESSION_TOKEN_INVALID)
        sub = _claim(claims, "sub")
        person = (isinstance(sub, str) and sub.startswith(PERSON_PREFIX) and len(sub) > len(PERSON_PREFIX)
                  and is_desk_device(principal) and bool(_claim(claims, "amr"))
                  and _claim(claims, "auth_time") is not None)
        if str(sub) != principal and not person:
            raise SessionRefused(f"token subject {sub!r} is not the peer {principal}",
                                 reason=E.SESSION_TOKEN_WRONG_SUBJECT)
        if person and (not isinstance(cert_der, bytes) or _bound_thumbprint(claims) != x5t_s256(cert_der)):
            raise SessionRefused(f"{sub}'s token is bound to another device than {principal}",
                                 reason=TOKEN_CNF_MISMATCH)
        kid = _claim(claims, "kid")
        kid = kid if isinstance(kid, str) else ""
        if kid and kid in self._revoked_kids:
            raise SessionRefused(f"token signing key {kid} is revoked", reason=TOKEN_KEY_REVOKED)
        aud = _claim(claims, "aud")
        auds = (aud,) if isinstance(aud, str) else tuple(aud or ())
        if self.audience not in auds:
            raise SessionRefused(f"token audience {aud!r} is not {self.audience}", reason="token.wrong_audience")
        exp = _claim(claims, "exp")
        jti = _claim(claims, "jti")
        if not isinstance(exp, (int, float)) or not jti:
            raise SessionRefused("token lacks exp or jti", reason=E.SESSION_TOKEN_INVALID)
        if wall >= exp:
            raise SessionRefused("token expired", reason=E.SESSION_TOKEN_EXPIRED)
        with self._lock:
            if jti in self._seen_jti:
                raise SessionRefused(f"jti {jti} already used", reason=E.SESSION_TOKEN_REPLAYED)
            if len(self._seen_jti) > 4096:
                for old in [k for k, v in self._seen_jti.items() if v <= wall]:
                    del self._seen_jti[old]
            self._seen_jti[str(jti)] = float(exp)
        return str(jti), float(exp), str(sub), kid

    def _table_valid(self, table: DecisionTable, principal: str, wall: float) -> bool:
        state = self._principals.get(principal)
        epoch = state.epoch if state is not None else 0
        return (isinstance(table, DecisionTable) and table.principal == principal and wall < table.expires_at
                and table.epoch >= epoch and table.global_epoch >= self._global[0])

    @property
    def awaits_tables(self) -> bool:
        """True when the table source is awaited (:meth:`open_session_async`, :meth:`refresh`...), never blocked on."""
        return self._fetch_async is not None

    def _fetch_table(self, principal: str, wall: float) -> DecisionTable:
        """Pull the principal's table; on any failure fall back to a still-valid cached one, or refuse."""
        try:
            table = self._tables.decision_table(principal, wall)
        except Exception as exc:  # noqa: BLE001 - unreachable, timed out, crashed: fail closed
            return self._table_unavailable(exc, principal, wall)
        return self._table_checked(table, principal, wall)

    async def _fetch_table_async(self, principal: str, wall: float) -> DecisionTable:
        """:meth:`_fetch_table` awaiting an asynchronous source (its own deadline bounds the wait)."""
        fetch = self._fetch_async
        if fetch is None:
            return self._fetch_table(principal, wall)
        try:
            table = await fetch(principal, wall)
        except Exception as exc:  # noqa: BLE001 - unreachable, timed out, crashed: fail closed
            return self._table_unavailable(exc, principal, wall)
        return self._table_checked(table, principal, wall)

    def _table_unavailable(self, exc: Exception, principal: str, wall: float) -> DecisionTable:
        """The source failed: a still-valid cached table, or a refusal (the engine's own "no" keeps its reason)."""
        if isinstance(exc, TrustFabricError) and exc.reason != UNREACHABLE:
            # the engine answered "no" (unknown principal, no policy set...): its reason stands
            raise SessionRefused(exc.detail or str(exc), reason=exc.reason) from None
        self.engine_failures += 1
        try:
            return self._cached_table(principal, wall)
        except SessionRefused:
            raise SessionRefused(f"policy engine unreachable: {exc!r}",
                                 reason=E.SESSION_ENGINE_UNREACHABLE) from None

    def _cached_table(self, principal: str, wall: float) -> DecisionTable:
        cached = self._cached.get(principal)
        if cached is not None and self._table_valid(cached, principal, wall):
            return cached
        raise SessionRefused(f"no current table for {principal} (its re-pull did not succeed)",
                             reason=E.SESSION_ENGINE_UNREACHABLE)

    def _table_checked(self, table: DecisionTable, principal: str, wall: float) -> DecisionTable:
        if not self._table_valid(table, principal, wall):
            raise SessionRefused(f"decision table for {principal} is stale, expired or not theirs",
                                 reason=E.SESSION_TABLE_INVALID)
        self._cached[principal] = table
        return table

    def _install(self, session: Session, table: DecisionTable, wall: float, mono: float) -> None:
        deadline = table.expires_at
        for decision in table.entries.values():
            ttl = decision.obligations.ttl_s
            if decision.allowed and ttl is not None:
                deadline = min(deadline, table.issued_at + ttl)
        session.entries = compile_entries(table.entries, mono)
        session.table_deadline = mono + (deadline - wall)
        session.table_epoch = table.epoch
        session.table_global_epoch = table.global_epoch

    def open_session(self, peer: PeerLike, token: str, *, trace_id: str = "") -> Session:
        """Open a session for ``peer`` presenting ``token``; raises :class:`SessionRefused`."""
        wall, mono = self._clock.now(), self._mono()
        principal, jti, exp, kid = self._admit_session(peer, token, wall, trace_id)
        try:
            table = self._fetch_table(principal, wall)
        except SessionRefused as exc:
            raise self._refused(exc, principal, peer.fingerprint_sha256, trace_id) from None
        session = self._start_session(peer, principal, jti, exp, kid, table, wall, mono, trace_id)
        self._opened(mono)
        return session

    async def open_session_async(self, peer: PeerLike, token: str, *, trace_id: str = "") -> Session:
        """:meth:`open_session` awaiting the table source (other connections are served meanwhile).

        The peer is admitted again once the table is in: a revocation or quarantine pushed
        during the wait refuses the session it would otherwise have missed.
        """
        wall, mono = self._clock.now(), self._mono()
        principal, jti, exp, kid = self._admit_session(peer, token, wall, trace_id)
        try:
            table = await self._fetch_table_async(principal, wall)
            self.admit_peer(peer)
            if principal != str(peer.spiffe_id):  # a person on a desk terminal
                self.admit_peer(_Presented(principal, peer.cert_der, peer.fingerprint_sha256,
                                           getattr(peer, "serial", None)))
        except SessionRefused as exc:
            raise self._refused(exc, principal, peer.fingerprint_sha256, trace_id) from None
        session = self._start_session(peer, principal, jti, exp, kid, table, wall, mono, trace_id)
        self._opened(mono)
        return session

    def _opened(self, started_mono: float) -> None:
        """A session open's duration (the rigorous check: token, admission, table), kept for the metrics."""
        self.session_open_ns.append(int((self._mono() - started_mono) * 1e9))
        self.session_opens += 1

    def _admit_session(self, peer: PeerLike, token: str, wall: float, trace_id: str
                       ) -> tuple[str, str, float, str]:
        """The checks of a session open before its table: admission and token; returns
        (principal, jti, exp, kid)."""
        principal = peer_id = str(peer.spiffe_id)
        try:
            self.admit_peer(peer)
            jti, exp, subject, kid = self._verify_token(token, peer_id, peer.cert_der, wall)
            if subject != peer_id:  # a person on a desk terminal: the session is the person's
                principal = subject
                self.admit_peer(_Presented(principal, peer.cert_der, peer.fingerprint_sha256,
                                           getattr(peer, "serial", None)))
        except SessionRefused as exc:
            raise self._refused(exc, principal, peer.fingerprint_sha256, trace_id) from None
        return principal, jti, exp, kid

    def _start_session(self, peer: PeerLike, principal: str, jti: str, exp: float, kid: str, table: DecisionTable,
                       wall: float, mono: float, trace_id: str) -> Session:
        peer_id = str(peer.spiffe_id)
        state = self._state(principal)
        session = Session(principal, peer.cert_der, peer.fingerprint_sha256, getattr(peer, "serial", None),
                          state, trace_id, peer_id)
        self._install(session, table, wall, mono)
        session.jti = jti
        session.kid = kid
        session.token_deadline = mono + (exp - wall)
        self._open(session, state, mono, trace_id)
        detail = {"session": session.session_id, "jti": jti, "kid": kid, "token_exp": exp,
                  "table_expires_at": table.expires_at, "entries": len(table.entries)}
        if peer_id != principal:
            detail["device"] = peer_id
        self.events.emit(Kind.SESSION_OPEN, principal=principal, epoch=table.epoch, trace_id=trace_id,
                         peer_fingerprint=peer.fingerprint_sha256, detail=detail)
        return session

    def _refused(self, exc: SessionRefused, principal: str, fingerprint: str, trace_id: str = "",
                 **detail: Any) -> SessionRefused:
        """Count and log a refused session open or renewal; returns ``exc`` for the caller to raise."""
        self.refused += 1
        self.events.emit(Kind.SESSION_REFUSED, principal=principal, reason=exc.reason, trace_id=trace_id,
                         peer_fingerprint=fingerprint, detail={**detail, "detail": exc.detail[:300]})
        return exc

    def _open(self, session: Session, state: PrincipalState, mono: float, trace_id: str) -> None:
        """Mark ``session`` open - unless its principal was quarantined while it was being checked."""
        session.opened_mono = mono
        with self._lock:
            if not state.quarantined:
                session.open = True
                state.sessions.add(session)
                return
        refusal = SessionRefused(f"{session.principal}: quarantined", reason=E.SESSION_PEER_QUARANTINED)
        raise self._refused(refusal, session.principal, session.peer_fingerprint, trace_id)

    def open_connection(self, peer: PeerLike, *, trace_id: str = "") -> Session:
        """A certificate-only session, for the sidecar whose clients are not Python and carry no token.

        The same admission (revocation, quarantine) and decision table as
        :meth:`open_session`; the certificate's ``not_after`` (when the peer
        carries one) takes the place of the token's expiry, bounded by the
        table's hard TTL. Quarantine and revocation close it like any session.
        """
        wall, mono = self._clock.now(), self._mono()
        principal = str(peer.spiffe_id)
        try:
            self.admit_peer(peer)
            table = self._fetch_table(principal, wall)
        except SessionRefused as exc:
            raise self._refused(exc, principal, peer.fingerprint_sha256, trace_id) from None
        return self._start_connection(peer, table, wall, mono, trace_id)

    async def open_connection_async(self, peer: PeerLike, *, trace_id: str = "") -> Session:
        """:meth:`open_connection` awaiting the table source; the peer is admitted again once it is in."""
        wall, mono = self._clock.now(), self._mono()
        principal = str(peer.spiffe_id)
        try:
            self.admit_peer(peer)
            table = await self._fetch_table_async(principal, wall)
            self.admit_peer(peer)
        except SessionRefused as exc:
            raise self._refused(exc, principal, peer.fingerprint_sha256, trace_id) from None
        return self._start_connection(peer, table, wall, mono, trace_id)

    def _start_connection(self, peer: PeerLike, table: DecisionTable, wall: float, mono: float,
                          trace_id: str) -> Session:
        principal = str(peer.spiffe_id)
        not_after = getattr(peer, "not_after", None)
        if hasattr(not_after, "timestamp"):
            not_after = not_after.timestamp()
        until = float(not_after) if isinstance(not_after, (int, float)) else table.expires_at
        state = self._state(principal)
        session = Session(principal, peer.cert_der, peer.fingerprint_sha256, getattr(peer, "serial", None),
                          state, trace_id)
        self._install(session, table, wall, mono)
        session.token_deadline = mono + (until - wall)
        self._open(session, state, mono, trace_id)
        self.events.emit(Kind.SESSION_OPEN, principal=principal, epoch=table.epoch, trace_id=trace_id,
                         peer_fingerprint=peer.fingerprint_sha256,
                         detail={"session": session.session_id, "certificate_only": True, "until": until})
        return session

    def renew(self, session: Session, token: str) -> None:
        """Re-run the session checks with a fresh token on the same connection; the session stays up.

        A refused renewal leaves the old token's deadline in force (so the session
        stops passing messages when it runs out) and raises :class:`SessionRefused`.
        """
        wall, mono = self._clock.now(), self._mono()
        jti, exp, kid = self._check_renewal(session, token, wall)
        try:
            table = self._fetch_table(session.principal, wall)
        except SessionRefused as exc:
            raise self._refused(exc, session.principal, session.peer_fingerprint,
                                session=session.session_id, renewal=True) from None
        self._renewed(session, jti, exp, kid, table, wall, mono)

    async def renew_async(self, session: Session, token: str) -> None:
        """:meth:`renew` awaiting the table source; the session's certificate is admitted again once it is in."""
        wall, mono = self._clock.now(), self._mono()
        jti, exp, kid = self._check_renewal(session, token, wall)
        try:
            table = await self._fetch_table_async(session.principal, wall)
            self.admit_peer(_Presented(session.peer_id, session.cert_der, session.peer_fingerprint,
                                       session.peer_serial))
            if not session.open:
                raise SessionClosed(f"session {session.session_id} is closed ({session.close_reason})")
        except SessionRefused as exc:
            raise self._refused(exc, session.principal, session.peer_fingerprint,
                                session=session.session_id, renewal=True) from None
        self._renewed(session, jti, exp, kid, table, wall, mono)

    def _check_renewal(self, session: Session, token: str, wall: float) -> tuple[str, float, str]:
        """A renewal's checks before its table: the same as at open, for the certificate the
        connection presented (a desk terminal's, for a person) and then for the session's principal."""
        if not session.open:
            raise SessionClosed(f"session {session.session_id} is closed ({session.close_reason})")
        principal = session.principal
        try:
            device = _Presented(session.peer_id, session.cert_der, session.peer_fingerprint, session.peer_serial)
            self.admit_peer(device)
            jti, exp, subject, kid = self._verify_token(token, device.spiffe_id, session.cert_der, wall)
            if subject != principal:
                raise SessionRefused(f"renewal token subject {subject!r} is not the session's {principal}",
                                     reason=E.SESSION_TOKEN_WRONG_SUBJECT)
            if principal != device.spiffe_id:
                self.admit_peer(_Presented(principal, session.cert_der, session.peer_fingerprint,
                                           session.peer_serial))
        except SessionRefused as exc:
            raise self._refused(exc, principal, session.peer_fingerprint,
                                session=session.session_id, renewal=True) from None
        return jti, exp, kid

    def _renewed(self, session: Session, jti: str, exp: float, kid: str, table: DecisionTable, wall: float,
                 mono: float) -> None:
        self._install(session, table, wall, mono)
        session.jti = jti
        session.kid = kid
        session.token_deadline = mono + (exp - wall)
        session.renewals += 1
        self.events.emit(Kind.SESSION_RENEW, principal=session.principal, epoch=table.epoch,
                         peer_fingerprint=session.peer_fingerprint,
                         detail={"session": session.session_id, "jti": jti, "token_exp": exp})

    def close(self, session: Session, reason: str = "session.closed_by_peer") -> None:
        """Close one session (idempotent); its transport link is dropped through ``on_close``."""
        with self._lock:
            if not session.open:
                return
            session.open = False
            session.close_reason = reason
            session.state.sessions.discard(session)
        self.events.emit(Kind.SESSION_CLOSE, principal=session.principal, reason=reason,
                         peer_fingerprint=session.peer_fingerprint, detail={"session": session.session_id})
        callback = session.on_close
        if callback is not None:
            try:
                callback(reason)
            except Exception:  # noqa: BLE001 - the session is closed whatever the link does
                self.internal_errors += 1

    def sessions(self, principal: str | None = None) -> list[Session]:
        with self._lock:
            if principal is not None:
                state = self._principals.get(principal)
                return list(state.sessions) if state else []
            return [s for st in self._principals.values() for s in st.sessions]

    # ------------------------------------------------------------------ push

    def on_invalidation(self, inv: Invalidation) -> None:
        """Bus subscriber: epochs move (next message re-decided); quarantine closes sessions at once."""
        if inv.global_epoch > self._global[0]:
            self._global[0] = inv.global_epoch
        if inv.principal is None:
            return
        state = self._state(inv.principal)
        if inv.epoch > state.epoch:
            state.epoch = inv.epoch
        if inv.kind == QUARANTINE:
            self.quarantine(inv.principal, inv.reason)
        elif inv.kind == RELEASE:
            state.quarantined = False

    def quarantine(self, principal: str, reason: str = "quarantine") -> int:
        """Close every session of ``principal`` now and refuse its handshakes until released."""
        state = self._state(principal)
        with self._lock:
            state.quarantined = True
            victims = list(state.sessions)
            # a quarantined desk terminal takes the people's sessions opened from it along
            victims += [s for st in self._principals.values() if st is not state for s in st.sessions
                        if s.peer_id == principal]
            self._cached.pop(principal, None)
        for session in victims:
            self.close(session, reason if reason.startswith(QUARANTINE_PREFIX) else f"quarantine.{reason}")
        return len(victims)

    def release(self, principal: str) -> None:
        self._state(principal).quarantined = False

    def revoke_certificate(self, fingerprint_sha256: str, reason: str = "cert.revoked") -> int:
        """Close every session opened with this certificate and refuse it from now on."""
        with self._lock:
            self._revoked_fingerprints.add(fingerprint_sha256)
            victims = [s for st in self._principals.values() for s in st.sessions
                       if s.peer_fingerprint == fingerprint_sha256]
        for session in victims:
            self.close(session, reason)
        return len(victims)

    def revoke_serials(self, serials: Iterable[int], reason: str = "cert.revoked") -> int:
        """Close every session whose certificate serial is in ``serials`` (a revocation push)."""
        wanted = set(serials)
        with self._lock:
            victims = [s for st in self._principals.values() for s in st.sessions if s.peer_serial in wanted]
            for s in victims:
                self._revoked_fingerprints.add(s.peer_fingerprint)
        for session in victims:
            self.close(session, reason)
        return len(victims)

    def revoke_token_key(self, kid: str, reason: str = TOKEN_KEY_REVOKED) -> int:
        """Close every session admitted (or last renewed) with a token of signing key ``kid``, and
        refuse that key's tokens from now on; the peers reopen with tokens of a trusted key."""
        with self._lock:
            self._revoked_kids.add(kid)
            victims = [s for st in self._principals.values() for s in st.sessions if s.kid == kid]
        for session in victims:
            self.close(session, reason)
        return len(victims)

    def attach_revocations(self, revocations: Any) -> Callable[[], None]:
        """Use an identity ``RevocationSet``: checked at every handshake and renewal, its changes pushed.

        A revoked serial closes the sessions opened with it; a revoked (quarantined)
        SPIFFE ID closes every session of that principal; a release lifts it; a revoked
        token signing key closes the sessions its tokens admitted.
        Returns the unsubscribe function.
        """
        previous = self._is_revoked

        def is_revoked(peer: PeerLike) -> bool:
            if previous is not None and previous(peer):
                return True
            return bool(revocations.is_revoked(int(getattr(peer, "serial", 0) or 0), str(peer.spiffe_id)))

        self._is_revoked = is_revoked

        def on_change(entry: Any) -> None:
            if entry.kind == "serial":
                self.revoke_serials([int(entry.value)], reason="cert.revoked")
            elif entry.kind == "spiffe_id":
                reason = entry.reason if str(entry.reason).startswith(QUARANTINE_PREFIX) else "quarantine.revoked"
                self.quarantine(entry.value, reason)
            elif entry.kind == "release_spiffe_id":
                self.release(entry.value)
            elif entry.kind == "token_key":
                self.revoke_token_key(entry.value)

        return revocations.subscribe(on_change)

    # ------------------------------------------------------------------ hot path

    def needs_redecide(self, s: Session) -> bool:
        """True when the next message of ``s`` re-pulls its table first (an epoch moved, or its TTL ran out)."""
        return (s.table_epoch < s.state.epoch or s.table_global_epoch < self._global[0]
                or self._mono() >= s.table_deadline)

    def wall_deadline(self, s: Session) -> float:
        """When ``s`` stops being usable without a renewal (its token or table, whichever first), in wall time
        (Unix seconds, for the peer's own clock; the enforcement point itself keeps monotonic deadlines)."""
        return self._clock.now() + (min(s.token_deadline, s.table_deadline) - self._mono())

    def is_current(self, s: Session) -> bool:
        """True when ``s`` is open, its table current and unexpired and its token (or certificate) unexpired:
        a message of it is decided from what it holds, with no re-pull."""
        if not s.open or s.table_epoch < s.state.epoch or s.table_global_epoch < self._global[0]:
            return False
        now = self._mono()  # one clock read for both deadlines (this runs per proxied chunk)
        return now < s.table_deadline and now < s.token_deadline

    def _redecide(self, s: Session, now: float) -> str | None:
        """Re-pull the table of a stale or expired session; a reason when it cannot (deny).

        An awaited source is never called from here (the hot path does not wait on the
        network): the transport calls :meth:`refresh` first, and what is left is a still-valid
        cached table or a deny.
        """
        wall = self._clock.now()
        try:
            if self._fetch_async is not None:
                table = self._cached_table(s.principal, wall)
            else:
                table = self._fetch_table(s.principal, wall)
        except SessionRefused as exc:
            return _deny_reason(exc)
        self._install(s, table, wall, now)
        return None

    async def refresh(self, s: Session) -> str | None:
        """Re-pull the table of a stale or expired session, awaiting the source; a reason when it cannot.

        The transport awaits this before handing the session's next message to :meth:`check`
        (``needs_redecide``), so the hot path never waits on the network; when it fails,
        :meth:`check` still denies the message (fail closed).
        """
        wall, mono = self._clock.now(), self._mono()
        try:
            table = await self._fetch_table_async(s.principal, wall)
        except SessionRefused as exc:
            return _deny_reason(exc)
        self._install(s, table, wall, mono)
        return None

    def check(self, s: Session | None, action: str, resource: str, notional: float = 0.0,
              symbol: str | None = None) -> tuple[bool, str]:
        """Decide one message of an open session: ``(allowed, reason)``. Never raises, never fails open."""
        now = self._mono()
        try:
            if s is None or not s.open:
                return self._deny(s, action, resource, E.NO_SESSION, now, notional, symbol)
            if self.audit_down:
                return self._deny(s, action, resource, E.AUDIT_UNAVAILABLE, now, notional, symbol)
            if (s.table_epoch < s.state.epoch or s.table_global_epoch < self._global[0]
                    or now >= s.table_deadline):
                why = self._redecide(s, now)
                if why is not None:
                    return self._deny(s, action, resource, why, now, notional, symbol)
            if now >= s.token_deadline:
                return self._deny(s, action, resource, E.TOKEN_EXPIRED, now, notional, symbol)
            e = s.entries.get((action, resource))
            if e is None:
                return self._deny(s, action, resource, E.NOT_IN_TABLE, now, notional, symbol)
            if e.allowed is not True:
                return self._deny(s, action, resource, e.reason, now, notional, symbol, e.policy_ids)
            cap = e.max_notional
            if cap is not None and not (0.0 <= notional <= cap):  # NaN fails too
                return self._deny(s, action, resource, E.NOTIONAL, now, notional, symbol, e.policy_ids)
            if e.symbols is not None and symbol not in e.symbols:
                return self._deny(s, action, resource, E.SYMBOL, now, notional, symbol, e.policy_ids)
            if e.rate is not None and not e.take_token(now):
                return self._deny(s, action, resource, E.RATE, now, notional, symbol, e.policy_ids)
            n = self._n
            self._buf[n] = DecisionRecord(now, s, action, resource, True, E.ALLOW, notional, symbol, e.policy_ids,
                                          s.table_epoch, s.state.epoch, s.table_global_epoch, self._global[0],
                                          s.table_deadline if s.table_deadline < s.token_deadline
                                          else s.token_deadline)
            self._n = n + 1
            if n + 1 == len(self._buf):
                self.flush_decisions()
            self.allowed += 1
            return True, E.ALLOW
        except Exception:  # noqa: BLE001 - a bug in the check denies, never allows
            self.internal_errors += 1
            try:
                return self._deny(s, action, resource, E.INTERNAL, now, notional, symbol)
            except Exception:  # noqa: BLE001
                return False, E.INTERNAL

    def _deny(self, s: Session | None, action: str, resource: str, reason: str, now: float,
              notional: float, symbol: str | None, policy_ids: tuple[str, ...] = ()) -> tuple[bool, str]:
        n = self._n
        self._buf[n] = DecisionRecord(now, s, action, resource, False, reason, notional, symbol, policy_ids)
        self._n = n + 1
        if n + 1 == len(self._buf):
            self.flush_decisions()
        self.denied += 1
        self.deny_reasons[reason] += 1
        return False, reason

    # ------------------------------------------------------------------ audit

    def pending_decisions(self) -> int:
        return self._n

    def flush_decisions(self) -> int:
        """Drain recorded decisions into audit events and flush the sink; returns how many.

        Called by the transport before effects leave (``on_before_flush``), so an
        allowed message's decision is in the audit sink before its reply is sent.
        """
        with self._drain_lock:
            n = self._n
            buf = self._buf
            write = self._write_decisions
            if n == 1 and write is not None:  # the hop: one decision, one compact record, one write()
                record = buf[0]
                wall = self._clock.now()
                rows = self._rows((record,), wall - self._mono())
                sink = self.sink
                before = sink.last_seq  # type: ignore[attr-defined]
                try:
                    write(rows, int(wall * 1e9))
                except Exception:
                    self.audit_down = True
                    if sink.last_seq != before:  # type: ignore[attr-defined] # taken: the sink holds it
                        buf[0] = None
                        self._n = 0
                    raise
                buf[0] = None
                self._n = 0
                self.audit_down = False
                return 1
            if n == 1:
                records = [buf[0]]
                buf[0] = None
            else:
                records = buf[:n]
                for i in range(n):
                    buf[i] = None
            self._n = 0
            wall = self._clock.now()
            offset = wall - self._mono()
            done = 0
            try:
                flush = self._sink_flush
                if self._append_decisions is not None:
                    if n:
                        rows = self._rows(records, offset)
                        if self._write_decisions is not None:
                            before = self.sink.last_seq  # type: ignore[attr-defined]
                            try:
                                self._write_decisions(rows, int(wall * 1e9))
                            finally:  # rows are taken whole or not at all; a failed write is held by the sink
                                if self.sink.last_seq != before:  # type: ignore[attr-defined]
                                    done = n
                            flush = None
                        else:
                            self._append_decisions(rows, int(wall * 1e9))
                            done = n
                else:
                    for record in records:
                        self._emit_decision(record, offset)
                        done += 1
                if flush is not None:
                    flush()
            except Exception:
                # The audit sink refused: keep what it did not take (nothing is lost), and
                # allow nothing more until a flush succeeds (fail closed). The caller's
                # flush hook sees the exception, so the pending effects do not leave.
                self.audit_down = True
                rest = records[done:] + buf[:self._n]
                self._n = 0
                for record in rest[:len(buf)]:
                    buf[self._n] = record
                    self._n += 1
                raise
            self.audit_down = False
            return n

    def _rows(self, records: Iterable[DecisionRecord], offset: float) -> list[tuple]:
        """Compact decision rows (:mod:`trustfabric.audit.compact`) of drained records; checks fail-open."""
        rows = []
        append = rows.append
        for r in records:
            if r.uncovered_allow():
                self.fail_open += 1
            s = r.session
            if s is None:
                append(("", r.action, r.resource, r.allowed, r.reason, r.table_epoch, (), "", "", None,
                        r.at + offset, r.notional, r.symbol))
                continue
            append((s.principal, r.action, r.resource, r.allowed, r.reason, r.table_epoch, r.policy_ids,
                    s.trace_id, s.peer_fingerprint, s.session_id, r.at + offset, r.notional, r.symbol))
        return rows

    def _emit_decision(self, record: DecisionRecord, offset: float) -> None:
        if record.uncovered_allow():
            self.fail_open += 1
        s = record.session
        detail: dict[str, Any] = {"decided_at": record.at + offset}
        if record.notional:
            detail["notional"] = record.notional
        if record.symbol is not None:
            detail["symbol"] = record.symbol
        if s is not None:
            detail["session"] = s.session_id
        self.events.emit(Kind.DECISION, principal=s.principal if s is not None else "",
                         action=record.action, resource=record.resource,
                         decision="allow" if record.allowed else "deny",
                         reason=record.reason, epoch=record.table_epoch, policy_ids=record.policy_ids,
                         trace_id=s.trace_id if s is not None else "",
                         peer_fingerprint=s.peer_fingerprint if s is not None else "", detail=detail)

