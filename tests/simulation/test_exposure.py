"""Data exposure: the files on disk, a backup copy and another segment's key reach plain records only
on a floor that keeps them plain; sealed objects give nothing."""

from __future__ import annotations

import json

from trustfabric.data.envelope import encode, seal
from trustfabric.data.floor import write_plain_records
from trustfabric.data.keystore import KekStore
from trustfabric.data.labels import Labels
from trustfabric.data.objects import ObjectStore
from trustfabric.simulation.exposure import data_exposure
from trustfabric.simulation.results import ScenarioResult, summarize

RECORDS = [{"cl_ord_id": "FIX.C.1", "account": "acct-clients", "symbol": "AAPL", "qty": 1},
           {"cl_ord_id": "FIX.C.2", "account": "acct-clients", "symbol": "MSFT", "qty": 2}]


def test_perimeter_plain_records_are_exposed(tmp_path):
    write_plain_records(tmp_path, "oms", "trade-history", RECORDS, 1)
    exposure = data_exposure(tmp_path, "analytics", "prod")
    assert (exposure["disk"], exposure["backup"], exposure["other_keys"]) == (2, 2, 0)
    assert exposure["records_exposed"] == 4


def test_sealed_records_expose_nothing(tmp_path):
    labels = Labels("trade-history", "prod", "oms")
    kek = KekStore(tmp_path / "vault-keys").current("oms", "prod", create=True)
    body = b"\n".join(json.dumps(r).encode() for r in RECORDS)
    ObjectStore(tmp_path / "vault").put(seal("fills-1", labels, body, kek))
    exposure = data_exposure(tmp_path, "analytics", "prod")
    assert exposure["records_exposed"] == 0
    assert b"FIX.C.1" not in encode(seal("x", labels, body, kek))


def test_summary_counts_records_exposed_per_mode():
    rows = [ScenarioResult(name="a", mode=m, attempts=1, successes=0, blast_radius=0, detected=False, ttd_ms=None,
                           contained=False, ttc_ms=None, records_exposed=n) for m, n in (("perimeter", 4),
                                                                                        ("zero-trust", 0))]
    summary = summarize(rows)
    assert summary["perimeter"]["records_exposed"] == 4 and summary["zero-trust"]["records_exposed"] == 0
