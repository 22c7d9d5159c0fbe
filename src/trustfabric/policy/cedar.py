"""Cedar, and the only module that imports cedarpy.

Every other part of the policy package reaches Cedar through these few calls, so the
binding (its handles, its exceptions, the shape of its answers) is read in one place:
parsing and validation raise ``ValueError`` as cedarpy does (the loader turns them into
:class:`~trustfabric.policy.errors.PolicyLoadError`), and an authorization answer is the
plain response dictionary (``decision``, ``diagnostics``) the engine interprets.
"""

from __future__ import annotations

from typing import Any

import cedarpy

__all__ = ["parse_schema", "parse_policies", "validate", "parse_entities", "authorize_batch", "authorize_naive"]


def parse_schema(text: str) -> Any:
    """A ``cedarpy.Schema`` handle; ``ValueError`` when the text does not parse."""
    return cedarpy.Schema.from_str(text)


def parse_policies(text: str) -> Any:
    """A ``cedarpy.PolicySet`` handle; ``ValueError`` when the text does not parse."""
    return cedarpy.PolicySet.from_str(text)


def validate(text: str, schema: Any) -> Any:
    """Cedar's validation of a policy text against a schema (``validation_passed``, ``errors``)."""
    return cedarpy.validate_policies(text, schema)


def parse_entities(entities_json: str, schema: Any) -> Any:
    """A ``cedarpy.Entities`` handle, checked against the schema; ``ValueError`` when they do not fit."""
    return cedarpy.Entities.from_json_str(entities_json, schema)


def authorize_batch(requests: list[dict], policies: Any, entities: Any) -> list[dict]:
    """One cedarpy batch over pre-parsed handles (``entities`` may also be JSON text): the response
    dictionaries, in request order. Raises whatever cedarpy raises (callers deny on any exception)."""
    return [result._authz_resp for result in cedarpy.is_authorized_batch(requests, policies, entities)]


def authorize_naive(request: dict, policies_text: str, entities_json: str, schema_text: str) -> bool:
    """A per-request PDP's way: policy text, entity JSON and schema text all re-parsed on this call
    (the benchmarks' baseline against the engine's pre-parsed handles)."""
    return cedarpy.is_authorized(request, policies_text, entities_json, schema_text).allowed
