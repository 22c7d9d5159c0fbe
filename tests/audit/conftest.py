"""Shared helpers for the audit tests: a central log on a temp directory and event factories."""

from __future__ import annotations

import pytest

from trustfabric.audit.events import AuditEventV1, encode_event
from trustfabric.audit.log import AuditLog, MemoryAuditStore, open_log
from trustfabric.audit.treehead import TreeHeadSigner
from trustfabric.clock import FakeClock


def event(source: str, seq: int, **fields) -> AuditEventV1:
    fields.setdefault("kind", "decision")
    return AuditEventV1(event_id=f"{source}-{seq}", source=source, seq=seq,
                        time_ns=1_790_000_000_000_000_000 + seq * 1_000_000, **fields)


def payloads(source: str, start: int, stop: int, **fields) -> list[bytes]:
    return [encode_event(event(source, s, **fields)) for s in range(start, stop)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sqlite_log(tmp_path, clock) -> AuditLog:
    log = open_log(tmp_path / "audit", clock, checkpoint_every=10, checkpoint_interval_s=3600)
    yield log
    log.close()


@pytest.fixture
def memory_log(clock) -> AuditLog:
    return AuditLog(MemoryAuditStore(), TreeHeadSigner.generate(), clock, checkpoint_every=10,
                    checkpoint_interval_s=3600)
