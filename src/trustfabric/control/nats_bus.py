"""The control bus beyond one machine: NATS JetStream, itself zero trust.

Subjects (``tf.`` prefix):

==============================  =====================  =========================================
subject                         published by           taken by
==============================  =====================  =========================================
``tf.revocations.<kind>``       the control plane      every enforcement point
``tf.audit.records.<service>``  that service           the control plane (the central log)
``tf.audit.acks.<service>``     the control plane      that service (its spool may drop the stretch)
``tf.control.events``           a follower replica     the lease holder's response engine
==============================  =====================  =========================================

Revocations go through the JetStream stream ``TF_CONTROL`` with a message
id (``Nats-Msg-Id``): a duplicated or replayed publish inside the de-duplication window is
stored once. The current revocation set is also a JetStream key-value bucket
(``tf_revocations``, one key per revoked serial or quarantined SPIFFE ID), so an enforcement
point that (re)connects reads the whole set before it allows anything
(:meth:`NatsBus.revocation_snapshot`), again on every reconnection (``on_reconnect``): what was
published while it was away is applied then. A release deletes the quarantine's key. The control
plane's revocations reach the bus through a :class:`RevocationOutbox`: in order, each retried
until JetStream acknowledged it, so a revocation made while the bus is away is published when it
is back (the message id keeps it stored once however often it is retried).

The bus requires the fabric's certificates: the NATS server verifies each client's chain
against the trust domain's bundle and maps the user from the certificate's URI SAN, the
SPIFFE ID (``verify_and_map``); :func:`server_config` writes per-identity permissions from
the floor's topology: only the control plane publishes revocations, a service publishes
only its own audit records and hears only its own acknowledgements, and reads the
revocation bucket without being able to write it. A certificate of another trust
domain fails the TLS handshake.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import nats
from cryptography.hazmat.primitives import serialization
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, NotFoundError

from trustfabric.control.errors import ControlRefused
from trustfabric.identity.workload import new_key_and_csr
from trustfabric.keyfiles import key_to_pem, write_private_file
from trustfabric.policy.topology import Topology

STREAM = "TF_CONTROL"
BUCKET = "tf_revocations"
REVOCATIONS = "tf.revocations"
DEDUP_WINDOW_S = 120
EVENTS = "tf.control.events"  # security events a follower replica saw, for the lease holder's response engine


def control_permissions() -> dict[str, Any]:
    return {"publish": ["tf.>", "$JS.API.>", f"$KV.{BUCKET}.>"], "subscribe": ["tf.>", "_INBOX.>"]}


def service_permissions(service: str) -> dict[str, Any]:
    """Least privilege on the bus for one service's enforcement point."""
    kv = f"KV_{BUCKET}"
    return {
        "publish": {"allow": [f"tf.audit.records.{service}", f"$JS.API.STREAM.INFO.{kv}", f"$JS.API.CONSUMER.CREATE.{kv}",
                              f"$JS.API.CONSUMER.CREATE.{kv}.>", f"$JS.API.CONSUMER.DELETE.{kv}.>",
                              f"$JS.API.CONSUMER.INFO.{kv}.>", f"$JS.API.DIRECT.GET.{kv}.>",
                              f"$JS.API.STREAM.MSG.GET.{kv}", "$JS.API.INFO",
                              f"$JS.FC.{kv}.>", f"$JS.ACK.{kv}.>"],  # the watcher's flow control and acks
                    "deny": [f"{REVOCATIONS}.>", f"$KV.{BUCKET}.>"]},
        "subscribe": [f"{REVOCATIONS}.>", f"tf.audit.acks.{service}", "_INBOX.>"],
    }


