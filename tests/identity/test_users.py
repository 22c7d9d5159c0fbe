"""People: argon2id passwords, TOTP, replay, lockout and step-up - each refusal shown."""

from __future__ import annotations

import pyotp
import pytest

from tests.people import cheap_hasher
from trustfabric.audit.events import Emitter, Kind, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.identity.errors import UserError
from trustfabric.identity.store import SqliteIdentityStore
from trustfabric.identity.users import UserDirectory, UserPolicy

from .conftest import T0

PASSWORD = "correct horse battery"


@pytest.fixture
def world():
    sink = MemorySink()
    clock = FakeClock(T0)
    directory = UserDirectory(
        SqliteIdentityStore(), Emitter("idp", sink, clock),
        UserPolicy(max_failures=3, lockout_s=600, step_up_max_age_s=120),
        hasher=cheap_hasher(),
    )
    enrolment = directory.enrol("alice", "risk_officer", PASSWORD, T0)
    return directory, sink, pyotp.TOTP(enrolment.totp_secret), enrolment


def code_at(totp: pyotp.TOTP, now: float) -> str:
    return totp.at(now)


def refused(fn, *args) -> str:
    with pytest.raises(UserError) as info:
        fn(*args)
    return info.value.reason


def test_enrolment_gives_a_provisioning_uri_and_argon2id_hash(world) -> None:
    directory, _, _, enrolment = world
    assert enrolment.provisioning_uri.startswith("otpauth://totp/trustfabric:alice?")
    assert f"secret={enrolment.totp_secret}" in enrolment.provisioning_uri
    assert directory.get("alice").password_hash.startswith("$argon2id$")


def test_enrolment_refusals(world) -> None:
    directory = world[0]
    assert refused(directory.enrol, "bob", "ceo", PASSWORD, T0) == "user.bad_role"
    assert refused(directory.enrol, "bob", "trader", "short", T0) == "user.weak_password"
    assert refused(directory.enrol, "alice", "trader", PASSWORD, T0) == "user.exists"
    assert refused(directory.enrol, "bad name!", "trader", PASSWORD, T0) == "user.bad_name"


def test_login_with_password_and_totp(world) -> None:
    directory, sink, totp, _ = world
    auth = directory.login("alice", PASSWORD, code_at(totp, T0), T0)
    assert auth.role == "risk_officer" and auth.amr == ("pwd", "otp") and auth.auth_time == T0
    assert sink.of_kind(Kind.USER_LOGIN)[-1].decision == "allow"
    assert sink.of_kind(Kind.USER_MFA)[-1].decision == "allow"


def test_wrong_password_and_unknown_user_look_the_same(world) -> None:
    directory, _, totp, _ = world
    assert refused(directory.login, "alice", "wrong password!", code_at(totp, T0), T0) == "user.bad_credentials"
    assert refused(directory.login, "mallory", PASSWORD, code_at(totp, T0), T0) == "user.bad_credentials"


def test_wrong_totp_refused(world) -> None:
    directory, sink, totp, _ = world
    wrong = "000000" if code_at(totp, T0) != "000000" else "111111"
    assert refused(directory.login, "alice", PASSWORD, wrong, T0) == "user.bad_totp"
    assert refused(directory.login, "alice", PASSWORD, code_at(totp, T0 + 300), T0) == "user.bad_totp"
    assert sink.of_kind(Kind.USER_MFA)[-1].reason == "user.bad_totp"


def test_replayed_totp_in_the_same_step_refused(world) -> None:
    directory, _, totp, _ = world
    code = code_at(totp, T0)
    directory.login("alice", PASSWORD, code, T0)
    assert refused(directory.login, "alice", PASSWORD, code, T0 + 1) == "user.totp_replay"
    # an older step (within drift) is a replay too
    directory.login("alice", PASSWORD, code_at(totp, T0 + 30), T0 + 30)
    assert refused(directory.login, "alice", PASSWORD, code_at(totp, T0), T0 + 31) == "user.totp_replay"


def test_lockout_after_repeated_failures(world) -> None:
    directory, sink, totp, _ = world
    for _ in range(3):
        refused(directory.login, "alice", "wrong password!", code_at(totp, T0), T0)
    assert sink.of_kind(Kind.USER_LOCKED)
    # even the right credentials are refused while locked
    assert refused(directory.login, "alice", PASSWORD, code_at(totp, T0 + 5), T0 + 5) == "user.locked"
    assert refused(directory.step_up, "alice", code_at(totp, T0 + 5), T0 + 5) == "user.locked"
    later = T0 + 601
    assert directory.login("alice", PASSWORD, code_at(totp, later), later).name == "alice"


def test_step_up_for_privileged_actions(world) -> None:
    directory, sink, totp, _ = world
    assert refused(directory.require_step_up, "alice", "quarantine", T0) == "user.step_up_required"
    directory.login("alice", PASSWORD, code_at(totp, T0), T0)
    directory.require_step_up("alice", "quarantine", T0 + 100)
    assert refused(directory.require_step_up, "alice", "quarantine", T0 + 121) == "user.step_up_required"
    directory.step_up("alice", code_at(totp, T0 + 150), T0 + 150)
    directory.require_step_up("alice", "kill_switch", T0 + 200)
    assert refused(directory.require_step_up, "mallory", "kill_switch", T0) == "user.step_up_required"
    assert {e.decision for e in sink.of_kind(Kind.USER_STEP_UP)} == {"allow", "deny"}


def test_a_person_s_password_gets_the_rfc_9106_argon2id_profile_outside_the_tests():
    """The cheap profile is the tests' alone: the directory's default is argon2-cffi's RFC 9106 low-memory one."""
    from argon2 import Type
    from argon2.profiles import RFC_9106_LOW_MEMORY

    from tests.conftest import PRODUCTION_DEFAULT_HASHER

    hasher = PRODUCTION_DEFAULT_HASHER()
    assert hasher.type is Type.ID
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (
        RFC_9106_LOW_MEMORY.time_cost, RFC_9106_LOW_MEMORY.memory_cost, RFC_9106_LOW_MEMORY.parallelism)
    assert hasher.hash(PASSWORD).startswith(f"$argon2id$v=19$m={RFC_9106_LOW_MEMORY.memory_cost},")
