"""What a service performed for the simulated attacker: counted by the service itself.

The simulator tags every malicious request with a trace id ``sim:<scenario>:<n>``
(and its orders with the same client order id, which pre-trade risk and the router
carry on as the trace id of their onward hops). A service started with the boot
flag ``sim_effects`` wraps its :class:`~trustfabric.enforcement.service.GuardedService`
with :func:`install_effect_counter`: after a handler ran for a tagged request, the
reply says whether the effect happened (a :class:`~trustfabric.enforcement.service.Refusal`
or a reply with ``ok: false`` did not; anything else - including no reply body -
did). Counts ride in the service's stats (``sim|<scenario>|<action>|<resource>``,
``sim|<scenario>|records`` for records returned by reads) to the control plane's
report table, where the runner reads them. Untagged traffic costs one ``startswith``.
"""

from __future__ import annotations

from typing import Any

import msgspec

TRACE_PREFIX = "sim:"
SEP = "|"
READ_ACTIONS = frozenset({"read_positions", "read_client_orders"})  # protected data (not market data)


def trace_tag(scenario: str, n: int) -> str:
    return f"{TRACE_PREFIX}{scenario}:{n}"


def scenario_of(trace_id: str) -> str:
    """``sim:<scenario>:<n>`` -> ``<scenario>`` ("" for anything else)."""
    if not trace_id.startswith(TRACE_PREFIX):
        return ""
    body = trace_id[len(TRACE_PREFIX):]
    return body.rsplit(":", 1)[0] if ":" in body else body


def effect_of(reply: Any) -> tuple[bool, int]:
    """(performed, records returned) of one handler reply."""
    if reply is None:
        return True, 0
    if not isinstance(reply, (bytes, bytearray, memoryview)):
        return False, 0  # a Refusal (or anything that is not an encoded reply)
    try:
        value = msgspec.msgpack.decode(bytes(reply))
    except msgspec.DecodeError:
        return True, 0
    if isinstance(value, dict):
        if value.get("ok") is False:
            return False, 0
        records = sum(len(v) for v in value.values() if isinstance(v, list))
        return True, records
    return True, 0


def effect_key(scenario: str, action: str, resource: str) -> str:
    return SEP.join(("sim", scenario, action, resource))


def install_effect_counter(svc: Any, counts: dict[str, float]) -> None:
    """Wrap ``svc.dispatch_request`` so tagged requests that took effect are counted into ``counts``."""
    inner = svc.dispatch_request

    async def dispatch_request(ctx: Any, req: Any) -> Any:
        reply = await inner(ctx, req)
        trace = req.trace_id
        if trace and trace.startswith(TRACE_PREFIX):
            performed, records = effect_of(reply)
            if performed:
                scenario = scenario_of(trace)
                key = effect_key(scenario, req.action, req.resource)
                counts[key] = counts.get(key, 0) + 1
                if records and req.action in READ_ACTIONS:
                    rkey = SEP.join(("sim", scenario, "records"))
                    counts[rkey] = counts.get(rkey, 0) + records
        return reply

    svc.dispatch_request = dispatch_request


def collect(stats: dict[str, dict[str, float]], scenario: str) -> tuple[dict[tuple[str, str, str], int], int]:
    """From every service's stats: {(service, action, resource): n} and records read for ``scenario``."""
    performed: dict[tuple[str, str, str], int] = {}
    records = 0
    prefix = SEP.join(("sim", scenario, ""))
    for service, values in stats.items():
        for key, n in values.items():
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix):]
            if rest == "records":
                records += int(n)
                continue
            action, _, resource = rest.partition(SEP)
            performed[(service, action, resource)] = performed.get((service, action, resource), 0) + int(n)
    return performed, records
