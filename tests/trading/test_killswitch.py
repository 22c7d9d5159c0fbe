"""Kill switch states, MFA, privilege and four-eyes: each refusal shown."""

import pytest

from trustfabric.trading import killswitch as ks
from trustfabric.trading.errors import KillSwitchRefused

NOW = 1_790_000_000.0


def op(name, privileged=True, mfa_age=10.0):
    return ks.Operator(name, privileged=privileged, mfa_at=None if mfa_age is None else NOW - mfa_age)


WORKING = [
    ks.WorkingOrderRef("o1", "ACC-1", "agent-a", "AAPL"),
    ks.WorkingOrderRef("o2", "ACC-1", "agent-b", "MSFT"),
    ks.WorkingOrderRef("o3", "ACC-2", "agent-c", "AAPL"),
]


def test_effective_state_is_the_most_severe_scope():
    switch = ks.KillSwitch()
    assert switch.effective_state("ACC-1", "agent-a") == ks.ACTIVE
    switch.reduce(ks.ACCOUNT, "ACC-1", op("alice"), NOW)
    assert switch.effective_state("ACC-1", "agent-a") == ks.REDUCING
    assert switch.effective_state("ACC-2", "agent-c") == ks.ACTIVE
    switch.halt(ks.AGENT, "agent-a", op("alice"), NOW)
    assert switch.effective_state("ACC-1", "agent-a") == ks.HALTED
    switch.halt(ks.FIRM, "", op("alice"), NOW)
    assert switch.effective_state("ACC-2", "agent-c") == ks.HALTED


@pytest.mark.parametrize("scope,target,expected", [
    (ks.AGENT, "agent-a", {"o1"}),
    (ks.ACCOUNT, "ACC-1", {"o1", "o2"}),
    (ks.FIRM, "", {"o1", "o2", "o3"}),
])
def test_halting_returns_the_working_orders_to_cancel(scope, target, expected):
    change = ks.KillSwitch().halt(scope, target, op("alice"), NOW, WORKING)
    assert {c.cl_ord_id for c in change.cancels} == expected and change.state == ks.HALTED


@pytest.mark.parametrize("operator,reason", [
    (op("mallory", privileged=False), ks.NOT_PRIVILEGED),
    (op("alice", mfa_age=None), ks.MFA_MISSING),
    (op("alice", mfa_age=3600), ks.MFA_STALE),
])
def test_halt_needs_privilege_and_fresh_mfa(operator, reason):
    switch = ks.KillSwitch()
    with pytest.raises(KillSwitchRefused) as exc:
        switch.halt(ks.FIRM, "", operator, NOW, WORKING)
    assert exc.value.reason == reason
    assert switch.firm_state == ks.ACTIVE


def test_bad_scope_is_refused():
    switch = ks.KillSwitch()
    for scope, target in (("desk", "x"), (ks.AGENT, ""), (ks.FIRM, "x")):
        with pytest.raises(KillSwitchRefused) as exc:
            switch.halt(scope, target, op("alice"), NOW)
        assert exc.value.reason == ks.BAD_SCOPE


def test_resume_needs_two_different_people():
    switch = ks.KillSwitch()
    switch.halt(ks.AGENT, "agent-a", op("alice"), NOW)
    switch.request_resume(ks.AGENT, "agent-a", op("alice"), NOW)
    with pytest.raises(KillSwitchRefused) as exc:
        switch.approve_resume(ks.AGENT, "agent-a", op("alice"), NOW)
    assert exc.value.reason == ks.FOUR_EYES
    assert switch.state_of(ks.AGENT, "agent-a") == ks.HALTED
    change = switch.approve_resume(ks.AGENT, "agent-a", op("bob"), NOW + 1)
    assert change.state == ks.ACTIVE and switch.state_of(ks.AGENT, "agent-a") == ks.ACTIVE


@pytest.mark.parametrize("approver,reason", [
    (op("bob", privileged=False), ks.NOT_PRIVILEGED),
    (op("bob", mfa_age=None), ks.MFA_MISSING),
    (op("bob", mfa_age=1000), ks.MFA_STALE),
])
def test_second_approver_needs_privilege_and_mfa(approver, reason):
    switch = ks.KillSwitch()
    switch.halt(ks.FIRM, "", op("alice"), NOW)
    switch.request_resume(ks.FIRM, "", op("carol"), NOW)
    with pytest.raises(KillSwitchRefused) as exc:
        switch.approve_resume(ks.FIRM, "", approver, NOW)
    assert exc.value.reason == reason
    assert switch.firm_state == ks.HALTED


def test_requester_needs_privilege_and_mfa_too():
    switch = ks.KillSwitch()
    switch.halt(ks.FIRM, "", op("alice"), NOW)
    with pytest.raises(KillSwitchRefused) as exc:
        switch.request_resume(ks.FIRM, "", op("carol", mfa_age=None), NOW)
    assert exc.value.reason == ks.MFA_MISSING
    with pytest.raises(KillSwitchRefused) as exc:
        switch.approve_resume(ks.FIRM, "", op("bob"), NOW)
    assert exc.value.reason == ks.NO_REQUEST


def test_resume_request_expires():
    switch = ks.KillSwitch(request_ttl_s=60)
    switch.halt(ks.FIRM, "", op("alice"), NOW)
    switch.request_resume(ks.FIRM, "", op("alice"), NOW)
    with pytest.raises(KillSwitchRefused) as exc:
        switch.approve_resume(ks.FIRM, "", op("bob", mfa_age=-50), NOW + 61)
    assert exc.value.reason == ks.NO_REQUEST


def test_halted_cannot_be_loosened_to_reducing_by_one_person():
    switch = ks.KillSwitch()
    switch.halt(ks.ACCOUNT, "ACC-1", op("alice"), NOW)
    with pytest.raises(KillSwitchRefused) as exc:
        switch.reduce(ks.ACCOUNT, "ACC-1", op("alice"), NOW)
    assert exc.value.reason == ks.FOUR_EYES


def test_a_new_halt_cancels_a_pending_resume():
    switch = ks.KillSwitch()
    switch.halt(ks.FIRM, "", op("alice"), NOW)
    switch.request_resume(ks.FIRM, "", op("alice"), NOW)
    switch.halt(ks.FIRM, "", op("dave"), NOW)
    with pytest.raises(KillSwitchRefused) as exc:
        switch.approve_resume(ks.FIRM, "", op("bob"), NOW)
    assert exc.value.reason == ks.NO_REQUEST
