"""SPIFFE ID parsing: valid IDs round-trip, every invalid form is refused (spiffe.invalid)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from trustfabric.identity.errors import IdentityError
from trustfabric.identity.spiffe import SpiffeId, SpiffeIdError

TD_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.-_"
SEG_CHARS = TD_CHARS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

trust_domains = st.text(alphabet=TD_CHARS, min_size=1, max_size=60)
segments = st.text(alphabet=SEG_CHARS, min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))
paths = st.lists(segments, max_size=5).map(lambda segs: "".join("/" + s for s in segs))


def test_workload_id_parts() -> None:
    sid = SpiffeId.parse("spiffe://prod.acme.example/trading/risk-engine")
    assert sid.trust_domain == "prod.acme.example"
    assert sid.path == "/trading/risk-engine"
    assert sid.segment == "trading"
    assert sid.service == "risk-engine"
    assert str(sid) == "spiffe://prod.acme.example/trading/risk-engine"
    assert SpiffeId.workload("prod.acme.example", "trading", "risk-engine") == sid


def test_frozen_and_hashable() -> None:
    sid = SpiffeId.parse("spiffe://a.b/c")
    with pytest.raises(AttributeError):
        sid.path = "/x"  # type: ignore[misc]
    assert {sid: 1}[SpiffeId("a.b", "/c")] == 1


@given(trust_domains, paths)
def test_valid_ids_round_trip(td: str, path: str) -> None:
    text = f"spiffe://{td}{path}"
    sid = SpiffeId.parse(text)
    assert str(sid) == text
    assert SpiffeId.parse(str(sid)) == sid


@pytest.mark.parametrize(
    "text",
    [
        "",
        "spiffe://",
        "spiffe:///path",
        "SPIFFE://acme.example/a",
        "Spiffe://acme.example/a",
        "https://acme.example/a",
        "spiffe:acme.example/a",
        "spiffe://Acme.example/a",
        "spiffe://acme.example:8443/a",
        "spiffe://user@acme.example/a",
        "spiffe://acme.example/a?x=1",
        "spiffe://acme.example/a#frag",
        "spiffe://acme.example/",
        "spiffe://acme.example/a/",
        "spiffe://acme.example//a",
        "spiffe://acme.example/./a",
        "spiffe://acme.example/a/..",
        "spiffe://acme.example/a%20b",
        "spiffe://acme.example/a b",
        "spiffe://acme.exa%6dple/a",
        "spiffe://acme.example/caf\u00e9",
        "spiffe://" + "a" * 256 + "/x",
        "spiffe://acme.example/" + "a" * 2040,
    ],
)
def test_invalid_ids_are_refused(text: str) -> None:
    with pytest.raises(SpiffeIdError) as info:
        SpiffeId.parse(text)
    assert info.value.reason == "spiffe.invalid"
    assert isinstance(info.value, IdentityError)


@given(st.text(max_size=80))
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        sid = SpiffeId.parse(text)
    except SpiffeIdError:
        return
    assert str(sid) == text


@given(trust_domains, paths, st.sampled_from(list("A:@?#% /\\\u00e9")))
def test_a_bad_character_in_the_trust_domain_is_refused(td: str, path: str, bad: str) -> None:
    with pytest.raises(SpiffeIdError):
        SpiffeId.parse(f"spiffe://{td}{bad}{path}")


@given(trust_domains, st.lists(segments, min_size=1, max_size=4), st.sampled_from([":", "@", "?", "#", "%", " ", "\\"]))
def test_a_bad_character_in_the_path_is_refused(td: str, segs: list[str], bad: str) -> None:
    with pytest.raises(SpiffeIdError):
        SpiffeId.parse(f"spiffe://{td}/" + "/".join(segs) + bad)


def test_max_length_is_2048() -> None:
    td = "acme.example"
    path = "/" + "a" * (2048 - len("spiffe://") - len(td) - 1)
    assert len(str(SpiffeId.parse(f"spiffe://{td}{path}"))) == 2048
    with pytest.raises(SpiffeIdError):
        SpiffeId.parse(f"spiffe://{td}{path}b")


def test_workload_constructor_refuses_bad_segments() -> None:
    for seg, svc in [("", "x"), ("a/b", "x"), ("..", "x"), ("a", "")]:
        with pytest.raises(SpiffeIdError):
            SpiffeId.workload("acme.example", seg, svc)
