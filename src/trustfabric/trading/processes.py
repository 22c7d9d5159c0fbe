"""The floor's child processes: started with one JSON line on stdin, stopped with no orphans.

Services (``python -m trustfabric.trading.services``) and standby or replica control planes
(``python -m trustfabric.trading.standby``) are started the same way: in a session of their own,
stderr to a log file, the boot line written to stdin and stdin closed; the caller reads their first
stdout line (READY, STANDBY...). :func:`stop_processes` sends SIGTERM, then SIGKILL to the session
of any that has not exited within ``STOP_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any, Iterable

STOP_TIMEOUT_S = 5.0


async def spawn_child(argv: list[str], line: dict[str, Any], log: Path) -> asyncio.subprocess.Process:
    """``argv`` in a session of its own, ``line`` (JSON) on its stdin, its stderr appended to ``log``."""
    with open(log, "ab") as err:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE, stderr=err,
                                                    start_new_session=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(line).encode() + b"\n")
    await proc.stdin.drain()
    proc.stdin.close()
    return proc


async def stop_processes(procs: Iterable[Any]) -> None:
    """SIGTERM to every process still running, then SIGKILL to the session of any that has not exited within
    ``STOP_TIMEOUT_S``: no orphans."""
    procs = list(procs)
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
