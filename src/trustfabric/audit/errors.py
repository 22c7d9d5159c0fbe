"""The audit package's exceptions, all below :class:`trustfabric.errors.AuditError`.

Each carries a stable dotted reason code (what a CLI prints and a test asserts)::

    AuditError                      audit.error
    ├── AuditUnavailable            audit.unavailable       a record cannot be made durable:
    │                                                        the caller must refuse new work
    ├── SpoolError                  audit.spool.invalid     a spool used wrongly (sequence order, closed)
    │   └── SpoolCorrupt            audit.spool.corrupt     a bad frame that is not a torn tail
    ├── ProofError                  audit.proof.invalid     a Merkle proof does not verify
    │   ├── InclusionProofError     audit.proof.inclusion
    │   └── ConsistencyProofError   audit.proof.consistency
    ├── TreeHeadError               audit.tree_head.invalid a tree head whose signature or form is bad
    ├── AuditStoreError             audit.store.error       the central store failed (sqlite translated)
    └── TamperDetected              audit.tamper            verify found the log altered; ``position``
                                                             is the first bad leaf index
"""

from __future__ import annotations

from trustfabric.errors import AuditError


class AuditUnavailable(AuditError):
    reason = "audit.unavailable"


class SpoolError(AuditError):
    reason = "audit.spool.invalid"


class SpoolCorrupt(SpoolError):
    reason = "audit.spool.corrupt"


class ProofError(AuditError):
    reason = "audit.proof.invalid"


class InclusionProofError(ProofError):
    reason = "audit.proof.inclusion"


class ConsistencyProofError(ProofError):
    reason = "audit.proof.consistency"


class TreeHeadError(AuditError):
    reason = "audit.tree_head.invalid"


class AuditStoreError(AuditError):
    reason = "audit.store.error"


class TamperDetected(AuditError):
    reason = "audit.tamper"

    def __init__(self, detail: str = "", *, position: int, reason: str | None = None) -> None:
        self.position = position
        super().__init__(detail, reason=reason)


__all__ = [
    "AuditError", "AuditUnavailable", "SpoolError", "SpoolCorrupt", "ProofError",
    "InclusionProofError", "ConsistencyProofError", "TreeHeadError", "AuditStoreError",
    "TamperDetected",
]
