"""Recorded requests: the decisions of a run's central audit log, each with the signals it saw.

Suggest (:mod:`trustfabric.policy.suggest`) and impact (:mod:`trustfabric.policy.impact`) read
what the floor actually did from ``<run>/audit`` (the SQLite central log). A decision record
(``Kind.DECISION``) names principal, action, resource, the outcome, the reason and the
principal's epoch, and in its ``detail`` the order's ``notional`` and ``symbol``. The signals a
hot-path decision saw are those its decision table was compiled with: the control plane records
each compile as a ``Kind.POLICY_TABLE`` event (principal, epoch, the signal context). A decision
is joined to the latest compile for its principal at or before it, preferring one of the same
epoch; a decision that carries ``detail["signals"]`` itself uses those. A decision with no
recorded signals is kept with ``signals=None`` (the caller says what it assumes).

Records stream from the store in index order and decode into a slim struct, so a million
decisions fit in memory as :class:`RequestClass` counts: identical requests are folded into one
class (principal, action, resource, notional, symbol, signals) with a count.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from trustfabric.audit.events import Kind
from trustfabric.audit.log import DB_FILE, SQLiteAuditStore
from trustfabric.policy.errors import RecordedError
from trustfabric.policy.topology import ACTIONS

_SIGNAL_KEYS = ("posture_ok", "quarantined", "threat_match", "risk_score", "kill_switch", "firm_kill_switch",
                "market_open", "mfa", "step_up_age_s")


class _Slim(msgspec.Struct, frozen=True):
    kind: str
    time_ns: int = 0
    principal: str = ""
    action: str = ""
    resource: str = ""
    decision: str = ""
    reason: str = ""
    epoch: int = 0
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


_decode = msgspec.json.Decoder(_Slim).decode

Signals = tuple  # sorted (name, value) pairs of the signal context


def signals_key(context: dict[str, Any] | None) -> Signals | None:
    """The hashable form of a signal context (request fields dropped); ``None`` stays ``None``."""
    if not isinstance(context, dict):
        return None
    return tuple((k, context[k]) for k in _SIGNAL_KEYS if k in context)


@dataclass(frozen=True)
class RequestClass:
    """Identical recorded requests folded into one: what they asked, the signals they saw, how many."""

    principal: str
    action: str
    resource: str
    notional: float
    symbol: str | None
    signals: Signals | None


@dataclass
class Recorded:
    """What a window of the audit log holds, folded: request classes with counts, outcomes, timings."""

    classes: dict[RequestClass, int] = field(default_factory=dict)
    allowed: dict[RequestClass, int] = field(default_factory=dict)  # of which recorded as allowed
    reasons: dict[RequestClass, str] = field(default_factory=dict)  # last recorded reason per class
    per_second: dict[tuple[str, str, str, int], int] = field(default_factory=dict)  # (p, a, r, second) -> n
    decisions: int = 0
    first_ns: int = 0
    last_ns: int = 0


def _open(directory: Path) -> SQLiteAuditStore:
    directory = Path(directory)
    db = directory if directory.suffix == ".db" else directory / DB_FILE
    if not db.is_file():
        raise RecordedError(f"no audit log at {db}", reason="policy.recorded.missing")
    return SQLiteAuditStore(db)


def _events(store: SQLiteAuditStore) -> Iterator[_Slim]:
    for data in store.payloads((Kind.DECISION, Kind.POLICY_TABLE)):
        try:
            yield _decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # audit verify reports damaged records; a replay skips them


def read(directory: str | Path, *, since_s: float | None = None, principal: str | None = None,
         per_second: bool = False) -> Recorded:
    """Fold the decisions of ``directory``'s central log (the last ``since_s`` seconds of it, when given).

    The window ends at the newest decision in the log (a recorded run is read as it was, whatever
    today's date). ``principal`` keeps one principal (a SPIFFE ID, ``user:NAME`` or its suffix name).
    """
    store = _open(Path(directory))
    try:
        tables: dict[str, list[tuple[int, int, Signals]]] = {}
        decisions: list[_Slim] = []
        for ev in _events(store):
            if ev.kind == Kind.POLICY_TABLE:
                key = signals_key(ev.detail.get("signals"))
                if key is not None:
                    tables.setdefault(ev.principal, []).append((ev.time_ns, ev.epoch, key))
            elif ev.principal and ev.action in ACTIONS and ev.resource:  # access decisions, not business ones
                if principal is None or ev.principal == principal or ev.principal.endswith("/" + principal):
                    decisions.append(ev)
    finally:
        store.close()
    out = Recorded()
    if not decisions:
        return out
    last = max(d.time_ns for d in decisions)
    start = last - int(since_s * 1e9) if since_s is not None else None
    for compiled in tables.values():
        compiled.sort(key=lambda t: t[0])
    times = {p: [t[0] for t in c] for p, c in tables.items()}
    interned: dict[Signals | None, int] = {None: 0}
    by_id: list[Signals | None] = [None]
    joined: dict[tuple[str, int, int], int] = {}  # (principal, epoch, compiles before) -> signals id

    def signals_id(d: _Slim) -> int:
        own = signals_key(d.detail.get("signals")) if "signals" in d.detail else None
        if own is None:
            compiled = tables.get(d.principal)
            if not compiled:
                return 0
            i = bisect.bisect_right(times[d.principal], d.time_ns)
            jkey = (d.principal, d.epoch, i)
            sid = joined.get(jkey)
            if sid is not None:
                return sid
            same = [c for c in compiled[:i] if c[1] == d.epoch]
            pick = same[-1] if same else (compiled[i - 1] if i else None)
            own = pick[2] if pick else None
        else:
            jkey = None
        sid = interned.get(own)
        if sid is None:
            sid = interned[own] = len(by_id)
            by_id.append(own)
        if jkey is not None:
            joined[jkey] = sid
        return sid

    folded: dict[tuple, list] = {}  # (p, a, r, notional, symbol, signals id) -> [count, allowed, reason]
    per_second = out.per_second
    first = None
    for d in decisions:
        if start is not None and d.time_ns < start:
            continue
        notional = d.detail.get("notional", 0) or 0
        symbol = d.detail.get("symbol")
        key = (d.principal, d.action, d.resource, float(notional) if isinstance(notional, (int, float)) else 0.0,
               symbol if isinstance(symbol, str) else None, signals_id(d))
        entry = folded.get(key)
        if entry is None:
            entry = folded[key] = [0, 0, ""]
        entry[0] += 1
        if d.decision == "allow":
            entry[1] += 1
        entry[2] = d.reason
        if per_second:
            sec = (d.principal, d.action, d.resource, d.time_ns // 1_000_000_000)
            per_second[sec] = per_second.get(sec, 0) + 1
        first = d.time_ns if first is None or d.time_ns < first else first
        out.decisions += 1
        out.last_ns = max(out.last_ns, d.time_ns)
    out.first_ns = first or 0
    for (p, a, r, notional, symbol, sid), (count, allowed, reason) in folded.items():
        cls = RequestClass(p, a, r, notional, symbol, by_id[sid])
        out.classes[cls] = count
        if allowed:
            out.allowed[cls] = allowed
        out.reasons[cls] = reason
    return out
