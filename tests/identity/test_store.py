"""The SQLite identity store: rows round-trip, state survives reopening, failures are typed."""

from __future__ import annotations

import pytest

from trustfabric.identity.errors import StoreError
from trustfabric.identity.store import ReleaseRow, SqliteIdentityStore, UserRow

from .conftest import PROD, T0


def test_rows_round_trip_and_persist(tmp_path) -> None:
    path = tmp_path / "identity.db"
    store = SqliteIdentityStore(path)
    store.add_release(ReleaseRow(PROD, "ab" * 32, "v1", T0))
    store.put_user(UserRow("alice", "trader", "$argon2id$x", "SECRET", totp_last_step=5))
    store.put_host_key("h1", b"\x01" * 32)
    store.set_meta("firm", "acme.example")
    store.close()
    again = SqliteIdentityStore(path)
    assert again.is_promoted(PROD, "ab" * 32) and not again.is_promoted("dev.acme.example", "ab" * 32)
    assert again.get_user("alice").totp_last_step == 5
    assert again.get_user("bob") is None
    assert again.list_host_keys() == [("h1", b"\x01" * 32)]
    assert again.get_meta("firm") == "acme.example" and again.get_meta("missing", 7) == 7


def test_unopenable_store_is_a_typed_error(tmp_path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError) as info:
        SqliteIdentityStore(tmp_path / "dir.db")
    assert info.value.reason == "store.error"
