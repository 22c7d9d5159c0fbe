"""The key service: unwrap is a request, decided by Cedar at an enforcement point, audited.

Theory of operation
-------------------
The key service holds the key store (:class:`~trustfabric.data.keystore.KekStore`) and
fronts it with an ordinary :class:`~trustfabric.enforcement.pep.EnforcementPoint` whose
audience is the key service's own SPIFFE ID. A caller first opens a session exactly as
with any service: its certificate from the mTLS layer and its access token, verified by
the identity plane's :class:`~trustfabric.identity.tokens.TokenVerifier` for this
audience and bound (``cnf.x5t#S256``) to that certificate; the principal's decision
table is pulled from the policy engine then. Each request after that is one
:meth:`~trustfabric.enforcement.pep.EnforcementPoint.check` of
(``data_write`` | ``data_read`` | ``data_analyse``, ``data/<segment>/<classification>``):
a lookup in the session's cached Cedar decisions, with its epochs, deadlines and
obligations, written to the enforcement point's decision log. A permitted read therefore
costs microseconds and every one is audited; an invalidation (quarantine, signal) is
seen on the next request.

Before the check, environments: a dataset of another environment than the key service's
is refused (``data.cross_environment``), and so is a caller whose SPIFFE ID is of
another trust domain - dev and test identities never unwrap prod KEKs (their tokens and
certificates are refused at session open already; this is the second wall).

The data key never leaves the service: :class:`Vault` seals and opens objects here and
returns plaintext - or, for ``analyse``, the records with client fields tokenized
(:mod:`trustfabric.data.tokenize`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from trustfabric.audit.events import Kind
from trustfabric.data.envelope import (
    Kek,
    SealedObject,
    decode,
    open_with_key,
    seal,
    unwrap_data_key,
)
from trustfabric.data.errors import UnwrapRefused
from trustfabric.data.keystore import KekStore
from trustfabric.data.labels import Labels, action_for, check_object_id
from trustfabric.data.objects import ObjectStore
from trustfabric.data.tokenize import tokenize_records
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.ports import PeerLike
from trustfabric.enforcement.session import Session

SERVICE_NAME = "key-service"
SERVICE_SEGMENT = "vault"


def key_service_id(trust_domain: str) -> str:
    """The key service's SPIFFE ID in a trust domain (the audience of its tokens)."""
    return f"spiffe://{trust_domain}/{SERVICE_SEGMENT}/{SERVICE_NAME}"


class KeyService:
    def __init__(self, pep: EnforcementPoint, keys: KekStore, environment: str) -> None:
        self.pep = pep
        self.keys = keys
        self.environment = environment
        self._prefix = f"spiffe://{environment}."
        self.unwraps = 0

    def open_session(self, peer: PeerLike, token: str) -> Session:
        """Admit a caller like any enforcement point (raises the PEP's typed ``SessionRefused``)."""
        return self.pep.open_session(peer, token)

    def _refuse(self, session: Session | None, action: str, labels: Labels, reason: str, detail: str) -> UnwrapRefused:
        self.pep.events.emit(Kind.DECISION, principal=str(getattr(session, "principal", "")), action=action,
                             resource=labels.dataset, decision="deny", reason=reason,
                             detail={"environment": labels.environment})
        return UnwrapRefused(detail, reason=reason)

    def authorize(self, session: Session | None, purpose: str, labels: Labels) -> None:
        """Raise :class:`UnwrapRefused` unless ``session`` may use ``labels``' keys for ``purpose`` now."""
        action = action_for(purpose)
        if labels.environment != self.environment:
            raise self._refuse(session, action, labels, "data.cross_environment",
                               f"the {self.environment} key service holds no {labels.environment} keys")
        principal = getattr(session, "principal", "")
        if principal.startswith("spiffe://") and not principal.startswith(self._prefix):
            raise self._refuse(session, action, labels, "data.cross_environment",
                               f"{principal} is not an identity of {self.environment}")
        allowed, reason = self.pep.check(session, action, labels.dataset)
        if not allowed:
            raise UnwrapRefused(f"{principal or 'no session'} may not {purpose} {labels.dataset} ({reason})",
                                reason=reason)

    def kek_for_write(self, session: Session | None, labels: Labels) -> Kek:
        self.authorize(session, "write", labels)
        return self.keys.current(labels.segment, labels.environment, create=True)

    def unwrap(self, session: Session | None, sealed: SealedObject, labels: Labels, purpose: str) -> bytes:
        """The data key of ``sealed`` for ``purpose`` on the dataset the caller names (``labels``).

        The decision is on the labels requested, the KEK is that dataset's; a file whose header
        claims other labels fails to unwrap or, after, to authenticate (kept inside :class:`Vault`).
        """
        self.authorize(session, purpose, labels)
        return self.unwrap_checked(sealed, labels)

    def unwrap_checked(self, sealed: SealedObject, labels: Labels) -> bytes:
        """The data key, for a request :meth:`authorize` just allowed (the vault calls it; nothing else)."""
        kek = self.keys.get(labels.segment, labels.environment, sealed.kek_version)
        self.unwraps += 1
        return unwrap_data_key(sealed, kek)


@dataclass(frozen=True)
class ObjectInfo:
    object_id: str
    labels: Labels
    kek_version: int
    size: int


class Vault:
    """Seal and open objects at the key service; plaintext leaves only to a permitted session."""

    def __init__(self, service: KeyService, objects: ObjectStore,
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.service = service
        self.objects = objects
        self._random = random

    def put(self, session: Session | None, object_id: str, labels: Labels, plaintext: bytes) -> SealedObject:
        check_object_id(object_id)
        kek = self.service.kek_for_write(session, labels)
        sealed = seal(object_id, labels, plaintext, kek, self._random)
        self.objects.put(sealed)
        return sealed

    def open(self, session: Session | None, sealed: SealedObject, object_id: str, labels: Labels,
             purpose: str = "read") -> bytes:
        """Open a sealed object (from the store, a backup, anywhere) for the id and labels expected."""
        self.service.authorize(session, purpose, labels)
        return self._open(sealed, object_id, labels, purpose)

    def _open(self, sealed: SealedObject, object_id: str, labels: Labels, purpose: str) -> bytes:
        plaintext = open_with_key(sealed, object_id, labels, self.service.unwrap_checked(sealed, labels))
        if purpose == "analyse":
            return tokenize_records(self.service.keys.tokenization_key(labels.segment, labels.environment), plaintext)
        return plaintext

    def get(self, session: Session | None, object_id: str, labels: Labels, purpose: str = "read") -> bytes:
        """Authorize first (a refused caller learns nothing, not even whether the object exists), then open."""
        self.service.authorize(session, purpose, labels)
        sealed = decode(self.objects.read_bytes(object_id, labels.segment, labels.environment))
        return self._open(sealed, object_id, labels, purpose)

    def list(self, environment: str | None = None, segment: str | None = None) -> list[ObjectInfo]:
        return [ObjectInfo(s.object_id, s.labels, s.kek_version, len(s.ciphertext))
                for s in self.objects.list(environment, segment)]
