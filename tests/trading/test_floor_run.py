"""The running floor: real processes on 127.0.0.1, zero-trust and perimeter, the attack, impostors, shutdown."""

import asyncio
import json
import os
import subprocess
import sys

import pytest

from trustfabric.audit.spool import segment_paths
from trustfabric.trading.launcher import Floor, floor_summary
from trustfabric.trading.demo import _tail, run_demo

from tests.trading.processes import alive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def _cli(home, *args):
    env = dict(os.environ, TRUSTFABRIC_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "trustfabric.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


async def test_zero_trust_demo_trades_refuses_the_attack_leaves_no_process_and_its_log_traces_an_order(tmp_path):
    """One demo run shows the floor's outcome and its audit: collected, verifiable, an order traced end to end."""
    result = await run_demo(tmp_path, duration_s=10.0, seed=7)
    for key in ("orders_submitted", "orders_filled", "risk_rejects", "denied_hops", "fail_open", "attack_attempts",
                "attack_successes"):
        assert key in result
    assert result["orders_submitted"] > 0 and result["orders_filled"] > 0
    assert result["attack_attempts"] >= 10 and result["attack_successes"] == 0
    assert result["fail_open"] == 0 and result["denied_hops"] > 0
    assert all(not a["succeeded"] for a in result["attempts"])
    assert {a["scenario"] for a in result["attempts"]} >= {"venue_direct", "settlement_read", "other_streams",
                                                            "risk_bypass", "flood"}
    assert any(i["principal"].endswith("/algo-momentum") and i["contained"] for i in result["incidents"])
    assert result["services"]["oms"]["positions"] > 0
    for name in ("oms", "pre-trade-risk", "order-router", "venue-a", "control-plane"):
        assert segment_paths(tmp_path / "spool" / name), name  # audit records are on disk
    manifest = json.loads((tmp_path / "floor" / "runtime.json").read_text())
    assert manifest["mode"] == "zero-trust"
    assert manifest["services"]["oms"]["spiffe_id"] == "spiffe://prod.acme.example/oms/oms"
    pids = [s["pid"] for s in manifest["services"].values()]
    assert not [p for p in pids if alive(p)]
    # the audit of the same run: collected centrally, verifiable, every spool shipped and signed
    assert result["fills"] > 0
    assert result["audit_collected"] > 0 and not result["audit_error"]
    verify = _cli(tmp_path, "audit", "verify", "--require-signed")
    assert verify.returncode == 0, verify.stderr + verify.stdout
    assert "0 records beyond the last signed tree head" in verify.stdout
    # an order traced end to end: intent, risk check, route, fill and settlement under one trace id
    fills = _cli(tmp_path, "audit", "query", "--action", "oms.fill", "--json")
    assert fills.returncode == 0, fills.stderr
    traced = [json.loads(line)["trace_id"] for line in fills.stdout.splitlines() if line.strip()]
    assert traced, "no fill in the central log"
    settled = {json.loads(line)["trace_id"] for line in
               _cli(tmp_path, "audit", "query", "--action", "settlement.settle", "--json").stdout.splitlines()}
    order = next(t for t in traced if t in settled)
    life = _cli(tmp_path, "audit", "query", "--trace", order, "--json")
    actions = {json.loads(line)["action"] for line in life.stdout.splitlines() if line.strip()}
    assert {"order.intent", "risk.check", "route", "oms.fill", "settlement.settle"} <= actions, actions
    assert (tmp_path / "audit" / "audit.db").exists()


async def test_perimeter_mode_trades_on_plain_tcp(tmp_path):
    floor = Floor(tmp_path, "perimeter", services=("settlement", "oms", "venue-a", "venue-b", "order-router",
                                                   "market-data", "pre-trade-risk", "algo-momentum"))
    await floor.start()
    try:
        assert floor.plane is None and floor.server.bootstrap_port == 0
        assert await floor.wait_for(lambda: floor_summary(floor)["orders_filled"] > 0, 30.0, 0.2)
        assert floor_summary(floor)["decisions_allowed"] == 0  # no per-hop authorization at all
    finally:
        await floor.stop()
    assert not [p for p in floor.pids() if alive(p)]


async def test_a_service_started_with_another_services_identity_is_refused(tmp_path):
    floor = Floor(tmp_path, "zero-trust", services=("settlement",))
    await floor.start()
    try:
        floor.promote("venue-a")
        # the venue's code claiming the algo's identity, with a join token for that identity
        impostor = await floor.launch("venue-a", floor.boot_line("venue-a", identity="algo-momentum"),
                                      identity="algo-momentum", timeout_s=20.0)
        assert impostor.status == "refused" and "attest.unpromoted_digest" in impostor.detail
        # the algo's identity with the algo's join token but the venue's own release digest
        token = floor.plane.issue_join_token("algo-momentum")
        floor.promote("algo-momentum")
        wrong = await floor.launch("venue-a", floor.boot_line("venue-a", identity="algo-momentum", join_token=token),
                                   identity="algo-momentum", timeout_s=20.0)
        assert wrong.status == "refused"
        # a replayed join token is refused even for the right code
        again = await floor.launch("algo-momentum", floor.boot_line("algo-momentum", join_token=token),
                                   timeout_s=20.0)
        assert again.status == "refused" and "bootstrap.join_token_reused" in again.detail
        for p in (impostor, wrong, again):
            await asyncio.wait_for(p.proc.wait(), 10.0)
        assert floor.plane.counters["joins"] == 1 and floor.plane.counters["join_refusals"] >= 3
    finally:
        await floor.stop()


@pytest.mark.timeout(180)
def test_demo_json_has_the_fields_the_simulator_comparison_and_a_working_verify_command(tmp_path):
    env = dict(os.environ, TRUSTFABRIC_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "trustfabric.cli", "demo", "--duration", "6", "--json",
                          "--report", str(tmp_path / "report"), "--simulate-scenario", "algo-direct-venue"],
                         capture_output=True, text=True, env=env, timeout=170)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("orders_submitted", "orders_filled", "risk_rejects", "denied_hops", "fail_open", "attack_attempts",
                "attack_successes"):
        assert isinstance(result[key], int)
    assert result["attack_successes"] == 0 and result["fail_open"] == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["attack_attempts"] == result["attack_attempts"] and "denied_by_reason" in summary
    readme = (tmp_path / "report" / "README.md").read_text()
    for section in ("## the floor", "## denied hops by reason", "## the attack", "## incidents",
                    "## threat simulator: zero trust vs perimeter"):
        assert section in readme
    simulation = result["simulation"]
    assert set(simulation["summary"]) == {"zero-trust", "perimeter"}
    zt, perimeter = simulation["summary"]["zero-trust"], simulation["summary"]["perimeter"]
    assert zt["successes"] == 0 and zt["blast_radius"] == 0 and zt["ttd_ms_p99"] is not None
    assert perimeter["successes"] > 0  # the edge gateway lets the compromised agent reach the venue
    assert {(r["name"], r["mode"]) for r in simulation["scenarios"]} == {("algo-direct-venue", "zero-trust"),
                                                                       ("algo-direct-venue", "perimeter")}
    assert simulation["report"] == str(tmp_path / "report" / "simulate" / "report.html")
    written = json.loads((tmp_path / "report" / "simulate" / "results.json").read_text())
    assert written["summary"] == simulation["summary"]
    # the simulator's full output, both modes and the per-hop figure, written by this same run
    # (tests/simulation/test_simulate_cli.py runs the 'simulate' command itself on one mode)
    assert simulation["hop_added_us_p50"] is not None and written["hop_added_us_p50"] is not None
    rows = {(r["name"], r["mode"]): r for r in written["scenarios"]}
    assert set(rows) == {("algo-direct-venue", "zero-trust"), ("algo-direct-venue", "perimeter")}
    for row in rows.values():
        assert {"name", "mode", "attempts", "successes", "blast_radius", "detected", "ttd_ms", "contained",
                "ttc_ms"} <= row.keys()
    for mode in ("zero-trust", "perimeter"):
        assert {"successes", "blast_radius", "ttd_ms_p99", "ttc_ms_p99"} <= written["summary"][mode].keys()
    zt_row, perimeter_row = rows[("algo-direct-venue", "zero-trust")], rows[("algo-direct-venue", "perimeter")]
    assert zt_row["successes"] == 0 and zt_row["blast_radius"] == 0 and zt_row["contained"]
    assert perimeter_row["successes"] > 0 and perimeter_row["blast_radius"] > 0  # the venue orders got through
    html = (tmp_path / "report" / "simulate" / "report.html").read_text()
    assert "blast_radius.png" in html and "algo-direct-venue" in html
    for chart in ("blast_radius.png", "detect_contain.png", "hop_latency.png"):
        assert (tmp_path / "report" / "simulate" / chart).exists(), chart
    # the printed verify command works as printed, from another directory, without TRUSTFABRIC_HOME
    argv = result["verify_command"].split()
    assert argv[:3] == ["trustfabric", "audit", "verify"]
    clean_env = {k: v for k, v in os.environ.items() if k != "TRUSTFABRIC_HOME"}
    verify = subprocess.run([sys.executable, "-m", "trustfabric.cli", *argv[1:]], capture_output=True, text=True,
                            env=clean_env, cwd=tmp_path / "report", timeout=60)
    assert verify.returncode == 0, verify.stderr
    assert "intact" in verify.stdout
    latest = subprocess.run([sys.executable, "-m", "trustfabric.cli", "audit", "verify", "--run", "latest"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert latest.returncode == 0 and "intact" in latest.stdout, latest.stderr


async def test_the_attackers_stderr_is_drained_to_its_last_line():
    """Why an attacker stopped is its LAST stderr line, however much it wrote first (line by line)."""
    script = "import sys\nfor _ in range(3000): print('x' * 40, file=sys.stderr)\nraise SystemExit('attacker.reason')"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    kept = await asyncio.wait_for(_tail(proc.stderr, keep=4096), 20)
    await proc.wait()
    assert len(kept) <= 4096 and kept.decode().splitlines()[-1] == "attacker.reason"
