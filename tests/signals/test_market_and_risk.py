"""Calendar, kill-switch board and risk storage on their own."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from trustfabric.signals.errors import MarketSignalError, RiskScoreError
from trustfabric.signals.market import KillSwitchBoard, MarketCalendar
from trustfabric.signals.risk import MemoryRiskStore, SqliteRiskStore


def _ts(y, m, d, hh, mm):
    return datetime(y, m, d, hh, mm, tzinfo=timezone.utc).timestamp()


def test_calendar_regular_hours_weekends_and_holidays():
    cal = MarketCalendar(holidays=frozenset({date(2026, 7, 3)}))
    assert cal.is_open(_ts(2026, 7, 1, 15, 0))       # Wed 11:00 New York
    assert not cal.is_open(_ts(2026, 7, 1, 13, 0))   # 09:00, before the open
    assert not cal.is_open(_ts(2026, 7, 1, 20, 30))  # 16:30, after the close
    assert not cal.is_open(_ts(2026, 7, 4, 15, 0))   # Saturday
    assert not cal.is_open(_ts(2026, 7, 3, 15, 0))   # holiday
    assert MarketCalendar.around_the_clock().is_open(_ts(2026, 7, 4, 3, 0))


@pytest.mark.parametrize("raw", [{"tz": "Mars/Olympus"}, {"open": "25:00"}, {"open": "17:00", "close": "09:00"},
                                 {"holidays": ["not-a-date"]}])
def test_bad_calendar_is_refused(raw):
    with pytest.raises(MarketSignalError):
        MarketCalendar.from_dict(raw)


def test_kill_switch_board_strictest_wins():
    board = KillSwitchBoard(firm="acme.example")
    assert board.effective("a", "acct") == "ACTIVE"
    board.set("account", "acct", "REDUCING")
    assert board.effective("a", "acct") == "REDUCING"
    board.set("agent", "a", "HALTED")
    assert board.effective("a", "acct") == "HALTED"
    assert board.effective("b", "other") == "ACTIVE"
    board.set("firm", "", "REDUCING")
    assert board.effective("b", "other") == "REDUCING"
    with pytest.raises(MarketSignalError):
        board.set("agent", "a", "halted")


@pytest.mark.parametrize("store_factory", [lambda p: MemoryRiskStore(), lambda p: SqliteRiskStore(p / "risk.db")])
def test_risk_store_keeps_scores_and_refuses_out_of_range(tmp_path, store_factory):
    store = store_factory(tmp_path)
    store.set("p", 42, 1.0, "analytics")
    assert store.get("p") == 42 and store.get("q") == 0
    for bad in (-5, 101, 3.5, "7"):
        with pytest.raises(RiskScoreError):
            store.set("p", bad, 2.0, "analytics")
    assert store.all() == {"p": 42}


def test_sqlite_risk_store_persists(tmp_path):
    SqliteRiskStore(tmp_path / "r.db").set("p", 77, 1.0, "x")
    assert SqliteRiskStore(tmp_path / "r.db").get("p") == 77
