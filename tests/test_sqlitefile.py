"""Opening the same new SQLite file from several threads at once never fails with "database is locked"."""

from __future__ import annotations

import threading

from trustfabric.audit.log import SQLiteAuditStore
from trustfabric.sqlitefile import connect


def test_many_openers_of_one_new_file_all_get_it(tmp_path) -> None:
    for n in range(40):  # without the lock file, about one round in ten failed
        path = tmp_path / f"log-{n}.db"
        errors: list[BaseException] = []

        def open_it() -> None:
            try:
                SQLiteAuditStore(path)
            except BaseException as exc:  # noqa: BLE001 - the test collects whatever an opener raised
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []


def test_memory_databases_skip_the_lock_file_and_run_the_schema(tmp_path) -> None:
    db = connect(":memory:", "CREATE TABLE t (x INTEGER);")
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
    db = connect(tmp_path / "x.db", "CREATE TABLE IF NOT EXISTS t (x INTEGER);", pragmas=("synchronous=FULL",))
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert (tmp_path / "x.db.open-lock").exists()
