"""Audit records over the control bus: at least once on the wire, exactly once in the central log.

Beyond one machine an enforcement point's spool is not on the control plane's disk. The point's
:class:`SpoolShipper` reads the complete records after its spool's ack position (the same reader
and the same ack file as the file collector, :mod:`trustfabric.audit.collector`) and publishes
them, a batch at a time, to the JetStream stream ``TF_AUDIT`` on ``tf.audit.records.<service>``
with a message id naming the source and the stretch (``Nats-Msg-Id``: a re-publish inside the
de-duplication window is stored once). The active control plane's :class:`AuditConsumer` pulls
the stream with a durable consumer, hands each batch to the central log's collector
(:meth:`~trustfabric.audit.collector.PeriodicCollector.submit`), and only once the central commit
is done publishes ``tf.audit.acks.<service>`` and acknowledges the message to JetStream. Only then
does the point write its ack and drop the stretch; a batch with no acknowledgement is published
again after ``RESEND_S``. ``kill -9`` of either side loses nothing: the point re-publishes from its
ack, JetStream re-delivers what the dead consumer did not acknowledge, and the log stores each
``(source, seq)`` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any, Callable

import msgspec

from trustfabric.audit.compact import record_seq
from trustfabric.audit.damage import records_and_alerts
from trustfabric.audit.spool import Ack, read_ack, segment_number, segment_paths, write_ack

AUDIT_STREAM = "TF_AUDIT"
RECORDS = "tf.audit.records"
ACKS = "tf.audit.acks"
CONSUMER = "central-log"
BATCH_RECORDS = 2048
RESEND_S = 10.0
POLL_S = 0.2


class _Batch(msgspec.Struct, frozen=True):
    source: str
    msg_id: str
    records: list[bytes]


_encode = msgspec.msgpack.Encoder().encode
_decode_batch = msgspec.msgpack.Decoder(_Batch).decode


async def prepare(js: Any) -> None:
    """The audit stream (the control plane's job; idempotent)."""
    await js.add_stream(name=AUDIT_STREAM, subjects=[f"{RECORDS}.>"], duplicate_window=120)


class SpoolShipper:
    """An enforcement point's spool shipped over the bus (see the module's docstring)."""

    def __init__(self, bus: Any, service: str, directory: Path, *, now_ns: Callable[[], int] = time.time_ns) -> None:
        self.bus, self.service, self.directory = bus, service, Path(directory)
        self.now_ns = now_ns
        self.shipped = 0  # records the central log confirmed
        self.resent = 0
        self.last_error = ""
        self._pending: tuple[str, Ack] | None = None  # (message id, the ack it earns)
        self._previous: Ack | None = None  # the ack the pending stretch starts from
        self._sent_at = 0.0

    async def start(self) -> "SpoolShipper":
        await self.bus.nc.subscribe(f"{ACKS}.{self.service}", cb=self._on_ack)
        return self

    async def _on_ack(self, msg: Any) -> None:
        pending = self._pending
        if pending is not None and msg.data.decode(errors="replace") == pending[0]:
            write_ack(self.directory, pending[1])  # the central log holds the stretch: the spool may drop it
            for path in segment_paths(self.directory):
                if pending[1].offset > 0 and segment_number(path) < pending[1].segment:
                    path.unlink(missing_ok=True)
            self.shipped += pending[1].records - (self._previous.records if self._previous is not None else 0)
            self._pending = None

    def _next_batch(self) -> tuple[list[bytes], Ack] | None:
        ack = read_ack(self.directory)
        self._previous = ack
        records: list[bytes] = []
        position = (ack.segment, ack.offset)
        last_seq = ack.last_seq
        for segment, end, payload in records_and_alerts(self.directory, ack, [], self.now_ns):
            records.append(bytes(payload))
            position = (segment, end)
            if len(records) >= BATCH_RECORDS:
                break
        if not records:
            return None
        last_seq = max(last_seq, record_seq(records[-1]))
        return records, Ack(position[0], position[1], ack.records + len(records), last_seq)

    async def ship_once(self) -> bool:
        """Publish the next stretch (or the unconfirmed one again, once ``RESEND_S`` passed); True when sent."""
        if self._pending is not None and time.monotonic() - self._sent_at < RESEND_S:
            return False
        batch = await asyncio.to_thread(self._next_batch)
        if batch is None:
            return False
        records, earns = batch
        msg_id = f"{self.service}:{earns.segment}:{earns.offset}:{earns.last_seq}"
        await self.bus.js.publish(f"{RECORDS}.{self.service}", _encode(_Batch(self.service, msg_id, records)),
                                  headers={"Nats-Msg-Id": msg_id})  # stored in the stream (or raises)
        if self._pending is not None:
            self.resent += 1
        self._pending = (msg_id, earns)
        self._sent_at = time.monotonic()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Ship until ``stop``; a publish that fails (the bus away) is tried again, nothing is acknowledged."""
        while not stop.is_set():
            try:
                await self.ship_once()
            except Exception as exc:  # noqa: BLE001 - the bus is away: the stretch stays in the spool
                self.last_error = f"{type(exc).__name__}: {exc}"[:200]
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)


class AuditConsumer:
    """The active control plane's side: pull the audit stream, commit through the collector, then acknowledge."""

    def __init__(self, bus: Any, submit: Callable[[list[bytes], Callable[[int], object]], None]) -> None:
        self.bus, self.submit = bus, submit
        self.received = 0
        self.committed = 0
        self.malformed = 0
        self.last_error = ""

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        await prepare(self.bus.js)
        sub = await self.bus.js.pull_subscribe(f"{RECORDS}.>", durable=CONSUMER, stream=AUDIT_STREAM)
        while not stop.is_set():
            try:
                msgs = await sub.fetch(64, timeout=0.5)
            except asyncio.TimeoutError:
                continue
            except Exception as exc:  # noqa: BLE001 - the bus is away: JetStream keeps the messages
                self.last_error = f"{type(exc).__name__}: {exc}"[:200]
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                try:
                    batch = _decode_batch(msg.data)
                    subject_service = msg.subject.rsplit(".", 1)[-1]
                    if batch.source != subject_service:  # a service ships only its own spool
                        raise ValueError(f"{batch.source} on {msg.subject}")
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                    self.malformed += 1
                    self.last_error = f"malformed audit batch: {exc}"[:200]
                    await msg.term()  # never delivered again; nothing of it is acknowledged to a point
                    continue
                self.received += len(batch.records)

                def committed(_appended: int, msg: Any = msg, batch: _Batch = batch) -> None:  # collector's thread
                    loop.call_soon_threadsafe(lambda: loop.create_task(self._acknowledge(msg, batch)))

                self.submit(batch.records, committed)

    async def _acknowledge(self, msg: Any, batch: _Batch) -> None:
        try:
            await self.bus.nc.publish(f"{ACKS}.{batch.source}", batch.msg_id.encode())
            await msg.ack()
            self.committed += len(batch.records)
        except Exception as exc:  # noqa: BLE001 - not acknowledged: re-delivered, stored once
            self.last_error = f"{type(exc).__name__}: {exc}"[:200]
