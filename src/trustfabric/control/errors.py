"""The control plane's exceptions.

::

    IdentityError (trustfabric.errors)
    └── BootstrapRefused          bootstrap.join_token_unknown, bootstrap.join_token_reused,
                                  bootstrap.join_token_expired, bootstrap.identity_mismatch,
                                  bootstrap.bad_request, bootstrap.wrong_server,
                                  bootstrap.unreachable, and every attest.* / posture.* /
                                  cert.* reason of the attesting issuer (copied through)
    PolicyError (trustfabric.errors)
    └── ControlRefused            control.audience_not_permitted, control.unknown_audience,
                                  control.not_owner, control.bad_request, control.unreachable,
                                  control.wrong_server, control.state_unavailable,
                                  control.not_leader

A refusal crosses the wire as its reason code only (``ErrorFrame`` / a refused
reply); the workload side raises the same class with the same reason.
"""

from __future__ import annotations

from trustfabric.errors import IdentityError, PolicyError


class BootstrapRefused(IdentityError):
    reason = "bootstrap.refused"


class ControlRefused(PolicyError):
    reason = "control.refused"


STATE_UNAVAILABLE = "control.state_unavailable"  # the shared state of record (PostgreSQL) cannot be reached
NOT_LEADER = "control.not_leader"  # a follower replica: operators' changes go to the lease holder