def server_config(topology: Topology, *, listen: str, store_dir: Path, cert: Path, key: Path, bundle: Path,
                  control_id: str) -> str:
    """A nats-server configuration: TLS with the fabric's CA, users mapped from SPIFFE IDs, permissions."""
    users = [{"user": control_id, "permissions": control_permissions()}]
    for name in sorted(topology.services):
        users.append({"user": topology.spiffe_id(name), "permissions": service_permissions(name)})
    lines = [f"listen: {json.dumps(listen)}", f"jetstream {{ store_dir: {json.dumps(str(store_dir))} }}",
             "tls {", f"  cert_file: {json.dumps(str(cert))}", f"  key_file: {json.dumps(str(key))}",
             f"  ca_file: {json.dumps(str(bundle))}", "  verify_and_map: true", "  timeout: 2", "}",
             "authorization {", "  users = ["]
    lines += [f"    {json.dumps(u)}" for u in users]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def write_server_files(identity: Any, topology: Topology, out: Path, listen: str, control_id: str) -> Path:
    """Issue the NATS server a certificate of the floor's CA (``spiffe://<domain>/bus/nats``), write it, its key,
    the bundle and ``nats.conf`` under ``out``; returns the configuration's path. ``identity`` is the
    :class:`~trustfabric.identity.plane.IdentityPlane`."""
    ca = identity.ca(topology.trust_domain)
    sid = f"spiffe://{topology.trust_domain}/bus/nats"
    key, csr = new_key_and_csr(sid)
    cert = ca.issue(csr, sid, time.time(), ca.max_leaf_ttl_s)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    (out / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                                   + ca.current.issuing_cert.public_bytes(serialization.Encoding.PEM))
    write_private_file(out / "key.pem", key_to_pem(key))
    (out / "bundle.pem").write_bytes(ca.bundle_pem())
    conf = out / "nats.conf"
    conf.write_text(server_config(topology, listen=listen, store_dir=out / "jetstream", cert=out / "cert.pem",
                                  key=out / "key.pem", bundle=out / "bundle.pem", control_id=control_id))
    return conf


