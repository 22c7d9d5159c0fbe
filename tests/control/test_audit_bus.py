"""The control plane's audit consumer refuses a batch that is not what its subject says, and never acknowledges it."""

from __future__ import annotations

import asyncio

import msgspec

from trustfabric.control.audit_bus import AuditConsumer, _Batch


class Msg:
    def __init__(self, subject: str, data: bytes) -> None:
        self.subject, self.data = subject, data
        self.outcome = ""

    async def term(self) -> None:
        self.outcome = "term"

    async def ack(self) -> None:
        self.outcome = "ack"


class FakeJetStream:
    def __init__(self, msgs: list[Msg]) -> None:
        self.msgs = msgs

    async def add_stream(self, **_kw) -> None:
        return None

    async def pull_subscribe(self, *_a, **_kw):
        js = self

        class Sub:
            async def fetch(self, _n, timeout):
                if js.msgs:
                    out, js.msgs = js.msgs, []
                    return out
                await asyncio.sleep(timeout)
                raise asyncio.TimeoutError

        return Sub()


class FakeNats:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, subject: str, data: bytes) -> None:
        self.published.append((subject, data))


async def test_a_forged_or_garbled_batch_is_terminated_and_nothing_is_committed_or_acknowledged():
    forged = Msg("tf.audit.records.oms", msgspec.msgpack.encode(_Batch("venue-a", "venue-a:1:10:5", [b"x"])))
    garbled = Msg("tf.audit.records.oms", b"\xc1not msgpack")
    good = Msg("tf.audit.records.oms", msgspec.msgpack.encode(_Batch("oms", "oms:1:10:5", [b"r1", b"r2"])))
    bus = type("Bus", (), {"js": FakeJetStream([forged, garbled, good]), "nc": FakeNats()})()
    submitted: list = []
    consumer = AuditConsumer(bus, lambda payloads, committed: submitted.append((payloads, committed)))
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(consumer.run(stop))
    for _ in range(100):
        if submitted:
            break
        await asyncio.sleep(0.01)
    assert forged.outcome == garbled.outcome == "term" and consumer.malformed == 2
    assert [p for p, _ in submitted] == [[b"r1", b"r2"]] and good.outcome == ""  # not acknowledged before the commit
    submitted[0][1](2)  # the central log committed it
    for _ in range(100):
        if good.outcome:
            break
        await asyncio.sleep(0.01)
    assert good.outcome == "ack" and bus.nc.published == [("tf.audit.acks.oms", b"oms:1:10:5")]
    stop.set()
    await asyncio.wait_for(task, 2)
