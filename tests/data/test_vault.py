"""The data vault: envelope encryption bound to id and labels, unwrap decided by Cedar, tokenization, lifecycle."""

from __future__ import annotations

import json
import os
import stat

import msgspec
import pytest

from trustfabric.audit.events import Kind
from trustfabric.data.envelope import Kek, decode, encode, open_sealed, seal
from trustfabric.data.errors import (
    FourEyesRefused,
    LabelError,
    OpenRefused,
    SealedFormatError,
    UnwrapRefused,
)
from trustfabric.data.labels import Labels
from trustfabric.data.tokenize import TOKEN_PREFIX
from trustfabric.enforcement.errors import SessionRefused
from trustfabric.identity.errors import UserError

ORDERS = Labels("client-confidential", "prod", "oms")
HISTORY = Labels("trade-history", "prod", "oms")
RECORD = b'{"cl_ord_id":"C-1","client_id":"CL-42","client_name":"Acme Pension","symbol":"AAPL","qty":100}'
KEK = Kek("oms", "prod", 1, bytes(range(32)))


# ------------------------------------------------------------------ the envelope (pure)

def test_seal_open_roundtrip_and_nothing_in_clear():
    sealed = seal("order-1", ORDERS, RECORD, KEK)
    assert b"Acme Pension" not in encode(sealed)
    assert open_sealed(decode(encode(sealed)), "order-1", ORDERS, KEK) == RECORD


def test_moved_ciphertext_is_refused():
    sealed = seal("order-1", ORDERS, RECORD, KEK)
    moved = msgspec.structs.replace(sealed, object_id="order-2")
    with pytest.raises(OpenRefused) as exc:
        open_sealed(moved, "order-2", ORDERS, KEK)
    assert exc.value.reason == "data.binding_mismatch"


def test_relabelled_ciphertext_is_refused():
    sealed = seal("order-1", ORDERS, RECORD, KEK)
    public = Labels("public", "prod", "oms")
    relabelled = msgspec.structs.replace(sealed, classification="public")
    with pytest.raises(OpenRefused) as exc:
        open_sealed(relabelled, "order-1", public, KEK)
    assert exc.value.reason == "data.binding_mismatch"


def test_other_kek_and_garbage_are_typed_refusals():
    sealed = seal("order-1", ORDERS, RECORD, KEK)
    with pytest.raises(OpenRefused) as exc:
        open_sealed(sealed, "order-1", ORDERS, Kek("oms", "prod", 1, bytes(32)))
    assert exc.value.reason == "data.unwrap_failed"
    for junk in (b"", b"\x81\xa1v\x01", os.urandom(200), b"\xc1" * 10):
        with pytest.raises(SealedFormatError):
            decode(junk)
    with pytest.raises(LabelError):
        Labels("secret", "prod", "oms")
    with pytest.raises(LabelError):
        seal("../escape", ORDERS, RECORD, KEK)


# ------------------------------------------------------------------ the key service

def test_oms_writes_and_reads_client_orders(world):
    oms = world.session("oms")
    world.vault.put(oms, "order-1", ORDERS, RECORD)
    assert world.vault.get(oms, "order-1", ORDERS) == RECORD
    stored = world.objects.path_of("order-1", "oms", "prod").read_bytes()
    assert b"Acme Pension" not in stored and b"CL-42" not in stored
    key_files = list(world.keys.directory.rglob("*.key"))
    assert key_files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in key_files)
    assert not any(world.objects.directory in p.parents for p in key_files)


def test_settlement_cannot_read_client_orders_but_reads_trade_history(world):
    oms = world.session("oms")
    world.vault.put(oms, "order-1", ORDERS, RECORD)
    world.vault.put(oms, "fills-1", HISTORY, RECORD)
    settlement = world.session("settlement")
    with pytest.raises(UnwrapRefused) as exc:
        world.vault.get(settlement, "order-1", ORDERS)
    assert exc.value.reason == "policy.no_permit"
    assert world.vault.get(settlement, "fills-1", HISTORY) == RECORD


def test_analytics_reads_trade_history_tokenized_only(world):
    oms = world.session("oms")
    world.vault.put(oms, "fills-1", HISTORY, RECORD + b"\n" + RECORD)
    analytics = world.session("analytics")
    with pytest.raises(UnwrapRefused):
        world.vault.get(analytics, "fills-1", HISTORY, "read")
    rows = [json.loads(line) for line in world.vault.get(analytics, "fills-1", HISTORY, "analyse").splitlines()]
    assert rows[0] == rows[1]  # deterministic per segment
    assert rows[0]["client_id"].startswith(TOKEN_PREFIX) and rows[0]["client_name"].startswith(TOKEN_PREFIX)
    assert rows[0]["symbol"] == "AAPL" and rows[0]["qty"] == 100


def test_dev_identity_cannot_unwrap_a_prod_key(world):
    oms = world.session("oms")
    world.vault.put(oms, "order-1", ORDERS, RECORD)
    with pytest.raises(SessionRefused) as exc:
        world.session("oms", env="dev")
    assert exc.value.reason == "token.wrong_trust_domain"
    with pytest.raises(UnwrapRefused) as exc:  # and the key service's own wall: a prod service holds no dev keys
        world.vault.get(oms, "order-1", Labels("client-confidential", "dev", "oms"))
    assert exc.value.reason == "data.cross_environment"


