"""Control-plane replicas: every replica issues certificates, tokens and tables; one holds the lease.

Beyond one machine (PostgreSQL holding the state of record, NATS the bus) a floor runs several
control planes (``trustfabric up --replicas N``, or ``trustfabric control serve`` on a host of
its own). Each serves joins, renewals, tokens and decision tables, from the same CAs, key ring,
policy and signals. One of them holds the floor's lease (:mod:`trustfabric.control.lease`) and
with it the single-active duties: it is the only writer of the signal state (operators' changes,
posture, the response engine's containment), the audit sequencer, and the one that pushes to
the enforcement points and runs the posture agents. The others are followers; when the lease
frees, one of them takes those duties over without restarting what it serves.

A follower answers with the state the active plane has, never an older one:

* the active plane writes the signal state - with its policy epochs - to the store *before* it
  pushes an invalidation (:meth:`~trustfabric.control.plane.ControlPlane._publish`);
* before a follower answers a join, renewal, token or table request, :meth:`Follower.catch_up`
  reads the versions of the shared state in one query (:class:`SharedVersions`: the signal
  state's version, the revocation rows, the active policy, the token keys, the hosts' keys) and,
  when one moved, brings its plane there: the active bundle loaded, the revocation rows applied,
  the key ring and the hosts' keys re-read, the signals applied through the hub's own setters
  (:func:`~trustfabric.signals.state.follow_state`), and last the active plane's epochs adopted, so that a table it issues carries
  the epochs the enforcement points know from the active plane's pushes;
* when the store cannot be read, the follower answers nothing (``control.state_unavailable``,
  retryable: the enforcement point asks the active plane instead). Fail closed.

So an enforcement point that re-fetches a table after a push gets it from a follower that already
holds the change (read your writes). A follower refuses operators' actions with
``control.not_leader``: they go to the lease holder, which the runtime manifest names.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from trustfabric.control.errors import STATE_UNAVAILABLE, ControlRefused
from trustfabric.errors import TrustFabricError
from trustfabric.policy.bundle import SigningKeys
from trustfabric.signals.state import follow_state, load_state

# One round trip: the signal state's version, how many revocation rows, the active policy record, the key ring.
VERSIONS_SQL = (
    "SELECT (SELECT version FROM signal_state WHERE id = 1), "
    "(SELECT count(*) FROM identity_revocations), "
    "(SELECT md5(data) FROM policy_state WHERE id = 1), "
    "(SELECT md5(string_agg(kid || ':' || coalesce(retired_at::text, ''), ',' ORDER BY kid)) "
    "FROM identity_signing_keys), "
    "(SELECT md5(string_agg(host || ':' || encode(public_raw, 'hex'), ',' ORDER BY host)) FROM identity_host_keys)"
)


class SharedVersions:
    """The versions of the shared state of record, read in one query on one kept connection."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema
        self._conn: Any = None
        self._lock = threading.Lock()

    def read(self) -> tuple[Any, ...]:
        """(signal state version, revocation rows, active policy digest, key ring digest, host keys digest); raises
        :class:`ControlRefused` (``control.state_unavailable``, retryable) when the store cannot be read."""
        import psycopg  # beyond one machine only

        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2,
                                                 options=f"-c search_path={self.schema}")
                row = self._conn.execute(VERSIONS_SQL).fetchone()
            except psycopg.Error as exc:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                raise ControlRefused(f"the state of record is unreachable: {str(exc).strip()[:200]}",
                                     reason=STATE_UNAVAILABLE, retryable=True) from None
        return tuple(row)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None


@dataclass
class Follower:
    """Keeps a follower's :class:`~trustfabric.control.plane.ControlPlane` at the shared state of record."""

    plane: Any
    versions: SharedVersions
    seen: tuple[Any, ...] = ()
    catch_ups: int = 0  # how often the state had moved and was applied here
    checks: int = 0
    lag_ms: list[float] = field(default_factory=list)  # how long each applied catch-up took (the last 256)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def catch_up(self) -> bool:
        """Read the versions (blocking: call it off the event loop) and apply what moved; True when something
        had. Raises :class:`ControlRefused` when the store cannot be read (the request is then refused)."""
        with self._lock:  # one catch-up at a time; the next caller finds the state current
            versions = self.versions.read()
            self.checks += 1
            if versions == self.seen:
                return False
            started = time.perf_counter()
            self._apply(self.seen, versions)
            self.seen = versions
            self.catch_ups += 1
            self.lag_ms = (self.lag_ms + [(time.perf_counter() - started) * 1000])[-256:]
            return True

    def _apply(self, before: tuple[Any, ...], after: tuple[Any, ...]) -> None:
        plane = self.plane
        old = before or (None,) * len(after)
        try:
            if old[2] != after[2]:  # the active policy moved (activation, rollback)
                active = plane.policy_versions.active_bundle(SigningKeys(plane.identity.store).all())
                if active is not None:
                    plane.engine.load_dir(active[1])
            if old[1] != after[1]:
                plane.identity.revocations.follow()
            if old[3] != after[3]:
                plane.identity.keys.refresh(force=True)
            if old[4] != after[4]:  # a host enrolled or re-keyed
                plane.refresh_host_keys()
            state = load_state(plane.signals_path)
            book = plane.signals
            book.calendar, book.threat_bundle = follow_state(
                plane.hub, state, calendar=book.calendar, threat_bundle=book.threat_bundle,
                origin=f"replica:{plane.source}")
            global_epoch, epochs = state.epochs
            plane.engine.adopt_epochs(global_epoch, dict(epochs))
        except ControlRefused:
            raise
        except TrustFabricError as exc:
            raise ControlRefused(f"the state of record could not be applied: {exc.detail[:200]}",
                                 reason=STATE_UNAVAILABLE, retryable=True) from None
