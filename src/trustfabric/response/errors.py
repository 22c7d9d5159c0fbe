"""Errors of the response plane (detection, containment, release, incident store).

Response acts as a policy administrator (it quarantines and releases principals),
so its errors sit under :class:`~trustfabric.errors.PolicyError`::

    PolicyError
    └── ResponseError                response.error
        ├── ReleaseRefused           release.not_officer | release.step_up_required
        │                            release.step_up_stale | release.not_quarantined
        ├── ContainmentError         containment.failed (a containment step raised)
        ├── ResponseConfigError      response.config_invalid (bad thresholds / rules)
        └── IncidentStoreError       response.store_failed (sqlite3 translated here)
"""

from __future__ import annotations

from trustfabric.errors import PolicyError

RELEASE_NOT_OFFICER = "release.not_officer"
RELEASE_STEP_UP_REQUIRED = "release.step_up_required"
RELEASE_STEP_UP_STALE = "release.step_up_stale"
RELEASE_NOT_QUARANTINED = "release.not_quarantined"
CONTAINMENT_FAILED = "containment.failed"


class ResponseError(PolicyError):
    reason = "response.error"


class ReleaseRefused(ResponseError):
    """A release of a quarantined principal was refused (who asked, or how fresh their MFA is)."""

    reason = RELEASE_NOT_OFFICER


class ContainmentError(ResponseError):
    reason = CONTAINMENT_FAILED


class ResponseConfigError(ResponseError):
    reason = "response.config_invalid"


class IncidentStoreError(ResponseError):
    reason = "response.store_failed"
