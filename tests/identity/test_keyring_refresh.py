"""Key rings of two control-plane replicas over one store: a key one made verifies at the other, and tokens
naming unknown kids re-read the store at most once per REFRESH_MIN_S."""

from __future__ import annotations

from trustfabric.clock import FakeClock
from trustfabric.identity.store import SqliteIdentityStore
from trustfabric.identity.tokens import REFRESH_MIN_S, KeyRing


class CountingStore(SqliteIdentityStore):
    reads = 0

    def list_signing_keys(self):
        self.reads += 1
        return super().list_signing_keys()


def test_a_replica_finds_the_others_key_and_does_not_make_its_own(tmp_path):
    clock = FakeClock(1_700_000_000.0)
    store = CountingStore(tmp_path / "identity.db")
    one, two = KeyRing(store, clock=clock), KeyRing(store, clock=clock)
    first = one.ensure(clock.now())
    assert two.ensure(clock.now()).kid == first.kid  # read from the store, not a second first key
    fresh = one.rotate(clock.now())
    assert fresh.kid not in two.verification_keys()
    clock.advance(REFRESH_MIN_S)
    assert two.refresh() and fresh.kid in two.verification_keys()


def test_unknown_kids_cannot_drive_the_store(tmp_path):
    clock = FakeClock(1_700_000_000.0)
    store = CountingStore(tmp_path / "identity.db")
    ring = KeyRing(store, clock=clock)
    ring.ensure(clock.now())
    before = store.reads
    assert [ring.refresh() for _ in range(100)].count(True) == 0  # inside the window: no read at all
    assert store.reads == before
    clock.advance(REFRESH_MIN_S)
    assert ring.refresh() and not ring.refresh() and store.reads == before + 1
