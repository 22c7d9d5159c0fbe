"""The vault inside floor services: the OMS seals its records, settlement reads the trade history, others cannot."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from trustfabric.data.errors import DataError
from trustfabric.data.floor import (
    CertificateOnly,
    ServiceVault,
    read_plain_records,
    write_plain_records,
)
from trustfabric.identity.workload import issue_for_test

from .conftest import FIRM, T0


class Fill(msgspec.Struct):
    cl_ord_id: str
    account: str
    symbol: str
    qty: int


FILLS = [Fill("FIX.CLIENT1.7", "acct-clients", "AAPL", 100), Fill("FIX.CLIENT1.8", "acct-clients", "MSFT", 5)]


def _service_vault(world, tmp_path, service: str) -> ServiceVault:
    vault = ServiceVault(tmp_path, f"prod.{FIRM}", "prod", world.engine, CertificateOnly(), sink=world.sink,
                         clock=world.clock, source=service)
    svc = world.engine.topology.services[service]
    creds = issue_for_test(world.cas["prod"], f"spiffe://prod.{FIRM}/{svc.segment}/{svc.name}", T0 - 60)
    asyncio.run(vault.open(creds))
    return vault


def test_oms_seals_settlement_reads_analytics_tokenized(world, tmp_path):
    oms = _service_vault(world, tmp_path, "oms")
    history = oms.labels("trade-history", "oms")
    assert oms.seal_records("fills", history, FILLS, 1) is not None
    assert oms.seal_records("orders", oms.labels("client-confidential", "oms"), FILLS, 2) is not None
    settlement = _service_vault(world, tmp_path, "settlement")
    assert [r["symbol"] for r in settlement.read_records(history)] == ["AAPL", "MSFT"]
    assert settlement.read_records(oms.labels("client-confidential", "oms")) == []
    assert settlement.stats()["vault_refused"] == 1 and settlement.last_refusal == "policy.no_permit"
    analytics = _service_vault(world, tmp_path, "analytics")
    assert analytics.read_records(history) == []
    rows = analytics.read_records(history, "analyse")
    assert rows[0]["symbol"] == "AAPL" and rows[0]["account"].startswith("tok_")
    for v in (oms, settlement, analytics):
        v.flush()
        assert v.pep.fail_open == 0


def test_a_service_that_may_not_write_seals_nothing(world, tmp_path):
    settlement = _service_vault(world, tmp_path, "settlement")
    assert settlement.seal_records("x", settlement.labels("trade-history", "oms"), FILLS, 1) is None
    assert settlement.last_refusal == "policy.no_permit"
    assert not list(tmp_path.rglob("*.sealed"))


def test_tokens_are_not_taken_by_a_service_vault():
    with pytest.raises(DataError):
        CertificateOnly().verify("x", "aud")


def test_perimeter_plain_records_roundtrip(tmp_path):
    write_plain_records(tmp_path, "oms", "trade-history", FILLS, 1)
    assert [r["qty"] for r in read_plain_records(tmp_path, "oms", "trade-history")] == [100, 5]
