"""``ControlPlane.revoke_token_key``: the operator API's entry point for a key revocation on the live floor."""

import msgspec
import pytest

from trustfabric.control.plane import ControlPlane
from trustfabric.identity.errors import TokenError
from trustfabric.identity.revocation import RevocationEntry


@pytest.fixture()
def plane(tmp_path):
    cp = ControlPlane(tmp_path)
    yield cp
    cp.close()


def _kids(plane: ControlPlane) -> set[str]:
    return {k["kid"] for k in msgspec.json.decode(plane.jwks())["keys"]}


def test_revoking_a_retired_key_removes_it_from_the_jwks_and_pushes_to_every_subscriber(plane):
    pushed = []
    plane.subscribe(pushed.append)
    old = plane.identity.keys.active.kid
    with pytest.raises(TokenError) as err:
        plane.revoke_token_key(old, "user:dave")
    assert err.value.reason == "token.key_active" and pushed == [] and old in _kids(plane)
    plane.identity.rotate_token_key("user:dave")
    entry = plane.revoke_token_key(old, "user:dave")
    assert old not in _kids(plane) and len(_kids(plane)) == 1
    assert [p for p in pushed if isinstance(p, RevocationEntry)] == [entry]
    assert (entry.kind, entry.value) == ("token_key", old)
    with pytest.raises(TokenError) as err:  # gone: a second revocation has nothing to remove
        plane.revoke_token_key(old, "user:dave")
    assert err.value.reason == "token.unknown_kid"
