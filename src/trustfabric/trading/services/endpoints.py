"""A service's control endpoints: the active control plane watched, and the move to a standby when it is gone.

Mixed into :class:`~trustfabric.trading.services.base.ServiceRuntime`. When the floor runs standby control
planes (``up --standbys``) the boot line lists every control endpoint. :meth:`ControlEndpoints._liveness_loop`
pings the control plane every ``LIVENESS_S`` and closes a channel that does not answer in ``UNRESPONSIVE_S``
(a hung plane counts as gone); :meth:`ControlEndpoints._fail_over` then subscribes at the next endpoint - the
standby that took the floor over - within ``FAILOVER_S``, keeping the same key set and applying its
revocation snapshot. The enforcement point serves the sessions it holds meanwhile; a table it cannot get is a
refusal (fail closed). :meth:`ControlEndpoints._pause` is the wait between two rounds of every loop of the
runtime (cut short when the runtime stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from trustfabric.audit.events import Kind
from trustfabric.errors import TrustFabricError

FAILOVER_S = 20.0  # how long a service looks for another control plane before it stops
FAILOVER_RETRY_S = 0.1
LIVENESS_S = 0.5  # with a standby: how often the control plane is pinged
UNRESPONSIVE_S = 1.5  # a ping not answered in this long: the control plane is taken for gone


class ControlEndpoints:
    """The runtime's control channel kept on a live control plane (its attributes are the runtime's)."""

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less when the runtime stops meanwhile."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopped.wait(), seconds)

    async def _liveness_loop(self) -> None:
        """Ping the control plane every ``LIVENESS_S``; one that does not answer within ``UNRESPONSIVE_S``
        (hung: SIGSTOP, a stuck loop) is treated as gone - its channel is closed here, and the report loop
        moves to the next control endpoint."""
        while not self.stopped.is_set():
            await self._pause(LIVENESS_S)
            control = self.control
            if self.stopped.is_set() or control is None or control.conn is None or control.conn.closed \
                    or self._control_lock.locked():
                continue
            try:
                await control.ping(UNRESPONSIVE_S)
            except TrustFabricError as exc:
                if control is self.control and control.conn is not None and not control.conn.closed:
                    self.events.emit(Kind.ALERT, principal=self.spiffe_id, action="control.liveness", decision="deny",
                                     reason=exc.reason, resource=f"{control.host}:{control.port}")
                    control.conn.close(exc.reason)

    async def _fail_over(self) -> bool:
        """The control plane this service was on is gone: move to the floor's next control endpoint (a standby
        that took the floor over), within ``FAILOVER_S``. The enforcement point keeps serving the sessions it
        holds meanwhile; table requests wait for the new channel or are refused (fail closed). False when the
        floor has no other endpoint or none answered in time."""
        ports = [int(p) for p in self.boot.get("control_ports", ())]
        old = self.control
        if len(ports) < 2 or old is None or self.tls is None:
            return False
        started = time.monotonic()
        async with self._control_lock:
            while not self.stopped.is_set() and time.monotonic() - started < FAILOVER_S:
                for port in ports:
                    if port == old.port:
                        continue
                    try:
                        new, subscribed = await self._subscribe(old, port)
                    except (TrustFabricError, OSError, asyncio.TimeoutError):
                        continue
                    if self.jwks is not None:
                        with contextlib.suppress(TrustFabricError):
                            self.jwks.replace(subscribed.jwks)
                    new.on_command = self._on_command
                    self.control = new
                    self._control_fp = self.credentials.current().fingerprint_sha256  # type: ignore[union-attr]
                    if self.tables is not None and self.reads is None:
                        self.tables.client = new
                    self.control_failovers += 1
                    took_ms = (time.monotonic() - started) * 1000
                    self.events.emit(Kind.ADMIN_ACTION, principal=self.spiffe_id, action="control.failover",
                                     resource=f"{old.host}:{port}", decision="allow",
                                     detail={"from_port": old.port, "took_ms": round(took_ms, 1)})
                    old.close()
                    return True
                await asyncio.sleep(FAILOVER_RETRY_S)
        return False
