"""The state every control plane of a floor shares, on PostgreSQL (127.0.0.1:5432, database ``test``): signed
policy versions, the signal state, incidents and alerts. Each behaves as its embedded store does, two control
planes see one record, and an unreachable server is a typed refusal. Each test has a fresh schema.
"""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg import sql

from tests.policy.test_bundle import World, _refused
from trustfabric.audit import postgres
from trustfabric.errors import ConfigError, TrustFabricError
from trustfabric.policy.bundle import PolicyVersions
from trustfabric.response.alerts import Alert
from trustfabric.response.errors import IncidentStoreError
from trustfabric.response.incidents import Incident, PostgresIncidentStore, SqliteIncidentStore, open_incident_store
from trustfabric.signals.state import SignalState, load_state, save_state

DSN = "postgresql://postgres@127.0.0.1:5432/test"
DOWN = "postgresql://postgres@127.0.0.1:1/test"
ALGO = "spiffe://prod.acme.example/algo/algo-momentum"


@pytest.fixture
def schema(monkeypatch):
    name = f"tf_test_{uuid.uuid4().hex[:10]}"
    postgres.migrate(DSN, name)
    monkeypatch.setenv("TRUSTFABRIC_DATABASE_URL", DSN)
    monkeypatch.setenv("TRUSTFABRIC_DATABASE_SCHEMA", name)
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def test_policy_versions_live_in_the_database_and_keep_every_refusal(schema, tmp_path):
    world = World(tmp_path)  # its PolicyVersions reads the environment: PostgreSQL
    v1 = world.signed(world.authored(), "bob", "carol")
    world.activate(v1, engine=world.engine)
    assert not (tmp_path / "home" / "policy" / "versions.json").exists()  # the record is in the database
    other = PolicyVersions(tmp_path / "other-host" / "policy")  # another control plane, no local files
    assert other.active_version() == 1 and other.signed(1).digest == v1.digest
    bundle, directory = other.active_bundle(world.life.keys.all())  # unpacked on that host from the signed bundle
    assert bundle.version == 1 and (directory / "floor.toml").exists()
    v2 = world.signed(world.authored(), "bob", "dave")
    world.activate(v2, engine=world.engine)
    _refused(lambda: world.activate(v1, engine=world.engine), "policy.bundle.stale")
    world.life.rollback(None, world.person("dave"), now=world.now(), reason="bad fills", engine=world.engine)
    assert other.active_version() == 1 and other.history()[-1]["kind"] == "rollback"


def test_two_control_planes_activating_the_same_version_one_is_refused(schema, tmp_path):
    world = World(tmp_path)
    v1 = world.signed(world.authored(), "bob", "carol")
    planes = [PolicyVersions(tmp_path / f"plane-{i}" / "policy") for i in range(2)]
    outcomes: list[str] = []

    def record(versions: PolicyVersions) -> None:
        try:
            versions.record(v1, by="user:dave", reason="race", now=world.now())
            outcomes.append("ok")
        except TrustFabricError as exc:
            outcomes.append(exc.reason)

    threads = [threading.Thread(target=record, args=(p,)) for p in planes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(outcomes) == ["ok", "policy.bundle.stale"] and len(planes[0].history()) == 1


def test_the_signal_state_is_one_row_every_control_plane_reads(schema, tmp_path):
    assert load_state(tmp_path / "ignored.json") == SignalState()
    state = SignalState(risk_scores={ALGO: 85}, kill_switches=[("firm", "acme", "halt")])
    save_state(tmp_path / "ignored.json", state)
    assert not (tmp_path / "ignored.json").exists()
    assert load_state(tmp_path / "elsewhere.json").risk_scores == {ALGO: 85}
    save_state(tmp_path / "x.json", SignalState())
    with psycopg.connect(DSN, autocommit=True, options=f"-c search_path={schema}") as conn:
        assert conn.execute("SELECT version FROM signal_state").fetchone()[0] == 2


def test_the_signal_state_refuses_an_unreachable_server(schema, monkeypatch, tmp_path):
    monkeypatch.setenv("TRUSTFABRIC_DATABASE_URL", DOWN)
    with pytest.raises(ConfigError) as down:
        load_state(tmp_path / "s.json")
    assert down.value.reason == "db.unreachable"


def _incident(i: int, released: bool = False) -> Incident:
    alert = Alert(alert_id=f"a{i}", severity="high", confidence=0.9, principal=ALGO, category="lateral_movement",
                  detector="segment", evidence=(), first_seen=99.0 + i, detected_at=100.0 + i)
    return Incident(incident_id=f"inc-{i}", principal=ALGO, alerts=(alert,), opened_at=100.0 + i, ttd_ms=1.0,
                    released=released)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_incidents_and_alerts_behave_alike_on_both_stores(kind, schema, tmp_path):
    store = SqliteIncidentStore(tmp_path / "r.db") if kind == "sqlite" else open_incident_store(tmp_path / "r.db")
    assert isinstance(store, SqliteIncidentStore if kind == "sqlite" else PostgresIncidentStore)
    try:
        for i in range(3):
            store.put(_incident(i))
            store.add_alert(_incident(i).alerts[0], "quarantine")
        store.put(_incident(1, released=True))  # replaced, not added
        assert [i.incident_id for i in store.incidents()] == ["inc-2", "inc-1", "inc-0"]
        assert [i.incident_id for i in store.incidents(open_only=True)] == ["inc-2", "inc-0"]
        assert store.get("inc-1").released and store.get("nope") is None
        assert [a.alert_id for a, _ in store.alerts(since=101.0)] == ["a2", "a1"]
        assert store.alerts(principal="spiffe://prod.acme.example/other") == []
    finally:
        store.close()


def test_incidents_refuse_an_unreachable_server(schema):
    with pytest.raises(IncidentStoreError) as down:
        PostgresIncidentStore(DOWN, schema)
    assert down.value.reason == "db.unreachable"
