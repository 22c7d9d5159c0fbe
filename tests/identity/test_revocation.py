"""The revocation set: versioned, pushed to subscribers, persisted in the store."""

from __future__ import annotations

import pytest

from trustfabric.identity.errors import IdentityError
from trustfabric.identity.revocation import RevocationSet
from trustfabric.identity.store import SqliteIdentityStore

from .conftest import T0

OMS = "spiffe://prod.acme.example/trading/oms"


def test_versions_bump_and_subscribers_hear() -> None:
    revocations = RevocationSet()
    heard = []
    unsubscribe = revocations.subscribe(heard.append)
    assert revocations.version == 0 and not revocations.is_revoked(42, OMS)
    revocations.revoke_serial(42, T0)
    assert revocations.version == 1 and revocations.is_revoked(42, "spiffe://x.y/z")
    revocations.revoke_spiffe_id(OMS, T0)
    assert revocations.version == 2 and revocations.is_revoked(7, OMS)
    revocations.release_spiffe_id(OMS, T0)
    assert revocations.version == 3 and not revocations.is_revoked(7, OMS)
    assert [e.version for e in heard] == [1, 2, 3]
    assert [e.kind for e in heard] == ["serial", "spiffe_id", "release_spiffe_id"]
    unsubscribe()
    revocations.revoke_serial(43, T0)
    assert len(heard) == 3


def test_persisted_and_reloaded(tmp_path) -> None:
    store = SqliteIdentityStore(tmp_path / "identity.db")
    revocations = RevocationSet(store)
    revocations.revoke_serial(99, T0)
    revocations.revoke_spiffe_id(OMS, T0)
    reloaded = RevocationSet(SqliteIdentityStore(tmp_path / "identity.db"))
    assert reloaded.version == 2
    assert reloaded.is_revoked(99, "spiffe://a.b/c")
    assert reloaded.is_revoked(1, OMS)


def test_bad_inputs_refused() -> None:
    revocations = RevocationSet()
    with pytest.raises(IdentityError):
        revocations.revoke_serial(0, T0)
    with pytest.raises(IdentityError):
        revocations.revoke_spiffe_id("spiffe://BAD/x", T0)
    assert revocations.version == 0


@pytest.mark.parametrize("kid", ["", 7, None, "k" * 129, "k\u00e9"])
def test_a_bad_token_key_id_is_refused(kid) -> None:
    with pytest.raises(IdentityError) as info:
        RevocationSet().revoke_token_key(kid, T0)
    assert info.value.reason == "revocation.bad_kid"


def test_token_key_revocations_are_versioned_persisted_and_pushed() -> None:
    store = SqliteIdentityStore()
    revocations = RevocationSet(store)
    seen = []
    revocations.subscribe(seen.append)
    entry = revocations.revoke_token_key("kid-1", T0)
    assert (entry.kind, entry.value, entry.version) == ("token_key", "kid-1", 1) and seen == [entry]
    assert RevocationSet(store).is_token_key_revoked("kid-1")
    assert not revocations.is_revoked(-1, "kid-1")  # a key id is no principal
