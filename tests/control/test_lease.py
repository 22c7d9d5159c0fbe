"""The control plane's lease: one holder, a standby that claims it when the holder dies or stops renewing,
and a holder that loses it - to another, or to a store it cannot reach for the lease's lifetime."""

from __future__ import annotations

import time

from trustfabric.control.lease import ControlLease


def test_one_holder_at_a_time_and_an_expired_lease_changes_hands(tmp_path):
    active = ControlLease(tmp_path, environ={}, ttl_s=0.3)
    standby = ControlLease(tmp_path, environ={}, ttl_s=0.3)
    assert active.try_acquire() and not standby.try_acquire()  # the active renews within its lifetime
    assert active.beat()
    time.sleep(0.4)  # the active hung: no renewal for longer than the lifetime
    assert standby.try_acquire() and standby.epoch == active.epoch + 1  # a new fencing token
    assert not active.beat()  # it came back: the lease is another's, it must stop acting
    active.release()
    standby.release()


def test_a_dead_holder_is_taken_over_at_once(tmp_path):
    active = ControlLease(tmp_path, environ={}, ttl_s=30.0)
    standby = ControlLease(tmp_path, environ={}, ttl_s=30.0)
    assert active.try_acquire() and not standby.try_acquire()
    active.release()  # what the operating system does for a process killed with SIGKILL: its lock is free
    assert standby.try_acquire()  # long before the row's 30 s lifetime ran out
    standby.release()


def test_a_holder_that_cannot_reach_its_store_for_the_lifetime_gives_the_lease_up(tmp_path, monkeypatch):
    lease = ControlLease(tmp_path, environ={}, ttl_s=0.3)
    lease.contested = True  # standbys wait for it
    assert lease.try_acquire()

    def unreachable(**_kw):
        raise OSError("store unreachable")

    monkeypatch.setattr(lease, "_claim", unreachable)
    assert lease.beat()  # one missed renewal: still within the lifetime
    time.sleep(0.35)
    assert not lease.beat()  # the row may have been claimed meanwhile: stop acting
    lease.contested = False  # a floor with no standby: nobody else can act, it keeps its control plane
    assert lease.beat()
    lease.release()
