"""Control-plane failover, the launcher's part: the lease held, standbys started, a floor taken over, fencing.

:class:`ControlFailover` is mixed into :class:`~trustfabric.trading.launcher.Floor`. The active control
plane renews the floor's lease (:mod:`trustfabric.control.lease`) every ``BEAT_S``; a renewal that finds
another holder fences it (:meth:`ControlFailover._fence`). :meth:`ControlFailover._start_standbys` starts
each standby in a process of its own session (it outlives this one) that waits for the lease
(:mod:`trustfabric.trading.standby`); the standby then runs the launcher's ``take_over`` for the
services already running, which it adopts by pid (:class:`_Adopted`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from trustfabric.audit.events import Kind
from trustfabric.control.lease import BEAT_S
from trustfabric.errors import ConfigError
from trustfabric.trading.processes import spawn_child

READY_TIMEOUT_S = 30.0  # a standby says STANDBY within this, or the floor does not start


class _Adopted:
    """A service process this plane did not start (taken over from a control plane that died): signalled and
    awaited by pid; its parent reaps it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    @property
    def returncode(self) -> int | None:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return 0  # gone
        return 0 if state in ("Z", "X") else None  # a zombie has exited (whoever reaps it)

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    async def wait(self) -> int:
        while self.returncode is None:
            await asyncio.sleep(0.05)
        return 0


class ControlFailover:
    """The failover duties of a :class:`~trustfabric.trading.launcher.Floor` (its attributes are used here)."""

    async def _hold_lease(self) -> None:
        """Renew the lease every ``BEAT_S`` (off the loop); a renewal that finds another holder fences this plane."""
        self.lease.contested = bool(self.standbys or self.instance)  # standbys of ours, or we are one of several
        while self.plane is not None and not self.fenced:
            await asyncio.sleep(BEAT_S)
            if not await asyncio.to_thread(self.lease.beat):
                await self._fence()
                return

    async def _fence(self) -> None:
        """Another control plane holds the lease (this one hung, and came back): stop acting at once. The
        control server closes (the services move to the holder) and nothing here is shipped, renewed or
        signed again; the services are the holder's now and are left running."""
        self.fenced = True
        plane = self.plane
        if plane is not None:
            plane.emitter.emit(Kind.ADMIN_ACTION, principal=plane.control_id, action="control.fenced",
                               resource=str(self.home), decision="deny", reason="control.lease_lost",
                               detail={"epoch": self.lease.epoch})
        for task in (self._maintenance, self._state_watch, self._bus_task, self._audit_task, self._follow_task):
            if task is not None:
                task.cancel()
        if self.server is not None:
            await self.server.close()
        if self._collector is not None:
            await asyncio.to_thread(self._collector.stop, 10.0)  # its last pass: re-shipped records are stored once

    async def _start_standbys(self) -> None:
        """Each standby in its own process (its own session: it outlives this one), waiting for the lease."""
        for bootstrap, control in self.standby_ports:
            spec = {"home": str(self.home), "mode": self.mode, "services": list(self.processes or self.services),
                    "policies": str(self.policies), "bus_url": self.bus_url, "cert_ttl_s": self.cert_ttl_s,
                    "posture_max_age_s": self.posture_max_age_s, "control_ports": [bootstrap, control],
                    "collect_interval_s": self.collect_interval_s, "table_ttl_s": self.table_ttl_s,
                    "deployment": self.deployment.source if self.deployment is not None else "",
                    "replica": bool(self.followers)}
            proc = await spawn_child([sys.executable, "-m", "trustfabric.trading.standby"], spec,
                                     self.home / "floor" / "logs" / f"standby-{control}.log")
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)).decode().strip()
            if line != ("REPLICA" if self.followers else "STANDBY"):
                raise ConfigError(f"a standby control plane did not start: {line!r}", reason="config.floor.standby")
            self.standby_procs.append(proc)
