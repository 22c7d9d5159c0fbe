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
``valid_from``/``valid_until`` at ``now`` are skipped (a feed withdraws indicators
by revoking them, so a bundle of withdrawn indicators is a good bundle).

A bundle is refused with :class:`ThreatIntelError`, and the caller keeps the last
good :class:`IndicatorSet`, when it is:

=====================================  =============================================
``signal.intel.oversized``             larger than ``MAX_BUNDLE_BYTES``
``signal.intel.malformed``             not UTF-8, not JSON
``signal.intel.not_a_bundle``          JSON, but not an object of ``type`` ``bundle``
``signal.intel.empty``                 a bundle without objects (``{"type": "bundle"}``)
``signal.intel.not_stix``              objects that are not STIX 2.1 (no type, custom)
``signal.intel.no_indicators``         STIX objects, none of them an indicator
``signal.intel.pattern``               an indicator whose pattern does not parse
``signal.intel.no_usable_indicator``   indicators, none on an observable we can see
=====================================  =============================================

The set's ``bundle_id`` is ``sha256:<hex>`` over the bundle's canonical content (its
objects, each as JSON with sorted keys and no whitespace, in sorted order): the same
content always has the same id, and neither a random id (``stix2`` makes one up for
a bundle without ``id``) nor one chosen by the sender names it.
"""

from __future__ import annotations

import hashlib
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


def content_digest(objects: list) -> str:
    """``sha256:<hex>`` over a bundle's objects in canonical form (sorted keys, no whitespace, sorted)."""
    canonical = sorted(json.dumps(o, sort_keys=True, separators=(",", ":"), ensure_ascii=False) for o in objects)
    return "sha256:" + hashlib.sha256(("[" + ",".join(canonical) + "]").encode("utf-8")).hexdigest()


def _comparisons(indicator_id: object, pattern: object) -> dict:
    """The comparisons of a STIX pattern, or ``signal.intel.pattern``."""
    if not isinstance(pattern, str):
        raise ThreatIntelError(f"{indicator_id}: pattern is not a string", reason="signal.intel.pattern")
    try:
        return Pattern(pattern).inspect().comparisons
    except Exception as exc:  # noqa: BLE001 - stix2patterns raises its own parse errors
        raise ThreatIntelError(f"{indicator_id}: pattern does not parse: {exc}", reason="signal.intel.pattern") from exc


def _decode(data: str | bytes | dict) -> dict:
    """The bundle as a JSON object, or a refusal (oversized, malformed, not a bundle, empty)."""
    if isinstance(data, (bytes, bytearray)):
        if len(data) > MAX_BUNDLE_BYTES:
            raise ThreatIntelError("bundle too large", reason="signal.intel.oversized")
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ThreatIntelError(f"bundle is not UTF-8: {exc}", reason="signal.intel.malformed") from exc
    if isinstance(data, str):
        if len(data) > MAX_BUNDLE_BYTES:
            raise ThreatIntelError("bundle too large", reason="signal.intel.oversized")
        if json_nesting_exceeds(data):
            raise ThreatIntelError("bundle nested too deep", reason="signal.intel.malformed")
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ThreatIntelError(f"bundle is not JSON: {exc}", reason="signal.intel.malformed") from exc
    if not isinstance(data, dict) or data.get("type") != "bundle":
        raise ThreatIntelError("not a STIX bundle (a JSON object of type 'bundle')", reason="signal.intel.not_a_bundle")
    objects = data.get("objects")
    if objects is None or objects == []:
        raise ThreatIntelError("the bundle holds no objects", reason="signal.intel.empty")
    if not isinstance(objects, list):
        raise ThreatIntelError("the bundle's objects are not a list", reason="signal.intel.not_stix")
    return data


def parse_bundle(data: str | bytes | dict, now: float) -> IndicatorSet:
    """Validate a STIX 2.1 bundle and extract the indicators in force at ``now`` (refusals: module docstring)."""
    raw = _decode(data)
    for obj in raw["objects"]:  # before stix2, which would name a bad pattern only as an invalid object
        if isinstance(obj, dict) and obj.get("type") == "indicator" and obj.get("pattern_type") == "stix":
            _comparisons(obj.get("id"), obj.get("pattern"))
    try:
        bundle = stix2.parse({k: v for k, v in raw.items() if k != "id"}, allow_custom=False, version="2.1")
    except Exception as exc:  # noqa: BLE001 - stix2 raises STIXError, ValueError, TypeError...
        raise ThreatIntelError(f"bundle objects are not STIX 2.1: {exc}", reason="signal.intel.not_stix") from exc
    indicators = [obj for obj in bundle.objects if obj.type == "indicator"]
    if not indicators:
        raise ThreatIntelError("the bundle holds no indicator", reason="signal.intel.no_indicators")
    when = datetime.fromtimestamp(now, tz=timezone.utc)
    values: dict[str, dict[str, str]] = {}
    count = 0
    withdrawn = 0
    for obj in indicators:
        if obj.pattern_type != "stix":
            continue
        comparisons = _comparisons(obj.id, obj.pattern)
        if obj.get("revoked", False) or obj.valid_from > when or (
                obj.get("valid_until") is not None and obj.valid_until <= when):
            withdrawn += 1
            continue
        for object_path, items in comparisons.items():
            for path, op, literal in items:
                if op != "=" or not isinstance(literal, str) or len(literal) < 2:
                    continue
                found = _classify(object_path, path, literal.strip("'"))
                if found:
                    kind, value = found
                    values.setdefault(kind, {})[value] = obj.id
                    count += 1
    if not count and not withdrawn:
        raise ThreatIntelError("no indicator names an observable the fabric sees (certificate, code digest, "
                               "SPIFFE ID, address)", reason="signal.intel.no_usable_indicator")
    return IndicatorSet(values=values, bundle_id=content_digest(raw["objects"]), count=count)


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