def test_no_session_and_a_backup_copy_are_useless(world, tmp_path):
    oms = world.session("oms")
    world.vault.put(oms, "order-1", ORDERS, RECORD)
    with pytest.raises(UnwrapRefused):
        world.vault.get(None, "order-1", ORDERS)
    copy = tmp_path / "backup.sealed"
    copy.write_bytes(world.objects.path_of("order-1", "oms", "prod").read_bytes())
    assert b"CL-42" not in copy.read_bytes()
    # moved inside the store under another id: refused by the AEAD, not by the file name
    world.objects.path_of("order-2", "oms", "prod").write_bytes(copy.read_bytes())
    with pytest.raises(OpenRefused) as exc:
        world.vault.get(oms, "order-2", ORDERS)
    assert exc.value.reason == "data.binding_mismatch"


def test_every_unwrap_decision_is_audited(world):
    oms, settlement = world.session("oms"), world.session("settlement")
    world.vault.put(oms, "order-1", ORDERS, RECORD)
    with pytest.raises(UnwrapRefused):
        world.vault.get(settlement, "order-1", ORDERS)
    world.pep.flush_decisions()
    decisions = [(e.principal, e.action, e.resource, e.decision) for e in world.sink.events if e.kind == Kind.DECISION]
    assert (oms.principal, "data_write", ORDERS.dataset, "allow") in decisions
    assert (settlement.principal, "data_read", ORDERS.dataset, "deny") in decisions


def test_a_key_file_readable_by_others_is_refused(world):
    oms = world.session("oms")
    world.vault.put(oms, "order-1", ORDERS, RECORD)
    path = next(world.keys.directory.rglob("kek-v1.key"))
    os.chmod(path, 0o644)
    fresh = type(world.keys)(world.keys.directory)
    with pytest.raises(Exception) as exc:
        fresh.get("oms", "prod", 1)
    assert getattr(exc.value, "reason", "") == "data.keystore_exposed"


# ------------------------------------------------------------------ lifecycle, four-eyes

def _officers(world):
    world.enrol("dave", "security_officer")
    world.enrol("sam", "security_officer")


def test_rotate_rewraps_and_keeps_data_readable(world):
    _officers(world)
    oms = world.session("oms")
    world.vault.put(oms, "order-1", ORDERS, RECORD)
    before = world.objects.get("order-1", "oms", "prod")
    rotation = world.lifecycle_step("rotate", world.credential("dave"), world.credential("sam"))
    assert (rotation.previous, rotation.current, rotation.rewrapped) == (1, 2, 1)
    after = world.objects.get("order-1", "oms", "prod")
    assert after.ciphertext == before.ciphertext and after.wrapped_key != before.wrapped_key
    assert world.keys.versions("oms", "prod") == [2]
    assert world.vault.get(oms, "order-1", ORDERS) == RECORD


def test_shred_makes_data_unreadable_for_good(world):
    _officers(world)
    oms = world.session("oms")
    world.vault.put(oms, "order-1", ORDERS, RECORD)
    world.lifecycle_step("shred", world.credential("dave"), world.credential("sam"))
    assert not list(world.keys.directory.rglob("*.key"))
    with pytest.raises(OpenRefused) as exc:
        world.vault.get(oms, "order-1", ORDERS)
    assert exc.value.reason == "data.kek_shredded"
    actions = [(e.action, e.decision) for e in world.sink.events if e.kind == Kind.ADMIN_ACTION]
    assert ("data.shred", "allow") in actions and actions.count(("operator.data.shred", "allow")) == 2


def test_four_eyes_refusals(world):
    _officers(world)
    world.enrol("erin", "developer")
    oms = world.session("oms")
    world.vault.put(oms, "order-1", ORDERS, RECORD)
    with pytest.raises(FourEyesRefused) as exc:  # one person twice
        world.lifecycle_step("shred", world.credential("dave"), world.credential("dave"))
    assert exc.value.reason == "data.four_eyes_same_person"
    world.clock.advance(30)
    with pytest.raises(FourEyesRefused) as exc:  # a single approval
        world.lifecycle_step("rotate", world.credential("dave"), None)
    assert exc.value.reason == "data.four_eyes_incomplete"
    world.clock.advance(30)
    with pytest.raises(Exception) as exc:  # a developer may not
        world.lifecycle_step("shred", world.credential("dave"), world.credential("erin"))
    assert exc.value.reason == "operator.not_permitted"
    world.clock.advance(30)
    stale = world.totp["sam"].at(world.clock.now() - 120)
    with pytest.raises(UserError) as exc:  # a stale TOTP code
        world.lifecycle_step("shred", world.credential("dave"), world.credential("sam", totp=stale))
    assert exc.value.reason in {"user.bad_totp", "user.totp_replay"}
    assert world.vault.get(oms, "order-1", ORDERS) == RECORD  # nothing was shredded
