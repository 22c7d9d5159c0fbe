"""Behavioural risk scores: one integer 0-100 per principal, stored in memory or SQLite.

The analytics that compute scores come later (response); this is the interface
and storage the policy context reads. A score outside 0-100, or not an integer,
is refused with :class:`RiskScoreError` and the stored score stays. Thresholds
live in the policies (``guards.cedar``: 70 elevated, 90 critical).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Protocol

from trustfabric.signals.errors import RiskScoreError
from trustfabric.sqlitefile import connect as connect_sqlite

MIN_SCORE = 0
MAX_SCORE = 100


def check_score(score: object) -> int:
    """The score as an int in 0..100, or :class:`RiskScoreError`."""
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise RiskScoreError(f"risk score {score!r} is not a number", reason="signal.risk.not_a_number")
    if isinstance(score, float) and (score != score or not score.is_integer()):
        raise RiskScoreError(f"risk score {score!r} is not a whole number", reason="signal.risk.not_a_number")
    if not MIN_SCORE <= score <= MAX_SCORE:
        raise RiskScoreError(f"risk score {score} outside {MIN_SCORE}-{MAX_SCORE}", reason="signal.risk.out_of_range")
    return int(score)


class RiskStore(Protocol):
    def get(self, principal: str) -> int: ...

    def set(self, principal: str, score: int, now: float, source: str) -> None: ...

    def all(self) -> dict[str, int]: ...


class MemoryRiskStore:
    def __init__(self) -> None:
        self._scores: dict[str, int] = {}

    def get(self, principal: str) -> int:
        return self._scores.get(principal, 0)

    def set(self, principal: str, score: int, now: float, source: str) -> None:
        self._scores[principal] = check_score(score)

    def all(self) -> dict[str, int]:
        return dict(self._scores)


class SqliteRiskStore:
    """Scores in a SQLite table (WAL), with who set them and when."""

    def __init__(self, path: str | Path) -> None:
        try:
            self._db = connect_sqlite(
                path,
                "CREATE TABLE IF NOT EXISTS risk_score (principal TEXT PRIMARY KEY, score INTEGER NOT NULL "
                "CHECK (score BETWEEN 0 AND 100), updated_at REAL NOT NULL, source TEXT NOT NULL);",
            )
        except (sqlite3.Error, OSError) as exc:
            raise RiskScoreError(f"cannot open risk store {path}: {exc}", reason="signal.risk.storage") from exc
        self._lock = threading.Lock()

    def get(self, principal: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT score FROM risk_score WHERE principal = ?", (principal,)).fetchone()
        return int(row[0]) if row else 0

    def set(self, principal: str, score: int, now: float, source: str) -> None:
        score = check_score(score)
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO risk_score VALUES (?, ?, ?, ?) ON CONFLICT(principal) DO UPDATE SET "
                    "score = excluded.score, updated_at = excluded.updated_at, source = excluded.source",
                    (principal, score, now, source),
                )
        except sqlite3.Error as exc:
            raise RiskScoreError(f"cannot store risk score: {exc}", reason="signal.risk.storage") from exc

    def all(self) -> dict[str, int]:
        with self._lock:
            return {p: int(s) for p, s in self._db.execute("SELECT principal, score FROM risk_score")}

    def close(self) -> None:
        self._db.close()
