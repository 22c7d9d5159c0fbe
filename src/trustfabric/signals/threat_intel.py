"""Threat intelligence: STIX 2.1 bundles of indicators that forbid whatever they match.

A bundle is parsed and validated by the ``stix2`` library (``stix2.parse`` with no
custom content) and each indicator's STIX pattern by ``stix2-patterns``. We keep
the equality comparisons on the observables a trading fabric can see:

========================================  ===========================
pattern                                   matches
========================================  ===========================
``x509-certificate:hashes.'SHA-256'``     certificate fingerprint
``file:hashes.'SHA-256'``                 code digest of a workload
``url:value`` (``spiffe://...``)          SPIFFE ID
``ipv4-addr:value`` / ``ipv6-addr:value`` network address
========================================  ===========================

Every comparison of a pattern counts on its own (``AND`` is read as ``OR``): for a
deny list, matching more is the safe side. Revoked indicators and those outside
``valid_from``/``valid_until`` at ``now`` are skipped. A bundle that does not
parse, or holds no usable indicator, raises :class:`ThreatIntelError`; the caller
keeps the last good :class:`IndicatorSet`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

import stix2
from stix2patterns.pattern import Pattern

from trustfabric.nesting import json_nesting_exceeds
from trustfabric.signals.errors import ThreatIntelError

FINGERPRINT = "fingerprint"
CODE_DIGEST = "code_digest"
SPIFFE_ID = "spiffe_id"
ADDRESS = "address"
MAX_BUNDLE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class IndicatorSet:
    """Indicator values by observable kind: ``{kind: {value: indicator id}}``."""

    values: dict[str, dict[str, str]] = field(default_factory=dict)
    bundle_id: str = ""
    count: int = 0

    def match(self, kind: str, value: str | None) -> str | None:
        if not value:
            return None
        return self.values.get(kind, {}).get(value.lower() if kind in (FINGERPRINT, CODE_DIGEST) else value)


EMPTY = IndicatorSet()


def _classify(object_path: str, path: list, value: str) -> tuple[str, str] | None:
    dotted = ".".join(str(p) for p in path)
    if object_path == "x509-certificate" and dotted in ("hashes.SHA-256", "hashes.'SHA-256'"):
        return FINGERPRINT, value.lower().replace(":", "")
    if object_path == "file" and dotted in ("hashes.SHA-256", "hashes.'SHA-256'"):
        return CODE_DIGEST, value.lower()
    if object_path == "url" and dotted == "value" and value.startswith("spiffe://"):
        return SPIFFE_ID, value
    if object_path in ("ipv4-addr", "ipv6-addr") and dotted == "value":
        return ADDRESS, value
    return None


def parse_bundle(data: str | bytes | dict, now: float) -> IndicatorSet:
    """Validate a STIX 2.1 bundle and extract the indicators in force at ``now``."""
    if isinstance(data, (bytes, bytearray)):
        if len(data) > MAX_BUNDLE_BYTES:
            raise ThreatIntelError("bundle too large", reason="signal.intel.oversized")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ThreatIntelError(f"bundle is not UTF-8: {exc}", reason="signal.intel.malformed") from exc
    if isinstance(data, str) and len(data) > MAX_BUNDLE_BYTES:
        raise ThreatIntelError("bundle too large", reason="signal.intel.oversized")
    if isinstance(data, str) and json_nesting_exceeds(data):
        raise ThreatIntelError("bundle nested too deep", reason="signal.intel.malformed")
    try:
        if isinstance(data, str):
            json.loads(data)
        bundle = stix2.parse(data, allow_custom=False, version="2.1")
    except Exception as exc:  # noqa: BLE001 - stix2 raises STIXError, ValueError, TypeError...
        raise ThreatIntelError(f"STIX bundle does not parse: {exc}", reason="signal.intel.malformed") from exc
    if getattr(bundle, "type", None) != "bundle":
        raise ThreatIntelError("not a STIX bundle", reason="signal.intel.malformed")
    when = datetime.fromtimestamp(now, tz=timezone.utc)
    values: dict[str, dict[str, str]] = {}
    count = 0
    for obj in getattr(bundle, "objects", None) or ():
        if obj.type != "indicator" or obj.get("revoked", False):
            continue
        if obj.pattern_type != "stix":
            continue
        if obj.valid_from > when or (obj.get("valid_until") is not None and obj.valid_until <= when):
            continue
        try:
            comparisons = Pattern(obj.pattern).inspect().comparisons
        except Exception as exc:  # noqa: BLE001 - stix2patterns raises its own parse errors
            raise ThreatIntelError(f"{obj.id}: pattern does not parse: {exc}", reason="signal.intel.pattern") from exc
        for object_path, items in comparisons.items():
            for path, op, literal in items:
                if op != "=" or not isinstance(literal, str) or len(literal) < 2:
                    continue
                found = _classify(object_path, path, literal.strip("'"))
                if found:
                    kind, value = found
                    values.setdefault(kind, {})[value] = obj.id
                    count += 1
    return IndicatorSet(values=values, bundle_id=bundle.id, count=count)


def indicator_bundle(observations: list[tuple[str, str]], *, name: str = "trustfabric test indicators",
                     valid_from: str = "2020-01-01T00:00:00Z") -> str:
    """A STIX 2.1 bundle (JSON) with one indicator per ``(kind, value)``; for operators and tests."""
    patterns = {
        FINGERPRINT: "[x509-certificate:hashes.'SHA-256' = '{}']",
        CODE_DIGEST: "[file:hashes.'SHA-256' = '{}']",
        SPIFFE_ID: "[url:value = '{}']",
        ADDRESS: "[ipv4-addr:value = '{}']",
    }
    indicators = []
    for kind, value in observations:
        if kind not in patterns:
            raise ThreatIntelError(f"unknown observable kind {kind!r}", reason="signal.intel.kind")
        indicators.append(stix2.Indicator(name=name, pattern=patterns[kind].format(value), pattern_type="stix",
                                          valid_from=valid_from, indicator_types=["malicious-activity"]))
    return stix2.Bundle(objects=indicators).serialize()
