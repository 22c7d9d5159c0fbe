"""Key lifecycle: rotate a KEK (re-wrap data keys, no re-encryption) and crypto-shred a scope; four-eyes.

Both change what data can ever be read, so both need two different people, each proven
now with a fresh TOTP code and each allowed by Cedar (the operator actions ``data.rotate``
and ``data.shred`` on ``Control::"data"``, step-up actions of
:mod:`trustfabric.identity.operators`). :func:`four_eyes` asks the
:class:`~trustfabric.identity.operators.OperatorAuthority` for each credential in turn;
one person twice is ``data.four_eyes_same_person``. Every outcome is audited: the
authority logs each person's decision, and the change itself is one ``ADMIN_ACTION``
naming both.

* :meth:`KeyLifecycle.rotate`: a new KEK version becomes current; every object of the
  scope gets its data key re-wrapped under it (the ciphertext is untouched, so data stays
  readable), then the old versions are destroyed.
* :meth:`KeyLifecycle.shred`: every KEK version and the tokenization key of the scope are
  overwritten and unlinked and a tombstone left: the scope's objects, wherever their
  copies are, can no longer be opened by anyone (``data.kek_shredded``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from trustfabric.audit.events import Emitter, Kind
from trustfabric.data.envelope import rewrap
from trustfabric.data.errors import FourEyesRefused
from trustfabric.data.keystore import KekStore
from trustfabric.data.labels import Labels
from trustfabric.data.objects import ObjectStore
from trustfabric.identity.operators import Operator, OperatorCredential


class Authority(Protocol):
    def authorize(self, credential: OperatorCredential, action: str, target: str, now: float) -> Operator: ...


def four_eyes(authority: Authority, action: str, target: str, first: OperatorCredential,
              second: OperatorCredential | None, now: float) -> tuple[Operator, Operator]:
    """Two different people, each authenticated with a fresh TOTP and allowed ``action`` now."""
    if second is None:
        raise FourEyesRefused(f"{action} needs a second person", reason="data.four_eyes_incomplete")
    one, two = (c.user.removeprefix("user:") if isinstance(c.user, str) else "" for c in (first, second))
    if one and one == two:
        raise FourEyesRefused(f"{action}: {one} cannot be both people", reason="data.four_eyes_same_person")
    return _two(action, authority.authorize(first, action, target, now), authority.authorize(second, action, target,
                                                                                              now))


def second_person(authority: Authority, first: Operator, second: OperatorCredential | None, action: str,
                  target: str, now: float) -> Operator:
    """The second of four eyes, once the first is allowed (e.g. by the operator API): another person, allowed too."""
    if second is None:
        raise FourEyesRefused(f"{action} needs a second person", reason="data.four_eyes_incomplete")
    if isinstance(second.user, str) and second.user.removeprefix("user:") == first.name:
        raise FourEyesRefused(f"{action}: {first.name} cannot be both people", reason="data.four_eyes_same_person")
    return _two(action, first, authority.authorize(second, action, target, now))[1]


@dataclass(frozen=True)
class Rotation:
    segment: str
    environment: str
    previous: int
    current: int
    rewrapped: int


def lifecycle_target(segment: str, environment: str) -> str:
    """The operator target of a lifecycle action: ``<environment>/<segment>``."""
    Labels("public", environment, segment)
    return f"{environment}/{segment}"


def _two(action: str, first: Operator, second: Operator | None) -> tuple[Operator, Operator]:
    if second is None:
        raise FourEyesRefused(f"{action} needs a second person", reason="data.four_eyes_incomplete")
    if first.name == second.name:
        raise FourEyesRefused(f"{action}: {first.name} cannot be both people", reason="data.four_eyes_same_person")
    return first, second


class KeyLifecycle:
    """Rotate and shred, for two people the operator authority allowed (:func:`four_eyes`) just now."""

    def __init__(self, keys: KekStore, objects: ObjectStore, emitter: Emitter) -> None:
        self.keys = keys
        self.objects = objects
        self.emitter = emitter

    def rotate(self, segment: str, environment: str, first: Operator, second: Operator | None,
               now: float) -> Rotation:
        target = lifecycle_target(segment, environment)
        a, b = _two("data.rotate", first, second)
        previous, new = self.keys.rotate(segment, environment)
        count = 0
        for sealed in self.objects.list(environment, segment):
            if sealed.kek_version != new.version:
                old = self.keys.get(segment, environment, sealed.kek_version)
                self.objects.put(rewrap(sealed, old, new))
                count += 1
        for version in self.keys.versions(segment, environment):
            if version != new.version:
                self.keys.destroy(segment, environment, version)
        self.emitter.emit(Kind.ADMIN_ACTION, principal=a.principal, action="data.rotate", resource=target,
                          decision="allow", trust_domain=environment,
                          detail={"second": b.principal, "previous": previous.version, "current": new.version,
                                  "rewrapped": count})
        return Rotation(segment, environment, previous.version, new.version, count)

    def shred(self, segment: str, environment: str, first: Operator, second: Operator | None,
              now: float) -> list[int]:
        target = lifecycle_target(segment, environment)
        a, b = _two("data.shred", first, second)
        versions = self.keys.shred(segment, environment, now)
        self.emitter.emit(Kind.ADMIN_ACTION, principal=a.principal, action="data.shred", resource=target,
                          decision="allow", trust_domain=environment,
                          detail={"second": b.principal, "versions": versions})
        return versions
