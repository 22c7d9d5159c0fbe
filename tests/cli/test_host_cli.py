"""``trustfabric host enrol | serve`` and ``control serve`` through the CLI app: help, refusals, the offline enrolment.

With no floor running, ``host enrol`` is decided over the store (embedded SQLite here): a trader is
refused and nothing is written; a security officer's enrolment registers the posture keys, marks the
hosts as run by their runner, issues join tokens any control plane on the store redeems, and writes
the enrolment directory with its secrets 0600. The runner refuses an enrolment of another host.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.people import PASSWORD, Pool
from trustfabric.cli import app
from trustfabric.control.joins import JoinTokens
from trustfabric.control.plane import RUNNER_META
from trustfabric.identity.plane import IdentityPlane
from trustfabric.policy.topology import Topology
from trustfabric.trading import deployment as D
from trustfabric.trading.runner import HostRunner

runner = CliRunner()
MACHINES = Path(__file__).parents[2] / "deploy" / "machines.toml"


@pytest.fixture
def machines(tmp_path) -> Path:
    """The example without its database: this test's floor is the embedded one."""
    plain = tmp_path / "machines.toml"
    plain.write_text("\n".join(line for line in MACHINES.read_text().splitlines() if not line.startswith("database")))
    return plain


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRUSTFABRIC_PASSWORD", PASSWORD)
    monkeypatch.delenv("TRUSTFABRIC_DATABASE_URL", raising=False)
    assert runner.invoke(app, ["ca", "init"]).exit_code == 0
    return tmp_path / "home"


def test_help_on_every_command():
    for args in (["control", "serve"], ["host", "enrol"], ["host", "serve"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, args


def test_control_serve_refuses_a_file_without_fixed_ports_and_a_floor_without_database(machines):
    result = runner.invoke(app, ["control", "serve", "--deployment", str(MACHINES.parent / "three-hosts.toml"),
                                 "--replica", "cp-1"])
    assert result.exit_code == 2 and "deploy.ports_required" in result.stderr
    plain = machines
    result = runner.invoke(app, ["control", "serve", "--deployment", str(plain), "--replica", "cp-9"])
    assert result.exit_code == 2 and "deploy.unknown_replica" in result.stderr
    result = runner.invoke(app, ["control", "serve", "--deployment", str(plain), "--replica", "cp-1"])
    assert result.exit_code == 2 and "config.floor.replicas" in result.stderr


def test_enrolment_with_no_floor_running_is_an_officers_and_writes_the_host_its_keys_and_tokens(home, tmp_path,
                                                                                               machines):
    with IdentityPlane(home) as plane:  # the people enrolled (and their codes taken) while the store is open
        officer = Pool(plane.users()).args()
        trader = Pool(plane.users(), "trader", "trader").args()
    out = tmp_path / "enrol-venues"
    refused = runner.invoke(app, ["host", "enrol", "venues", "--deployment", str(machines), "--out", str(out),
                                  *trader])
    assert refused.exit_code != 0 and refused.stderr.startswith("operator.") and not out.exists()
    done = runner.invoke(app, ["host", "enrol", "venues", "--deployment", str(machines), "--out", str(out),
                               "--ttl", "600", *officer])
    assert done.exit_code == 0 and "in the store" in done.stdout, done.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for secret in (out / "enrolment.json", out / "keys" / "venue-a.pem", out / "keys" / "venue-b.pem"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    enrolment = json.loads((out / "enrolment.json").read_text())
    tokens = json.loads(enrolment["tokens"])
    assert sorted(tokens) == ["venue-a", "venue-b"] and len(bytes.fromhex(enrolment["approval_key"])) == 32
    with IdentityPlane(home) as plane:
        assert plane.store.get_meta(RUNNER_META + "venue-a") == "venues"
        assert {host for host, _raw in plane.store.list_host_keys()} >= {"venue-a", "venue-b"}
        topology = Topology.load(Topology.default_path())
        JoinTokens(plane.store).redeem(tokens["venue-a"], topology.spiffe_id("venue-a"), plane.clock.now())
    # the runner takes this enrolment for its host only
    with pytest.raises(Exception) as refused_host:
        HostRunner(tmp_path / "md-home", D.load(MACHINES, topology), "md-algos", out)
    assert getattr(refused_host.value, "reason", "") == "host.enrolment"
    HostRunner(tmp_path / "venues-home", D.load(MACHINES, topology), "venues", out)  # its own: accepted


def test_host_serve_refuses_a_missing_enrolment(tmp_path, machines):
    result = runner.invoke(app, ["host", "serve", "--host", "venues", "--deployment", str(machines), "--enrolment",
                                 str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "host.enrolment" in result.stderr
