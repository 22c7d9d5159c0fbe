"""Policy errors: why a policy set, a request or a topology was refused.

Each carries a stable dotted reason code that lands in audit records and CLI
output::

    PolicyError (trustfabric.errors)          policy.error
    ├── PolicyLoadError                       policy.load.*      (set refused whole, last good set kept)
    │     policy.load.syntax, policy.load.schema, policy.load.validation,
    │     policy.load.annotation, policy.load.duplicate_id, policy.load.empty,
    │     policy.load.entities, policy.load.io
    ├── TopologyError                         policy.topology.*  (manifest unreadable or inconsistent)
    ├── RequestError                          policy.request.*   (a request the engine denies outright)
    │     policy.request.unknown_principal, policy.request.unknown_action,
    │     policy.request.unknown_resource, policy.request.malformed_context,
    │     policy.request.oversized_context, policy.request.wrong_trust_domain
    ├── PolicyTestError                       policy.test.*      (a test-case file that cannot be read)
    ├── SignalsMissing                        signal.missing     (an engine with no signal source: every read denies)
    ├── RecordedError                         policy.recorded.*  (an audit log to suggest from / replay is unreadable)
    └── BundleError                           policy.bundle.*    (a policy bundle refused: unsigned, tampered,
          policy.bundle.malformed, .digest, .unsigned,          under-signed, stale; the active version keeps serving)
          .signature, .under_signed, .same_approver, .author_signed, .unknown_approver,
          .stale, .not_in_history, .tests_failed, .topology_mismatch, .no_active, .key

Signal errors live in :mod:`trustfabric.signals.errors`. cedarpy's ``ValueError``
and its validation results are translated into these in
:mod:`trustfabric.policy.loading` and :mod:`trustfabric.policy.engine` (cedarpy itself is
imported only by :mod:`trustfabric.policy.cedar`).
"""

from __future__ import annotations

from trustfabric.errors import PolicyError


class PolicyLoadError(PolicyError):
    """A policy set (or its schema or entities) could not be loaded; ``errors`` lists every problem."""

    reason = "policy.load.refused"

    def __init__(self, detail: str = "", *, reason: str | None = None, errors: tuple[str, ...] = ()) -> None:
        super().__init__(detail, reason=reason)
        self.errors = errors or ((detail,) if detail else ())


class TopologyError(PolicyError):
    reason = "policy.topology.invalid"


class RequestError(PolicyError):
    reason = "policy.request.invalid"


class PolicyTestError(PolicyError):
    reason = "policy.test.invalid"


class SignalsMissing(PolicyError):
    """No signal source was configured: what the engine would need to decide is unknown, so it denies."""

    reason = "signal.missing"


class RecordedError(PolicyError):
    reason = "policy.recorded.invalid"


class BundleError(PolicyError):
    """A policy bundle refused; nothing changed and the active version keeps serving."""

    reason = "policy.bundle.refused"