def client_tls(cert: Path, key: Path, bundle: Path) -> ssl.SSLContext:
    """TLS 1.3 with this workload's certificate; the server is checked against the trust domain's bundle."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # the server's identity is its SPIFFE ID, checked by the chain to our CA
    ctx.load_verify_locations(cafile=str(bundle))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class NatsBus:
    """One identity's connection to the bus (the control plane's or an enforcement point's)."""

    def __init__(self, url: str, tls: ssl.SSLContext, name: str) -> None:
        self.url, self.tls, self.name = url, tls, name
        self.nc: Any = None
        self.js: Any = None
        self.errors: list[str] = []  # asynchronous errors the server sent (a permissions violation...)
        self.reconnects = 0

    async def connect(self, timeout_s: float = 5.0,
                      on_reconnect: Callable[[], Awaitable[None]] | None = None) -> "NatsBus":
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        async def reconnected() -> None:
            self.reconnects += 1
            if on_reconnect is not None:
                try:
                    await on_reconnect()
                except Exception as exc:  # noqa: BLE001 - recorded; the control channel's push still carries it
                    self.errors.append(f"catch-up after reconnecting: {type(exc).__name__}: {exc}")

        try:  # the first connection is bounded (a refused certificate must not retry forever)
            self.nc = await asyncio.wait_for(
                nats.connect(self.url, tls=self.tls, name=self.name, connect_timeout=timeout_s, allow_reconnect=True,
                             max_reconnect_attempts=-1, reconnect_time_wait=0.2, error_cb=on_error,
                             reconnected_cb=reconnected),
                timeout_s * 2)
        except (NatsError, OSError, ssl.SSLError, TimeoutError) as exc:
            raise ControlRefused(f"bus {self.url}: {type(exc).__name__}: {exc}", reason="bus.unreachable") from None
        self.js = self.nc.jetstream()
        return self

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()

    # -- the control plane's side ------------------------------------------------------
    async def prepare(self) -> None:
        """The stream and the bucket (the control plane's job; idempotent)."""
        await self.js.add_stream(name=STREAM, subjects=[f"{REVOCATIONS}.>"], duplicate_window=DEDUP_WINDOW_S)
        await self.js.create_key_value(bucket=BUCKET, history=1)

    async def publish_revocation(self, kind: str, value: str, reason: str, *, msg_id: str | None = None) -> bool:
        """Publish a revocation (and record it in the bucket); False when JetStream saw this id already."""
        body = json.dumps({"kind": kind, "value": value, "reason": reason}).encode()
        ack = await self.js.publish(f"{REVOCATIONS}.{kind}", body,
                                    headers={"Nats-Msg-Id": msg_id or f"{kind}:{value}:{uuid.uuid4().hex}"})
        kv = await self.js.key_value(BUCKET)
        if kind == "release_spiffe_id":  # the quarantine is lifted: its key leaves the current set
            try:
                await kv.delete(f"spiffe_id.{_key(value)}")
            except (NotFoundError, KeyNotFoundError):
                pass
        else:
            await kv.put(f"{kind}.{_key(value)}", body)
        return not ack.duplicate

    async def publish_events(self, raw: list[bytes]) -> None:
        """A follower replica hands the security events it saw (encoded audit events) to the lease holder."""
        with contextlib.suppress(NatsError, OSError):  # the events are in this replica's audit spool regardless
            await self.nc.publish(EVENTS, msgspec.msgpack.encode(raw))

    async def on_events(self, callback: Callable[[list[bytes]], Any]) -> None:
        """The lease holder: ``callback(raw events)`` for what a follower replica saw (garbage is dropped)."""
        async def deliver(msg) -> None:
            try:
                raw = msgspec.msgpack.decode(msg.data, type=list[bytes])
            except msgspec.DecodeError:
                return
            callback(raw)

        await self.nc.subscribe(EVENTS, cb=deliver)

    # -- an enforcement point's side ---------------------------------------------------
    async def on_revocation(self, callback: Callable[[dict], Awaitable[None] | None]) -> None:
        async def deliver(msg) -> None:
            try:
                data = json.loads(msg.data)
            except ValueError:
                return  # not ours: nothing applied
            result = callback(data)
            if hasattr(result, "__await__"):
                await result

        await self.nc.subscribe(f"{REVOCATIONS}.>", cb=deliver)

    async def revocation_snapshot(self) -> list[dict]:
        """Every revocation in the bucket (what a reconnecting enforcement point applies before allowing)."""
        try:
            kv = await self.js.key_value(BUCKET)
            keys = await kv.keys()
        except (NotFoundError, KeyNotFoundError):
            return []
        except Exception as exc:  # noqa: BLE001 - nats-py raises "no keys found" as a plain error
            if "no keys" in str(exc).lower():
                return []
            raise
        out = []
        for key in keys:
            entry = await kv.get(key)
            out.append(json.loads(entry.value))
        return out


class RevocationOutbox:
    """The control plane's revocations on their way to the bus: published in order, each retried with
    backoff until JetStream acknowledged it (the bus may be away); ``pending`` is what has not gone yet."""

    def __init__(self, bus: NatsBus, *, publish_timeout_s: float = 2.0, max_backoff_s: float = 1.0) -> None:
        self.bus = bus
        self.publish_timeout_s = publish_timeout_s
        self.max_backoff_s = max_backoff_s
        self._queue: collections.deque[tuple[str, str, str, str]] = collections.deque()
        self._wake = asyncio.Event()
        self.published = 0
        self.retries = 0
        self.last_error = ""

    @property
    def pending(self) -> int:
        return len(self._queue)

    def put(self, kind: str, value: str, reason: str, msg_id: str) -> None:
        self._queue.append((kind, value, reason, msg_id))
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: drain the queue in order; a failed publish is retried, never skipped."""
        backoff = 0.05
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            kind, value, reason, msg_id = self._queue[0]
            try:
                await asyncio.wait_for(self.bus.publish_revocation(kind, value, reason, msg_id=msg_id),
                                       self.publish_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the bus is away: the same message again, after a pause
                self.retries += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:200]
                await asyncio.sleep(backoff)
                backoff = min(self.max_backoff_s, backoff * 2)
                continue
            self._queue.popleft()
            self.published += 1
            backoff = 0.05


def _key(value: str) -> str:
    """A KV key segment for a serial or a SPIFFE ID (NATS keys allow letters, digits, - _ = . /)."""
    return "".join(c if c.isalnum() or c in "-_=" else "_" for c in value)
