"""Recorded floor traffic made to order: decision records as enforcement points write them, for replays.

:func:`paper_trading` is a new algo's onboarding window (streams, connects, orders with notionals
and symbols) and :func:`floor_day` a large mix over the floor's existing flows (allowed, and some
denied lateral attempts), both as the ``Kind.DECISION`` events the collector stores
(:func:`trustfabric.audit.compact.decision_event`, the very records a PEP spools) plus the
``Kind.POLICY_TABLE`` compile records carrying the signals. :func:`write` ingests them into a
central log directory in batches. Randomness is passed in (a seeded :class:`random.Random`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from pathlib import Path

from trustfabric.audit.compact import decision_event
from trustfabric.audit.events import AuditEventV1, Kind, encode_event
from trustfabric.audit.log import open_log
from trustfabric.policy.topology import Topology
from trustfabric.policy.context import HEALTHY_WORKLOAD

SOURCE = "synthetic-pep"
_PREFIX = "syn"


def table_compiled(seq: int, time_ns: int, principal: str, epoch: int = 0, **signals: object) -> AuditEventV1:
    ctx = HEALTHY_WORKLOAD.context()
    ctx.update(signals)
    return AuditEventV1(event_id=f"{_PREFIX}-t{seq}", source="synthetic-control", seq=seq, time_ns=time_ns,
                        kind=Kind.POLICY_TABLE, principal=principal, epoch=epoch,
                        detail={"global_epoch": 1, "signals": ctx})


def decision(seq: int, time_ns: int, principal: str, action: str, resource: str, allowed: bool,
              reason: str, notional: float = 0.0, symbol: str | None = None, epoch: int = 0) -> AuditEventV1:
    row = (principal, action, resource, allowed, reason, epoch, (), "", "", None,
           time_ns / 1e9, notional, symbol)
    return decision_event(SOURCE, _PREFIX, seq, time_ns, row)


def paper_trading(topology: Topology, service: str, *, seconds: int = 60, start_s: float = 1_700_000_000.0,
                  rng: random.Random | None = None) -> Iterator[AuditEventV1]:
    """``service``'s window: it has no grant yet, so every request is recorded as ``policy.no_permit``."""
    rng = rng or random.Random(7)
    svc = topology.services[service]
    key = topology.spiffe_id(service)
    seq = 0
    yield table_compiled(1, int(start_s * 1e9), key)
    for target in ("svc/market-data", "svc/pre-trade-risk"):
        seq += 1
        yield decision(seq, int(start_s * 1e9) + seq, key, "connect", target, False, "policy.no_permit")
    symbols = sorted(svc.symbols)
    for second in range(seconds):
        base = int((start_s + second) * 1e9)
        for sym in symbols:
            for tick in range(rng.randint(5, 20)):
                seq += 1
                yield decision(seq, base + tick * 1000 + seq, key, "subscribe", f"md/{sym}", False,
                                "enforcement.not_in_table")
        for order in range(rng.randint(0, 8)):
            seq += 1
            sym = rng.choice(symbols)
            yield decision(seq, base + 500_000_000 + order * 1000, key, "submit_order", "risk/orders", False,
                            "policy.no_permit", float(rng.randrange(1_000, 120_000)), sym)
        if second % 10 == 0:
            seq += 1
            yield decision(seq, base + 900_000_000, key, "cancel_order", "risk/orders", False, "policy.no_permit",
                            0.0, rng.choice(symbols))


def floor_day(topology: Topology, count: int, *, start_s: float = 1_700_000_000.0,
              rng: random.Random | None = None) -> Iterator[AuditEventV1]:
    """``count`` decisions over the floor's declared flows (97%), lateral attempts (2%) and a risky signal (1%)."""
    rng = rng or random.Random(11)
    flows = sorted((topology.resolve(f.principal).key, f.action, f.resource) for f in topology.flows
                   if not f.principal.startswith("role:"))
    keys = sorted(topology.spiffe_id(name) for name in topology.services)
    seq = 0
    for key in keys:
        seq += 1
        yield table_compiled(seq, int(start_s * 1e9), key)
        seq += 1
        yield table_compiled(seq, int((start_s + 1) * 1e9), key, epoch=1, risk_score=75)
    resources = sorted(topology.resources)
    symbols = topology.symbols
    for n in range(count):
        t = int((start_s + 2 + n * 86_400 / max(count, 1)) * 1e9)
        roll = rng.random()
        if roll < 0.02:
            p = rng.choice(keys)
            r = rng.choice(resources)
            a = topology.resources[r].actions[0]
            yield decision(n + 1, t, p, a, r, False, "enforcement.not_in_table")
            continue
        p, a, r = flows[rng.randrange(len(flows))]
        notional = float(rng.randrange(100, 200_000, 100)) if a == "submit_order" else 0.0
        symbol = rng.choice(symbols) if a == "submit_order" else None
        if roll < 0.03:  # the principal's risk rose (epoch 1): the guards deny what they cover
            yield decision(n + 1, t, p, a, r, False, "policy.forbid", notional, symbol, epoch=1)
        else:
            yield decision(n + 1, t, p, a, r, True, "policy.allow", notional, symbol)


def write(directory: str | Path, events: Iterable[AuditEventV1], *, batch: int = 20_000) -> int:
    """Ingest ``events`` into the central log under ``directory``; returns how many were stored."""
    log = open_log(Path(directory))
    stored = 0
    try:
        chunk: list[bytes] = []
        tables: list[bytes] = []
        for event in events:
            (tables if event.kind == Kind.POLICY_TABLE else chunk).append(encode_event(event))
            if len(chunk) >= batch:
                stored += log.ingest(tables + chunk)
                chunk, tables = [], []
        if chunk or tables:
            stored += log.ingest(tables + chunk)
    finally:
        log.close()
    return stored
