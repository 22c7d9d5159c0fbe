"""A policy engine over loopback that answers with hostile bytes: both table sources refuse, fail closed.

A fake engine (an asyncio server on 127.0.0.1) reads each request and answers with one
crafted reply: nested deeper than the decoders' bound, longer than ``MAX_REPLY``, or not
MessagePack at all. The blocking and the awaited source each turn every one into
:class:`EngineUnreachable`, and an enforcement point opening a session on them is refused.
"""

from __future__ import annotations

import asyncio
import struct

import pytest

from trustfabric.clock import SYSTEM_CLOCK
from trustfabric.enforcement import errors as E
from trustfabric.enforcement.errors import EngineUnreachable, SessionRefused
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.remote import MAX_REPLY, AsyncLoopbackTableSource, LoopbackTableSource
from trustfabric.nesting import MAX_NESTING

from .conftest import ALGO, RISK
from .fakes import FakeTokenVerifier, make_peer, make_token

_LEN = struct.Struct(">I")
NESTED = b"\x91" * (MAX_NESTING + 10) + b"\xc0"  # arrays of one element, deeper than the bound
REFUSED_FOR = {"nested": "nested too deep", "oversized": "reply of", "garbage": ""}  # what the refusal names
HOSTILE = {
    "nested": _LEN.pack(len(NESTED)) + NESTED,
    "oversized": _LEN.pack(MAX_REPLY + 1),
    "garbage": _LEN.pack(4) + b"\xc1\xc1\xc1\xc1",
}


async def _engine(reply: bytes):
    """A fake engine answering every request with ``reply``; (server, port)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (size,) = _LEN.unpack(await reader.readexactly(4))
                await reader.readexactly(size)
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _token(principal: str):
    peer = make_peer(principal)
    return peer, make_token(principal, RISK, peer.cert_der, SYSTEM_CLOCK.now() + 60)


@pytest.mark.parametrize("kind", sorted(HOSTILE))
async def test_the_awaited_source_refuses_a_hostile_reply(kind):
    server, port = await _engine(HOSTILE[kind])
    try:
        tables = AsyncLoopbackTableSource("127.0.0.1", port, timeout_s=2.0)
        with pytest.raises(EngineUnreachable) as unreachable:
            await tables.fetch_table(ALGO, SYSTEM_CLOCK.now())
        assert REFUSED_FOR[kind] in str(unreachable.value)
        pep = EnforcementPoint(RISK, tables, FakeTokenVerifier(), clock=SYSTEM_CLOCK)
        with pytest.raises(SessionRefused) as refused:
            await pep.open_session_async(*_token(ALGO))
        assert refused.value.reason == E.SESSION_ENGINE_UNREACHABLE
        assert pep.fail_open == 0
    finally:
        server.close()


@pytest.mark.parametrize("kind", sorted(HOSTILE))
async def test_the_blocking_source_refuses_a_hostile_reply(kind):
    server, port = await _engine(HOSTILE[kind])
    try:
        tables = LoopbackTableSource("127.0.0.1", port, timeout_s=2.0)
        with pytest.raises(EngineUnreachable) as unreachable:
            await asyncio.to_thread(tables.decision_table, ALGO, SYSTEM_CLOCK.now())
        assert REFUSED_FOR[kind] in str(unreachable.value)
        pep = EnforcementPoint(RISK, tables, FakeTokenVerifier(), clock=SYSTEM_CLOCK)
        with pytest.raises(SessionRefused) as refused:
            await asyncio.to_thread(pep.open_session, *_token(ALGO))
        assert refused.value.reason == E.SESSION_ENGINE_UNREACHABLE
        assert pep.fail_open == 0
        tables.close()
    finally:
        server.close()
