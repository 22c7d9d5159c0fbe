"""The audit log in a SIEM's languages: OCSF 1.5 events, ArcSight CEF lines, JSON lines; RFC 5424 syslog.

Mapping of a record (:class:`~trustfabric.audit.events.AuditEventV1`) to OCSF:

==========================================  ======================================  =====================
record kind                                 OCSF class (``class_uid``)              activity
==========================================  ======================================  =====================
``handshake.refused``                       Authentication (3002)                   Logon (1), Failure
``session.refused``                         Authentication (3002)                   Logon (1), Failure
``session.close``                           Authentication (3002)                   Logoff (2)
``session.open``, ``session.renew``         Authorize Session (3003)                Assign Privileges (1)
``alert``                                   Detection Finding (2004)                Create (1)
everything else (decisions, admin, ...)     API Activity (6003)                     Other (99)
==========================================  ======================================  =====================

A principal that is a SPIFFE ID is a workload (``user.type_id`` System, ``uid`` the
SPIFFE ID); ``user:<name>`` is a person. ``status_id`` is Success for ``allow``,
Failure for ``deny``; ``status_detail`` carries the reason code. ``metadata.uid``
is the record's event id (what a SIEM de-duplicates on: forwarding is at least
once), ``metadata.sequence`` the index in the central log, ``metadata.correlation_uid``
the trace id (the ClOrdID of an order), ``unmapped`` whatever has no OCSF attribute.

CEF (``CEF:0|trustfabric|trustfabric|<version>|<kind>|<name>|<severity>|<extension>``)
escapes ``\\`` and ``|`` in the header, and ``\\``, ``=`` and line breaks in the
extension, as the CEF specification requires.

:func:`syslog_frame` wraps one message as RFC 5424 with octet counting (RFC 6587 /
RFC 5425 over TLS): ``<len> <PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from trustfabric import __version__
from trustfabric.audit.events import AuditEventV1, Kind
from trustfabric.audit.log import StoredRecord

OCSF_VERSION = "1.5.0"
PRODUCT = {"name": "trustfabric", "vendor_name": "trustfabric", "version": __version__}
FORMATS = ("ocsf", "cef", "jsonl")

AUTHENTICATION, AUTHORIZE_SESSION, DETECTION_FINDING, API_ACTIVITY = 3002, 3003, 2004, 6003
_CLASS = {AUTHENTICATION: ("Authentication", 3, "Identity & Access Management"),
          AUTHORIZE_SESSION: ("Authorize Session", 3, "Identity & Access Management"),
          DETECTION_FINDING: ("Detection Finding", 2, "Findings"),
          API_ACTIVITY: ("API Activity", 6, "Application Activity")}


def _user(principal: str) -> dict[str, Any]:
    """A workload (SPIFFE ID: a System user whose account is the SPIFFE ID) or a person (``user:<name>``)."""
    if principal.startswith("spiffe://"):
        name = principal.rsplit("/", 1)[-1]
        return {"uid": principal, "name": name, "type_id": 3, "type": "System",
                "domain": principal.removeprefix("spiffe://").split("/", 1)[0],
                "account": {"uid": principal, "name": name, "type_id": 99, "type": "SPIFFE ID"}}
    name = principal.removeprefix("user:") or "unknown"
    known = bool(principal)
    return {"uid": principal or "unknown", "name": name, "type_id": 1 if known else 0,
            "type": "User" if known else "Unknown",
            "account": {"uid": principal or "unknown", "name": name, "type_id": 99 if known else 0,
                        "type": "trustfabric person" if known else "Unknown"}}


def _service(name: str) -> dict[str, Any]:
    return {"name": name, "uid": name, "version": __version__}


def _status(event: AuditEventV1) -> dict[str, Any]:
    if event.decision == "allow":
        out: dict[str, Any] = {"status_id": 1, "status": "Success"}
    elif event.decision == "deny" or event.kind in (Kind.HANDSHAKE_REFUSED, Kind.SESSION_REFUSED):
        out = {"status_id": 2, "status": "Failure"}
    else:
        out = {"status_id": 0, "status": "Unknown"}
    if event.reason:
        out["status_detail"] = event.reason
    return out


def _endpoint(event: AuditEventV1) -> dict[str, Any]:
    """The source endpoint: the peer address when the record names one, else the reporting service."""
    address = str((event.detail or {}).get("peer_address") or (event.detail or {}).get("remote") or "")
    host, _, port = address.rpartition(":")
    if host and port.isdigit():
        return {"ip": host.strip("[]()' "), "port": int(port)}
    return {"name": event.source}


def to_ocsf(record: StoredRecord) -> dict[str, Any]:
    """One record as an OCSF 1.2 event (a dict ready for JSON)."""
    event = record.event()
    kind = event.kind
    if kind in (Kind.HANDSHAKE_REFUSED, Kind.SESSION_REFUSED):
        class_uid, activity = AUTHENTICATION, (1, "Logon")
    elif kind == Kind.SESSION_CLOSE:
        class_uid, activity = AUTHENTICATION, (2, "Logoff")
    elif kind in (Kind.SESSION_OPEN, Kind.SESSION_RENEW):
        class_uid, activity = AUTHORIZE_SESSION, (1, "Assign Privileges")
    elif kind == Kind.ALERT:
        class_uid, activity = DETECTION_FINDING, (1, "Create")
    else:
        class_uid, activity = API_ACTIVITY, (99, "Other")
    class_name, category_uid, category_name = _CLASS[class_uid]
    severity_id = 4 if kind == Kind.ALERT else (3 if event.decision == "deny" else 1)
    out: dict[str, Any] = {
        "class_uid": class_uid, "class_name": class_name, "category_uid": category_uid,
        "category_name": category_name, "activity_id": activity[0], "activity_name": activity[1],
        "type_uid": class_uid * 100 + activity[0], "type_name": f"{class_name}: {activity[1]}",
        "time": event.time_ns // 1_000_000, "severity_id": severity_id,
        "severity": {1: "Informational", 3: "Medium", 4: "High"}[severity_id],
        "metadata": {"version": OCSF_VERSION, "product": dict(PRODUCT), "uid": event.event_id,
                     "sequence": record.index, "log_name": event.source,
                     **({"correlation_uid": event.trace_id} if event.trace_id else {})},
        "message": f"{kind} {event.action} {event.resource}".strip(),
        **_status(event),
    }
    user = _user(event.principal)
    if class_uid == AUTHENTICATION:
        out.update(user=user, auth_protocol_id=99, auth_protocol="mTLS (X.509 SVID)", is_remote=True,
                   src_endpoint=_endpoint(event), service=_service(event.source))
    elif class_uid == AUTHORIZE_SESSION:
        out.update(user=user, session={"uid": event.trace_id or event.event_id, "is_remote": True},
                   privileges=[f"{event.action} {event.resource}".strip()] if event.action else [],
                   dst_endpoint={"name": event.source})
    elif class_uid == DETECTION_FINDING:
        out.update(finding_info={"uid": event.event_id, "title": event.reason or "trustfabric alert",
                                 "types": [event.action] if event.action else [],
                                 "desc": json.dumps(event.detail, sort_keys=True)[:2000] if event.detail else ""},
                   resources=[{"uid": event.principal or "unknown", "type": "principal"}])
    else:
        out.update(actor={"user": user, "app_name": event.source},
                   api={"operation": event.action or kind, "service": _service(event.source)},
                   src_endpoint=_endpoint(event),
                   resources=[{"uid": event.resource, "type": "resource"}] if event.resource else [])
    unmapped = {k: v for k, v in (("kind", kind), ("policy_ids", list(event.policy_ids)), ("epoch", event.epoch),
                                  ("trust_domain", event.trust_domain), ("obligations", event.obligations),
                                  ("detail", event.detail), ("peer_fingerprint", event.peer_fingerprint)) if v}
    if unmapped:
        out["unmapped"] = unmapped
    return out


# -- CEF ------------------------------------------------------------------------------------
def _cef_header(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _cef_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text.replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")


def to_cef(record: StoredRecord) -> str:
    """One record as an ArcSight CEF:0 line (no trailing newline)."""
    event = record.event()
    severity = 8 if event.kind == Kind.ALERT else (5 if event.decision == "deny" else 1)
    name = f"{event.kind} {event.action}".strip()
    header = "|".join(_cef_header(x) for x in ("CEF:0", "trustfabric", "trustfabric", __version__, event.kind,
                                                name, str(severity)))
    ext = {"rt": str(event.time_ns // 1_000_000), "externalId": event.event_id, "cs1Label": "decision",
           "cs1": event.decision, "reason": event.reason, "suser": event.principal, "act": event.action,
           "request": event.resource, "dvchost": event.source, "cs2Label": "trace", "cs2": event.trace_id,
           "cn1Label": "logIndex", "cn1": str(record.index)}
    if event.detail:
        ext.update(cs3Label="detail", cs3=event.detail)  # type: ignore[arg-type]
    return header + "|" + " ".join(f"{k}={_cef_value(v)}" for k, v in ext.items() if v != "")


def to_jsonl(record: StoredRecord) -> str:
    return record.data.decode()


FORMATTERS: dict[str, Callable[[StoredRecord], Any]] = {"ocsf": to_ocsf, "cef": to_cef, "jsonl": to_jsonl}


def render(record: StoredRecord, fmt: str) -> str:
    """One record as a line of ``fmt`` (OCSF as compact JSON)."""
    value = FORMATTERS[fmt](record)
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)


# -- syslog -----------------------------------------------------------------------------------
def syslog_frame(message: str, *, time_ns: int, msgid: str, hostname: str = "trustfabric",
                 app: str = "trustfabric", severity: int = 6, facility: int = 13) -> bytes:
    """An RFC 5424 message with octet-counting framing (facility 13: log audit)."""
    stamp = dt.datetime.fromtimestamp(time_ns / 1e9, tz=dt.timezone.utc).isoformat(timespec="microseconds")
    stamp = stamp.replace("+00:00", "Z")
    clean = lambda s, n: ("".join(ch for ch in s if 33 <= ord(ch) <= 126) or "-")[:n]  # noqa: E731
    body = (f"<{facility * 8 + severity}>1 {stamp} {clean(hostname, 255)} {clean(app, 48)} - "
            f"{clean(msgid, 32)} - ").encode() + b"\xef\xbb\xbf" + message.encode()
    return f"{len(body)} ".encode() + body
