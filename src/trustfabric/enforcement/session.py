"""A session: one authenticated, authorized conversation with one peer on one connection.

A session is opened by :meth:`EnforcementPoint.open_session
<trustfabric.enforcement.pep.EnforcementPoint.open_session>` only after the
rigorous checks (peer identity from TLS, certificate-bound token for this
audience, no replay, decision table pulled). It then holds everything the hot
path needs as plain attributes:

* ``entries`` - the compiled decision table, keyed ``(action, resource)``;
* ``table_epoch`` / ``table_global_epoch`` - the epochs the table was compiled in,
  compared with the principal's :class:`PrincipalState` ``epoch`` and the
  enforcement point's global epoch (two int comparisons);
* ``table_deadline`` / ``token_deadline`` - hard limits on the monotonic clock,
  converted once from the table's ``expires_at`` and the token's ``exp``.

Sessions are mutable (their obligations' state and deadlines move) but only the
enforcement point changes them.
"""

from __future__ import annotations

import itertools
from typing import Callable

from trustfabric.enforcement.obligations import Entry

_session_ids = itertools.count(1)


class PrincipalState:
    """What an enforcement point knows about one principal: the newest epoch pushed, quarantine, sessions."""

    __slots__ = ("principal", "epoch", "quarantined", "sessions")

    def __init__(self, principal: str) -> None:
        self.principal = principal
        self.epoch = 0
        self.quarantined = False
        self.sessions: set[Session] = set()


class Session:
    __slots__ = ("session_id", "principal", "cert_der", "peer_fingerprint", "peer_serial",
                 "state", "entries", "table_epoch", "table_global_epoch", "table_deadline",
                 "token_deadline", "jti", "kid", "open", "close_reason", "renewals", "opened_mono",
                 "on_close", "trace_id", "peer_id", "__weakref__")

    def __init__(self, principal: str, cert_der: bytes, peer_fingerprint: str, peer_serial: int | None,
                 state: PrincipalState, trace_id: str = "", peer_id: str = "") -> None:
        self.session_id = next(_session_ids)
        self.principal = principal
        self.cert_der = cert_der
        self.peer_fingerprint = peer_fingerprint
        self.peer_serial = peer_serial
        self.state = state
        self.entries: dict[tuple[str, str], Entry] = {}
        self.table_epoch = -1
        self.table_global_epoch = -1
        self.table_deadline = 0.0
        self.token_deadline = 0.0
        self.jti = ""
        self.kid = ""  # the signing key of the token that admitted (or last renewed) the session
        self.open = False
        self.close_reason = ""
        self.renewals = 0
        self.opened_mono = 0.0
        self.on_close: Callable[[str], None] | None = None  # set by the transport to drop the link
        self.trace_id = trace_id
        # The SPIFFE ID of the certificate presented: the principal itself, or the desk
        # terminal a person's session was opened from.
        self.peer_id = peer_id or principal

    def __repr__(self) -> str:
        status = "open" if self.open else f"closed:{self.close_reason}"
        return f"<Session {self.session_id} {self.principal} {status}>"
