"""Audit: the append-only, tamper-evident activity log of the fabric (NIST 800-207 activity logs / SIEM).

Every part emits :class:`~trustfabric.audit.events.AuditEventV1` records through an
:class:`~trustfabric.audit.events.Emitter` into a sink. Enforcement points write to a
local durable segment before an effect leaves them; a collector ships segments into
the central log, a Merkle tree (RFC 9162) with signed tree heads.
"""
