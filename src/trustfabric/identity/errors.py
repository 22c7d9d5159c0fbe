"""The identity plane's exceptions, all below :class:`trustfabric.errors.IdentityError`.

Every refusal carries a stable dotted reason code (it lands in audit events and in
the CLI's one-line refusal)::

    IdentityError                       identity.refused
    ├── SpiffeIdError                   spiffe.invalid
    ├── CertificateError                cert.san, cert.expired, cert.not_yet_valid,
    │                                   cert.wrong_trust_domain, cert.untrusted,
    │                                   cert.revoked, cert.malformed, cert.csr,
    │                                   cert.basic_constraints, cert.path_length,
    │                                   cert.key_usage, cert.eku, cert.critical_extension,
    │                                   cert.name_constraints, cert.weak_key,
    │                                   cert.weak_signature, cert.key_identifier, cert.profile
    ├── CaError                         ca.unknown_domain, ca.missing, ca.exists
    ├── AttestationError                attest.unpromoted_digest, attest.bad_digest,
    │                                   posture.* (copied from the posture verdict)
    ├── UserError                       user.unknown, user.bad_password, user.locked,
    │                                   user.bad_totp, user.totp_replay, user.bad_role,
    │                                   user.exists, user.step_up_required
    ├── TokenError                      token.* (see :mod:`trustfabric.identity.tokens`)
    └── StoreError                      store.error

Foreign exceptions (``cryptography``, ``jwt``, ``argon2``, ``sqlite3``) are
translated into these where the foreign library is called.
"""

from __future__ import annotations

from trustfabric.errors import IdentityError

__all__ = [
    "IdentityError",
    "SpiffeIdError",
    "CertificateError",
    "CaError",
    "AttestationError",
    "UserError",
    "TokenError",
    "StoreError",
]


class SpiffeIdError(IdentityError):
    reason = "spiffe.invalid"


class CertificateError(IdentityError):
    reason = "cert.untrusted"


class CaError(IdentityError):
    reason = "ca.missing"


class AttestationError(IdentityError):
    reason = "attest.refused"


class UserError(IdentityError):
    reason = "user.refused"


class TokenError(IdentityError):
    reason = "token.invalid"


class StoreError(IdentityError):
    reason = "store.error"
