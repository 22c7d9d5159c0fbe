"""The vault inside a floor service: the owner seals its records before they leave it.

A floor service (the OMS, settlement) holds a :class:`ServiceVault`: a key service whose
enforcement point shares the service's table source (the control plane's decisions for
this principal, pushed invalidations included) and writes to the service's audit sink.
The service opens one certificate-only session with its own workload certificate (it is
the principal; its token-bound sessions are for other processes) and every seal or open
after that is one :meth:`~trustfabric.enforcement.pep.EnforcementPoint.check` of its
cached Cedar decisions. Keys live in ``$TRUSTFABRIC_HOME/vault-keys/``, sealed records in
``$TRUSTFABRIC_HOME/vault/`` (JSON lines, one object per batch).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from trustfabric.data.errors import DataError, UnwrapRefused
from trustfabric.data.keyservice import KeyService, Vault, key_service_id
from trustfabric.data.keystore import KekStore
from trustfabric.data.labels import Labels
from trustfabric.data.local import KEYS_DIR, OBJECTS_DIR
from trustfabric.data.objects import ObjectStore
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.ports import PeerLike, TableSource, TokenCheck
from trustfabric.enforcement.session import Session
from trustfabric.errors import TrustFabricError

PLAIN_DIR = "records"


class CertificateOnly:
    """The token port of a key service whose only session is its own service's certificate-only one."""

    def verify(self, token: str, audience: str, presented_cert_der: bytes | None = None,
               now: float | None = None) -> Any:
        raise DataError("this key service takes its own service's certificate-only session, no tokens",
                        reason="data.tokens_not_taken")


class ServiceVault:
    def __init__(self, home: Path, trust_domain: str, environment: str, tables: TableSource, tokens: TokenCheck,
                 *, sink: Any = None, clock: Any = None, source: str = "") -> None:
        kwargs = {"sink": sink, "source": f"{source}:vault" if source else None}
        if clock is not None:
            kwargs["clock"] = clock
        self.pep = EnforcementPoint(key_service_id(trust_domain), tables, tokens, **kwargs)
        self.vault = Vault(KeyService(self.pep, KekStore(home / KEYS_DIR), environment),
                           ObjectStore(home / OBJECTS_DIR))
        self.environment = environment
        self.session: Session | None = None
        self.sealed = self.opened = self.refused = 0
        self.last_refusal = ""
        self._seq = 0

    async def open(self, peer: PeerLike) -> None:
        """The service's own session at its key service (awaiting a remote table source)."""
        if self.pep.awaits_tables:
            self.session = await self.pep.open_connection_async(peer)
        else:
            self.session = self.pep.open_connection(peer)

    def on_invalidation(self, inv: Any) -> None:
        self.pep.on_invalidation(inv)

    def labels(self, classification: str, segment: str) -> Labels:
        return Labels(classification, self.environment, segment)

    def seal_records(self, prefix: str, labels: Labels, records: Iterable[Any], now_ns: int) -> str | None:
        """Seal a batch of records (msgspec structs or plain values) as one JSON-lines object; its id or None."""
        lines = [msgspec.json.encode(r) for r in records]
        if not lines:
            return None
        self._seq += 1
        object_id = f"{prefix}-{now_ns}-{self._seq}"
        try:
            self.vault.put(self.session, object_id, labels, b"\n".join(lines) + b"\n")
        except TrustFabricError as exc:
            self.refused += 1
            self.last_refusal = exc.reason
            return None
        self.sealed += 1
        return object_id

    def read_records(self, labels: Labels, purpose: str = "read") -> list[dict]:
        """Every record of a dataset this service may open; a refusal counts and yields nothing."""
        records: list[dict] = []
        for info in self.vault.list(labels.environment, labels.segment):
            if info.labels != labels:
                continue
            try:
                data = self.vault.get(self.session, info.object_id, labels, purpose)
            except UnwrapRefused as exc:  # the dataset is denied: every object of it alike
                self.refused += 1
                self.last_refusal = exc.reason
                break
            except DataError as exc:  # this object (shredded key, moved, damaged): the others may open
                self.refused += 1
                self.last_refusal = exc.reason
                continue
            self.opened += 1
            records.extend(json.loads(line) for line in data.splitlines() if line.strip())
        return records

    def flush(self) -> None:
        self.pep.flush_decisions()

    def stats(self) -> dict[str, float]:
        return {"vault_sealed": self.sealed, "vault_opened": self.opened, "vault_refused": self.refused}


def write_plain_records(home: Path, segment: str, classification: str, records: Iterable[Any], now_ns: int) -> Path | None:
    """The perimeter floor's way of keeping records: plain JSON lines under ``records/`` (protected by the
    network alone). The simulator counts what an attacker reading the disk finds here."""
    lines = [msgspec.json.encode(r) for r in records]
    if not lines:
        return None
    directory = home / PLAIN_DIR / segment / classification
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{now_ns}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


async def attach_service_vault(rt: Any, tables: TableSource, name: str) -> ServiceVault:
    """A floor service's vault: decisions from ``tables`` (its control plane), events to its sink, the
    control plane's invalidations forwarded to it too, and the service's own session opened."""
    topology = rt.topology
    vault = ServiceVault(rt.home, topology.trust_domain, topology.environment, tables, CertificateOnly(),
                         sink=rt.sink, clock=rt.clock, source=name)
    await vault.open(rt.credentials.current())
    forward = rt.control.on_invalidation

    def on_invalidation(inv: Any) -> None:
        forward(inv)
        vault.on_invalidation(inv)

    rt.control.on_invalidation = on_invalidation
    return vault


def json_lines(paths: Iterable[Path]) -> Iterator[Any]:
    """The JSON value of every line of ``paths``, in order; unreadable files and lines are skipped."""
    for path in paths:
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                yield json.loads(line)
            except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond reading
                continue


def read_plain_records(home: Path, segment: str, classification: str) -> list[dict]:
    """Every plain record the perimeter floor left under ``records/`` (unreadable lines skipped)."""
    return list(json_lines(sorted((home / PLAIN_DIR / segment / classification).glob("*.jsonl"))))
