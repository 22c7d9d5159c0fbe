"""Hosts run by their own runner: enrolment (``trustfabric host enrol``), a person's operator action.

A deployment whose replicas and hosts have fixed ports (:meth:`~trustfabric.trading.deployment.Deployment.require_fixed`)
runs without the launcher: each machine runs its part. Before a machine's runner
(``trustfabric host serve``, :mod:`trustfabric.trading.runner`) can start the services the deployment places
there, a security officer enrols the host (``host.enrol`` on ``Control::"hosts"``, password and a TOTP
verified with the request, decided by Cedar, audited under the person):

* the CLI generates one posture-agent key per topology host of those services on the officer's machine
  (the private halves never leave it: they go to the enrolment directory, 0600) and sends the public halves;
* the control plane (or, with no floor running, the store) registers them as those hosts' keys and marks
  the hosts as run by their own agent (the control plane no longer runs agents for them), and issues one
  join token per service, in the store (any replica redeems it once) and good for ``ttl_s``;
* the reply carries the tokens, the floor's trust bundle, the control plane's SPIFFE ID and the approval key
  that pre-trade risk and the order router share (kept in the store, sealed beyond one machine).

The enrolment directory is what the officer copies to the machine; a runner's services join with its
tokens once, so a machine that restarts its runner is enrolled again.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trustfabric.audit.events import Kind
from trustfabric.control.joins import JoinTokens
from trustfabric.control.plane import CONFIRM_NONE, CONTROL_NAME, CONTROL_SEGMENT, RUNNER_META, Applied, ControlPlane
from trustfabric.errors import ConfigError
from trustfabric.identity.operators import Operator
from trustfabric.policy.topology import Topology
from trustfabric.trading.deployment import Deployment, DeploymentError

ACTION = "host.enrol"
APPROVAL_SECRET = "approval_key"
DEFAULT_ENROL_TTL_S = 3600.0
MAX_ENROL_TTL_S = 86400.0
EDGE_SERVICES = frozenset({"fix-gateway"})  # its edge PKI lives beside the launcher: not on a runner's host


def topology_hosts(deployment: Deployment, topology: Topology, host: str) -> dict[str, list[str]]:
    """The topology hosts (posture agents) of the services ``host`` runs -> those services; refused when the
    host runs an edge service or shares a topology host with another machine."""
    placed = deployment.host(host).services
    edge = sorted(EDGE_SERVICES & set(placed))
    if edge:
        raise DeploymentError(f"host {host}: {edge} run beside the launcher only (trustfabric up)",
                              reason="deploy.runner_edge_service")
    out: dict[str, list[str]] = {}
    for service in placed:
        out.setdefault(topology.services[service].host, []).append(service)
    for other in deployment.hosts:
        if other.name != host and {topology.services[s].host for s in other.services} & set(out):
            raise DeploymentError(f"a posture host of {host} also runs services on {other.name}: one machine per "
                                  "posture host", reason="deploy.posture_host_split")
    return out


def enrol(identity: Any, topology: Topology, deployment: Deployment, host: str, keys: dict[str, str], ttl_s: float,
          now: float, who: str, emitter: Any) -> dict[str, str]:
    """Register ``keys`` (topology host -> raw Ed25519 public key, hex), issue the join tokens, return the reply."""
    expected = topology_hosts(deployment, topology, host)
    if set(keys) != set(expected):
        raise ConfigError(f"keys for {sorted(keys)}, the host runs the posture hosts {sorted(expected)}",
                          reason="host.enrol_keys")
    if not 60.0 <= ttl_s <= MAX_ENROL_TTL_S:
        raise ConfigError(f"ttl {ttl_s} s is not 60 .. {MAX_ENROL_TTL_S:.0f}", reason="host.enrol_ttl")
    try:
        public = {name: Ed25519PublicKey.from_public_bytes(bytes.fromhex(raw)) for name, raw in keys.items()}
    except ValueError:
        raise ConfigError("a host key is not a raw Ed25519 public key", reason="host.enrol_keys") from None
    for name, key in public.items():
        identity.register_host(name, key)
        identity.store.set_meta(RUNNER_META + name, host)
    approval = identity.store.get_secret(APPROVAL_SECRET)
    if approval is None:
        approval = secrets.token_bytes(32)
        identity.store.put_secret(APPROVAL_SECRET, approval)
    joins = JoinTokens(identity.store)
    tokens = {service: joins.issue(topology.spiffe_id(service), now, ttl_s)
              for services in expected.values() for service in services}
    emitter.emit(Kind.ADMIN_ACTION, principal=who, action=ACTION, resource=f"host:{host}", decision="allow",
                 detail={"posture_hosts": sorted(keys), "services": sorted(tokens), "expires_at": now + ttl_s})
    now_bundle = identity.ca(topology.trust_domain).bundle_pem(now).decode()
    return {"host": host, "tokens": json.dumps(tokens), "bundle_pem": now_bundle,
            "control_id": f"spiffe://{topology.trust_domain}/{CONTROL_SEGMENT}/{CONTROL_NAME}",
            "approval_key": approval.hex(), "expires_at": repr(now + ttl_s)}


def register(plane: ControlPlane, deployment: Deployment | None) -> None:
    """``host.enrol`` as an operator action of the running control plane (it knows the deployment)."""

    def action(plane: ControlPlane, operator: Operator, _action: str, target: str, args: dict[str, str],
               now: float) -> Applied:
        if deployment is None:
            raise ConfigError("this floor runs without a deployment file: no host to enrol", reason="host.no_deployment")
        try:
            keys, ttl_s = json.loads(args.get("keys", "{}")), float(args.get("ttl_s", DEFAULT_ENROL_TTL_S))
        except ValueError:
            raise ConfigError("keys must be a JSON object and ttl_s a number", reason="host.enrol_keys") from None
        if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
            raise ConfigError("keys must map posture hosts to hex public keys", reason="host.enrol_keys")
        result = enrol(plane.identity, plane.topology, deployment, target, keys, ttl_s, now, operator.principal,
                       plane.emitter)
        plane.refresh_host_keys()
        plane.drop_runner_agents()
        return Applied(operator.principal, CONFIRM_NONE, result)

    plane.add_operator_action(ACTION, action)
