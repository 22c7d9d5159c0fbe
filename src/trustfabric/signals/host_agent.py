"""A host posture agent: an Ed25519 key that signs this host's posture reports.

What runs on each host of the floor (and what tests and the demo use to feed the
signal hub): :meth:`HostPostureAgent.register` puts the agent's public key in a
:class:`~trustfabric.signals.posture.HostKeyRegistry`, and :meth:`report` signs a
report of the host's state at a given time.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustfabric.signals.posture import HostKeyRegistry, PostureReport, SignedPostureReport, sign_report


class HostPostureAgent:
    def __init__(self, host: str, key: Ed25519PrivateKey | None = None) -> None:
        self.host = host
        self._key = key if key is not None else Ed25519PrivateKey.generate()

    def register(self, registry: HostKeyRegistry) -> str:
        return registry.register(self.host, self._key.public_key())

    def report(self, now: float, *, patch_age_days: int = 1, disk_encrypted: bool = True, edr_running: bool = True,
               secure_boot: bool = True) -> SignedPostureReport:
        return sign_report(PostureReport(host=self.host, issued_at=now, patch_age_days=patch_age_days,
                                         disk_encrypted=disk_encrypted, edr_running=edr_running,
                                         secure_boot=secure_boot, agent_version="trustfabric-agent/1"),
                           self._key)


def attest_hosts(hub, hosts, now: float) -> dict[str, HostPostureAgent]:
    """Register an agent per host with ``hub`` and report a healthy posture for each; returns the agents."""
    agents = {}
    for host in hosts:
        agent = HostPostureAgent(host)
        agent.register(hub.host_keys)
        hub.report_posture(agent.report(now), origin=f"agent:{host}")
        agents[host] = agent
    return agents
