"""``bench vault`` measures through the real vault and reports every figure (no timing asserted)."""

from trustfabric.bench.vault import run


def test_bench_vault_reports_its_figures():
    result = run(reads=20, big=2, unwraps=3)
    for name in ("read_cached_us_p50", "plain_read_us_p50", "seal_mb_s", "open_mb_s", "aesgcm_mb_s",
                 "unwrap_ms_p50"):
        assert result[name] > 0, name
    assert result["verified"] is True and result["fail_open"] == 0
