"""The control plane's outbox to the bus: in order, each revocation retried until acknowledged, never skipped."""

from __future__ import annotations

import asyncio

from trustfabric.control.nats_bus import RevocationOutbox


class FlakyBus:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.stored: list[str] = []

    async def publish_revocation(self, kind, value, reason, *, msg_id):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("nats: no servers available")
        self.stored.append(msg_id)
        return True


async def test_a_bus_that_is_away_gets_every_revocation_in_order_once_it_is_back():
    bus = FlakyBus(failures=4)
    outbox = RevocationOutbox(bus, max_backoff_s=0.01)  # type: ignore[arg-type]
    task = asyncio.get_running_loop().create_task(outbox.run())
    try:
        for i in range(3):
            outbox.put("spiffe_id", f"spiffe://prod.acme.example/algo/a{i}", "quarantine", f"m{i}")
        for _ in range(200):
            if not outbox.pending:
                break
            await asyncio.sleep(0.01)
        assert bus.stored == ["m0", "m1", "m2"] and outbox.published == 3 and outbox.retries == 4
        assert "no servers" in outbox.last_error
    finally:
        task.cancel()


async def test_a_publish_that_hangs_is_given_up_and_retried():
    class HangingOnce(FlakyBus):
        async def publish_revocation(self, kind, value, reason, *, msg_id):
            if not self.stored and self.failures:
                self.failures -= 1
                await asyncio.sleep(10)
            return await super().publish_revocation(kind, value, reason, msg_id=msg_id)

    bus = HangingOnce(failures=1)
    outbox = RevocationOutbox(bus, publish_timeout_s=0.05, max_backoff_s=0.01)  # type: ignore[arg-type]
    task = asyncio.get_running_loop().create_task(outbox.run())
    try:
        outbox.put("serial", "42", "revoked", "m0")
        for _ in range(200):
            if not outbox.pending:
                break
            await asyncio.sleep(0.01)
        assert bus.stored == ["m0"] and outbox.retries == 1
    finally:
        task.cancel()
