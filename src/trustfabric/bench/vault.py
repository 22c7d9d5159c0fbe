"""``bench vault``: what the data vault costs, beside its baselines measured in the same run.

Everything runs in a scratch directory with its own CA, token key ring, policy engine
(the floor's policies, healthy signals) and key service, so no operator state is touched.

* ``read_cached_us_p50``: a permitted read of a 1 KiB object by a workload whose session
  (and so its Cedar decisions) is open: file read, decode, the enforcement point's check,
  KEK unwrap of the data key, AES-GCM open. Beside it ``plain_read_us_p50``: the same
  1 KiB from a plain file.
* ``seal_mb_s`` / ``open_mb_s``: 1 MiB objects sealed (fresh data key, AES-GCM, key wrap,
  encoding) and opened (decode, unwrap, AES-GCM) in memory; beside them ``aesgcm_mb_s``
  (AES-256-GCM encryption alone, same sizes).
* ``unwrap_ms_p50``: a cold unwrap at the key service: a new session (token verification,
  certificate binding, the principal's decision table from Cedar with the engine's cache
  cleared) and the unwrap. ``unwrap_cached_us_p50``: the unwrap alone in an open session.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trustfabric.audit.events import MemorySink
from trustfabric.clock import SYSTEM_CLOCK
from trustfabric.data.envelope import decode, encode, open_sealed, seal
from trustfabric.data.keyservice import KeyService, Vault, key_service_id
from trustfabric.data.keystore import KekStore
from trustfabric.data.labels import Labels
from trustfabric.data.objects import ObjectStore
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.tokens import KeyRing, ReplayCache, TokenIssuer, TokenVerifier
from trustfabric.identity.workload import issue_for_test
from trustfabric.policy.engine import PolicyEngine
from trustfabric.policy.topology import Topology

ISSUER = "https://idp.bench.example"
LABELS = Labels("client-confidential", "prod", "oms")


@dataclass(frozen=True)
class _Peer:
    spiffe_id: str
    cert_der: bytes
    fingerprint_sha256: str
    serial: int


def _p50_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def _mb_s(size: int, samples: list[float]) -> float:
    return size / statistics.median(samples) / 1e6


def run(reads: int = 5000, big: int = 20, unwraps: int = 200) -> dict[str, float | int]:
    now = SYSTEM_CLOCK.now()
    engine = PolicyEngine.from_dir(Topology.default_path().parent, assume_healthy=True)
    trust_domain = engine.topology.trust_domain
    ca = CertificateAuthority.create(trust_domain, now - 60)
    keyring = KeyRing.generate(now)
    tokens = TokenIssuer(keyring, ISSUER)
    audience = key_service_id(trust_domain)
    pep = EnforcementPoint(audience, engine, TokenVerifier(keyring, ISSUER, replay_cache=ReplayCache()),
                           sink=MemorySink(), buffer_size=1 << 16)
    with tempfile.TemporaryDirectory(prefix="bench-vault-") as tmp:
        home = Path(tmp)
        vault = Vault(KeyService(pep, KekStore(home / "vault-keys"), engine.topology.environment),
                      ObjectStore(home / "vault"))
        creds = issue_for_test(ca, engine.topology.spiffe_id("oms"), now - 60)
        peer = _Peer(str(creds.spiffe_id), creds.cert_der, creds.fingerprint_sha256, creds.serial)

        def session():
            token = tokens.issue(peer.spiffe_id, audience, SYSTEM_CLOCK.now(), 120, cert_der=peer.cert_der)
            return vault.service.open_session(peer, token)

        oms = session()
        small = os.urandom(1024)
        vault.put(oms, "bench-1k", LABELS, small)
        plain = home / "plain.bin"
        plain.write_bytes(small)
        clock = time.perf_counter
        read_s, plain_s = [], []
        for _ in range(reads):
            t0 = clock()
            data = vault.get(oms, "bench-1k", LABELS)
            t1 = clock()
            with open(plain, "rb") as fh:
                fh.read()
            t2 = clock()
            read_s.append(t1 - t0)
            plain_s.append(t2 - t1)
            if pep.pending_decisions() > 60000:
                pep.flush_decisions()
        pep.flush_decisions()

        mib = os.urandom(1 << 20)
        kek = vault.service.keys.current("oms", "prod")
        aes = AESGCM(os.urandom(32))
        seal_s, open_s, gcm_s = [], [], []
        for i in range(big):
            t0 = clock()
            blob = encode(seal(f"big-{i}", LABELS, mib, kek))
            t1 = clock()
            out = open_sealed(decode(blob), f"big-{i}", LABELS, kek)
            t2 = clock()
            aes.encrypt(os.urandom(12), mib, b"")
            t3 = clock()
            seal_s.append(t1 - t0)
            open_s.append(t2 - t1)
            gcm_s.append(t3 - t2)

        sealed = vault.objects.get("bench-1k", "oms", "prod")
        cold_s, warm_s = [], []
        for _ in range(unwraps):
            engine.clear_table_cache()
            t0 = clock()
            s = session()
            vault.service.unwrap(s, sealed, LABELS, "read")
            t1 = clock()
            vault.service.unwrap(s, sealed, LABELS, "read")
            t2 = clock()
            cold_s.append(t1 - t0)
            warm_s.append(t2 - t1)
            pep.close(s)
        pep.flush_decisions()
    return {
        "read_cached_us_p50": round(_p50_us(read_s), 2),
        "plain_read_us_p50": round(_p50_us(plain_s), 2),
        "read_vs_plain": round(statistics.median(read_s) / statistics.median(plain_s), 2),
        "seal_mb_s": round(_mb_s(1 << 20, seal_s), 1),
        "open_mb_s": round(_mb_s(1 << 20, open_s), 1),
        "aesgcm_mb_s": round(_mb_s(1 << 20, gcm_s), 1),
        "unwrap_ms_p50": round(statistics.median(cold_s) * 1e3, 3),
        "unwrap_cached_us_p50": round(_p50_us(warm_s), 2),
        "reads": reads,
        "objects_1mib": big,
        "unwraps": unwraps,
        "verified": data == small and out == mib,  # the plaintexts came back intact
        "fail_open": pep.fail_open,
    }
