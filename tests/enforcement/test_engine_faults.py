"""The policy engine in a real process over loopback, killed with kill -9 and hung: fail closed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.waiting import wait_until
from trustfabric.clock import SYSTEM_CLOCK
from trustfabric.enforcement import errors as E
from trustfabric.enforcement.errors import SessionRefused
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.errors import EngineUnreachable
from trustfabric.enforcement.remote import AsyncLoopbackTableSource, LoopbackTableSource
from trustfabric.policy.decision import Invalidation

from .conftest import ALGO, OMS, RISK
from .fakes import FakeTokenVerifier, make_peer, make_token

pytestmark = pytest.mark.slow  # the engine runs in a real process, killed and stopped

RULES = {"ttl_s": 60, "principals": {
    ALGO: [{"action": "read", "resource": "risk/limits"}],
    OMS: [{"action": "read", "resource": "risk/limits"}],
}}


@pytest.fixture
def engine(tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    proc = subprocess.Popen([sys.executable, "-m", "trustfabric.enforcement.remote", "--rules", str(rules)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield proc, int(line.split()[1])
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(timeout=5)


def _pep(port):
    tables = LoopbackTableSource("127.0.0.1", port, timeout_s=0.2)
    return EnforcementPoint(RISK, tables, FakeTokenVerifier(), clock=SYSTEM_CLOCK), tables


def _open(pep, principal):
    peer = make_peer(principal)
    return pep.open_session(peer, make_token(principal, RISK, peer.cert_der, SYSTEM_CLOCK.now() + 60))


def test_tables_served_over_loopback(engine):
    _, port = engine
    pep, _ = _pep(port)
    s = _open(pep, ALGO)
    assert pep.check(s, "read", "risk/limits") == (True, E.ALLOW)
    assert pep.check(s, "write", "risk/limits") == (False, E.NOT_IN_TABLE)


def _wait_stopped(pid: int) -> None:
    """SIGSTOP is delivered asynchronously: wait (bounded) until the process is really stopped."""
    stat = Path(f"/proc/{pid}/stat")
    wait_until(lambda: not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] in ("T", "t"),
               2.0, what=f"process {pid} stopped")


@pytest.mark.parametrize("fault", ["kill-9", "hung"])
def test_engine_fault_fails_closed(engine, fault):
    proc, port = engine
    pep, tables = _pep(port)
    s = _open(pep, ALGO)
    if fault == "kill-9":
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    else:
        os.kill(proc.pid, signal.SIGSTOP)  # alive, listening, never answering
        _wait_stopped(proc.pid)
    # A principal with no cached table cannot open a session.
    with pytest.raises(SessionRefused) as exc:
        _open(pep, OMS)
    assert exc.value.reason == E.SESSION_ENGINE_UNREACHABLE
    with pytest.raises(EngineUnreachable):
        tables.decision_table(OMS, SYSTEM_CLOCK.now())
    # The still-valid cached decision keeps covering the open session...
    assert pep.check(s, "read", "risk/limits") == (True, E.ALLOW)
    # ...until an invalidation makes it stale: then the next message is denied, not allowed.
    pep.on_invalidation(Invalidation(ALGO, 2, 1, "signal.changed"))
    assert pep.check(s, "read", "risk/limits") == (False, E.ENGINE_UNREACHABLE)
    assert pep.check(s, "read", "risk/limits") == (False, E.ENGINE_UNREACHABLE)
    with pytest.raises(SessionRefused):
        _open(pep, ALGO)
    pep.flush_decisions()
    assert pep.fail_open == 0
    assert pep.engine_failures >= 3


async def test_a_stopped_engine_is_awaited_while_the_event_loop_runs_on(engine):
    """SIGSTOP of the engine process: the session open awaits its table (nothing blocks the loop)
    and is refused at the source's deadline; a re-pull of a stale session likewise."""
    proc, port = engine
    tables = AsyncLoopbackTableSource("127.0.0.1", port, timeout_s=0.2)
    pep = EnforcementPoint(RISK, tables, FakeTokenVerifier(), clock=SYSTEM_CLOCK)
    peer = make_peer(ALGO)
    s = await pep.open_session_async(peer, make_token(ALGO, RISK, peer.cert_der, SYSTEM_CLOCK.now() + 60))
    assert pep.awaits_tables and pep.check(s, "read", "risk/limits") == (True, E.ALLOW)
    os.kill(proc.pid, signal.SIGSTOP)
    _wait_stopped(proc.pid)
    oms = make_peer(OMS)
    pending = asyncio.get_running_loop().create_task(
        pep.open_session_async(oms, make_token(OMS, RISK, oms.cert_der, SYSTEM_CLOCK.now() + 60)))
    other = asyncio.get_running_loop().create_task(asyncio.sleep(0))  # any other work on the loop
    await other
    assert not pending.done()  # the open is waiting, the loop is not
    with pytest.raises(SessionRefused) as exc:
        await pending
    assert exc.value.reason == E.SESSION_ENGINE_UNREACHABLE
    pep.on_invalidation(Invalidation(ALGO, 2, 1, "signal.changed"))
    assert pep.needs_redecide(s)
    assert await pep.refresh(s) == E.ENGINE_UNREACHABLE
    assert pep.check(s, "read", "risk/limits") == (False, E.ENGINE_UNREACHABLE)
    tables.close()
    pep.flush_decisions()
    assert pep.fail_open == 0
