"""Incident stores: same answers in memory and SQLite; sqlite3 failures become typed errors."""

from __future__ import annotations

import pytest

from trustfabric.response.alerts import Alert, EvidenceLink
from trustfabric.response.errors import IncidentStoreError
from trustfabric.response.incidents import Incident, MemoryIncidentStore, SqliteIncidentStore, summarize


def _alert(i: int, principal: str) -> Alert:
    return Alert(alert_id=f"al-{i}", severity="high", confidence=0.9, principal=principal,
                 category="lateral.cross_segment", detector="cross_segment",
                 evidence=(EvidenceLink(f"ev-{i}", "pep:x", i),), first_seen=100.0 + i, detected_at=100.5 + i)


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryIncidentStore()
    else:
        s = SqliteIncidentStore(tmp_path / "r.db")
        yield s
        s.close()


def test_store_round_trip_and_queries(store):
    for i in range(5):
        store.add_alert(_alert(i, "p1" if i % 2 else "p2"), "quarantine" if i % 2 else "alert")
    a = Incident(incident_id="inc-1", principal="p1", alerts=(_alert(1, "p1"),), opened_at=101.5, ttd_ms=500.0)
    store.put(a)
    store.put(Incident(incident_id="inc-2", principal="p2", alerts=(), opened_at=200.0, ttd_ms=None,
                       ttc_ms=3.0, contained=True, released=True, released_by="dave", released_at=300.0))
    store.put(a.__class__(**{**{f: getattr(a, f) for f in a.__struct_fields__}, "ttc_ms": 2.0, "contained": True}))
    assert store.get("inc-1").contained and store.get("inc-1").alerts[0].evidence[0].seq == 1
    assert [i.incident_id for i in store.incidents()] == ["inc-2", "inc-1"]
    assert [i.incident_id for i in store.incidents(open_only=True)] == ["inc-1"]
    assert [i.incident_id for i in store.incidents(principal="p2")] == ["inc-2"]
    assert [a.alert_id for a, _ in store.alerts(principal="p1")] == ["al-3", "al-1"]
    assert [a.alert_id for a, _ in store.alerts(since=103.0)] == ["al-4", "al-3"]
    assert len(store.alerts(limit=2)) == 2
    assert store.get("nope") is None
    s = summarize(store.incidents())
    assert s["incidents"] == 2 and s["contained"] == 2 and s["released"] == 1 and s["ttc_ms_p99"] == 3.0


def test_unopenable_sqlite_path_is_a_typed_error(tmp_path):
    with pytest.raises(IncidentStoreError) as exc:
        SqliteIncidentStore(tmp_path)  # a directory
    assert exc.value.reason == "response.store_failed"


def test_a_closed_store_raises_a_typed_error(tmp_path):
    s = SqliteIncidentStore(tmp_path / "r.db")
    s.close()
    with pytest.raises(IncidentStoreError):
        s.incidents()
