"""The FIX edge's PKI and client registry: how an outside firm is onboarded, renewed and revoked.

FIX clients authenticate with certificates of the edge trust domain
(``fix-edge.<floor trust domain>``), a CA of its own so that no client certificate is
ever valid inside the floor. Everything lives under ``$TRUSTFABRIC_HOME``::

    ca/fix-edge.<domain>/        the edge CA (keys 0600), kept across floor runs
    fix-edge/clients.json        the registry: SenderCompID -> SPIFFE ID, account, serial, expiry
    fix-edge/clients/<COMP-ID>/  a client's cert.pem, key.pem (0600) and bundle.pem (the CA bundle)
    fix-edge/gateway.json        the gateway's host and port of the last floor (for settings blocks)

* :class:`EdgePki` is the operator's side (``trustfabric fix client add|renew|ls``): it
  issues a client certificate for days (``days``, not the floor's hour), registers the
  client's CompID and account, and renews a certificate in place. The gateway trusts the
  edge CA, not any one certificate, so neither needs the floor restarted. A client
  certificate is revoked like any other, by serial (``trustfabric ca revoke SERIAL``).
* :class:`ClientRegistry` is the gateway's read-only view: it re-reads the registry file
  when it changes, so a client added while the floor runs can log on at once.
* :class:`EdgeRevocations` is what the gateway's TLS check asks: the revocations pushed to
  the floor, and the identity store's (``ca revoke`` writes there), re-read for each new
  connection.
* :func:`settings_block` renders a QuickFIX-style session settings block for a client.

Refusals are :class:`~trustfabric.trading.errors.FixError` with ``fix.client.*`` reasons.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import msgspec

from trustfabric.errors import TrustFabricError
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.store import SqliteIdentityStore
from trustfabric.identity.workload import WorkloadCredentials, issue_for_test
from trustfabric.trading.errors import FixError

EDGE_DIR = "fix-edge"
REGISTRY_FILE = "clients.json"
GATEWAY_FILE = "gateway.json"
DAY_S = 86_400
DEFAULT_CLIENT_DAYS = 30
MAX_CLIENT_DAYS = 397  # the CA/Browser Forum's ceiling for a TLS leaf
EDGE_CA_TTL_S = 3 * 365 * DAY_S
GATEWAY_CERT_TTL_S = MAX_CLIENT_DAYS * DAY_S
GATEWAY_COMP_ID = "TRUSTFABRIC"
DEFAULT_HEARTBEAT_S = 30

BAD_CLIENT_ID = "fix.client.bad_id"
BAD_ACCOUNT = "fix.client.bad_account"
BAD_DAYS = "fix.client.bad_days"
CLIENT_EXISTS = "fix.client.exists"
UNKNOWN_CLIENT = "fix.client.unknown"
REGISTRY_UNREADABLE = "fix.client.registry_unreadable"
CA_UNUSABLE = "fix.client.ca_unusable"

# A CompID that is also a SPIFFE path segment: letters, digits, '.', '_', '-'.
_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ClientEntry(msgspec.Struct, frozen=True):
    comp_id: str
    account: str
    spiffe_id: str
    serial: int
    not_after: float
    issued_at: float
    credentials_dir: str


class _Registry(msgspec.Struct):
    trust_domain: str
    clients: dict[str, ClientEntry] = {}


_decode_registry = msgspec.json.Decoder(_Registry)


def edge_trust_domain(floor_trust_domain: str) -> str:
    return f"fix-edge.{floor_trust_domain}"


def _read_registry(path: Path) -> _Registry | None:
    try:
        return _decode_registry.decode(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as exc:
        raise FixError(f"cannot read {path}: {exc}", reason=REGISTRY_UNREADABLE) from None


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class EdgePki:
    """The edge CA and the client registry under one home (the operator's side)."""

    def __init__(self, home: Path | str, ca: CertificateAuthority) -> None:
        self.home = Path(home)
        self.ca = ca
        self.dir = self.home / EDGE_DIR
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.registry_path = self.dir / REGISTRY_FILE
        self._lock = threading.Lock()

    @property
    def trust_domain(self) -> str:
        return self.ca.trust_domain

    @classmethod
    def open(cls, home: Path | str, floor_trust_domain: str, now: float) -> EdgePki:
        """The edge CA of ``home`` (made on first use, then kept), and its registry."""
        domain = edge_trust_domain(floor_trust_domain)
        ca_dir = Path(home) / "ca" / domain
        try:
            if (ca_dir / "ca.json").exists():
                ca = CertificateAuthority.load(ca_dir)
            else:
                ca = CertificateAuthority.create(domain, now, EDGE_CA_TTL_S, max_leaf_ttl_s=GATEWAY_CERT_TTL_S)
                ca.save(ca_dir)
        except TrustFabricError as exc:
            raise FixError(f"edge CA at {ca_dir}: {exc}", reason=CA_UNUSABLE) from None
        return cls(home, ca)

    # ------------------------------------------------------------------ certificates
    def issue(self, spiffe_id: str, now: float, ttl_s: int, directory: Path) -> WorkloadCredentials:
        """Key, certificate and CA bundle for ``spiffe_id``, written to ``directory`` (key 0600)."""
        credentials = issue_for_test(self.ca, spiffe_id, now, ttl_s)
        credentials.write(directory)
        return credentials

    def client_spiffe_id(self, comp_id: str) -> str:
        return f"spiffe://{self.trust_domain}/client/{comp_id}"

    # ------------------------------------------------------------------ registry
    def _load(self) -> _Registry:
        return _read_registry(self.registry_path) or _Registry(self.trust_domain)

    def _save(self, registry: _Registry) -> None:
        _write_atomically(self.registry_path, msgspec.json.format(msgspec.json.encode(registry)))

    def clients(self) -> list[ClientEntry]:
        return sorted(self._load().clients.values(), key=lambda e: e.comp_id)

    def client(self, comp_id: str) -> ClientEntry:
        entry = self._load().clients.get(comp_id)
        if entry is None:
            raise FixError(f"no FIX client {comp_id!r}", reason=UNKNOWN_CLIENT)
        return entry

    def _issue_client(self, comp_id: str, account: str, now: float, days: int) -> ClientEntry:
        if not isinstance(days, int) or not 0 < days <= MAX_CLIENT_DAYS:
            raise FixError(f"--days must be 1..{MAX_CLIENT_DAYS}", reason=BAD_DAYS)
        spiffe_id = self.client_spiffe_id(comp_id)
        directory = self.dir / "clients" / comp_id
        credentials = self.issue(spiffe_id, now, days * DAY_S, directory)
        cert = credentials.certificate
        return ClientEntry(comp_id=comp_id, account=account, spiffe_id=spiffe_id, serial=cert.serial_number,
                           not_after=cert.not_valid_after_utc.timestamp(), issued_at=now,
                           credentials_dir=str(directory))

    def add_client(self, comp_id: str, account: str, now: float, *, days: int = DEFAULT_CLIENT_DAYS) -> ClientEntry:
        """Register a new client (its CompID and account) and issue its certificate."""
        if not _CLIENT_ID.fullmatch(comp_id or "") or comp_id == GATEWAY_COMP_ID:
            raise FixError(f"client id {comp_id!r}: 1-32 of A-Z a-z 0-9 . _ -, not {GATEWAY_COMP_ID}",
                           reason=BAD_CLIENT_ID)
        if not _ACCOUNT.fullmatch(account or ""):
            raise FixError(f"account {account!r}: 1-64 of A-Z a-z 0-9 . _ -", reason=BAD_ACCOUNT)
        with self._lock:
            registry = self._load()
            if comp_id in registry.clients:
                raise FixError(f"FIX client {comp_id!r} exists; renew it instead", reason=CLIENT_EXISTS)
            entry = self._issue_client(comp_id, account, now, days)
            registry.clients[comp_id] = entry
            self._save(registry)
        return entry

    def renew_client(self, comp_id: str, now: float, *, days: int = DEFAULT_CLIENT_DAYS) -> ClientEntry:
        """A fresh key and certificate for a registered client, in place; the floor keeps running."""
        with self._lock:
            registry = self._load()
            old = registry.clients.get(comp_id)
            if old is None:
                raise FixError(f"no FIX client {comp_id!r}", reason=UNKNOWN_CLIENT)
            entry = self._issue_client(comp_id, old.account, now, days)
            registry.clients[comp_id] = entry
            self._save(registry)
        return entry

    def bundle_path(self, comp_id: str) -> Path:
        return Path(self.client(comp_id).credentials_dir) / "bundle.pem"

    def record_gateway(self, host: str, port: int, comp_id: str = GATEWAY_COMP_ID) -> None:
        """Where the floor's gateway listens, for the settings blocks printed later."""
        _write_atomically(self.dir / GATEWAY_FILE,
                          json.dumps({"host": host, "port": port, "comp_id": comp_id}).encode())


def gateway_address(home: Path | str) -> dict:
    """The last floor's gateway host/port/CompID (empty when no floor has run with a gateway)."""
    try:
        raw = json.loads((Path(home) / EDGE_DIR / GATEWAY_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


class ClientRegistry(Mapping[str, str]):
    """The gateway's view of the registry (SenderCompID -> SPIFFE ID), re-read when the file changes.

    ``static`` bindings (the floor's demo clients, any account) come first; an unreadable registry file
    leaves only them (fail closed: no client is admitted on a file we cannot read).
    """

    def __init__(self, home: Path | str, static: Mapping[str, str] | None = None) -> None:
        self.path = Path(home) / EDGE_DIR / REGISTRY_FILE
        self.static = dict(static or {})
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, ClientEntry] = {}
        self.read_errors = 0

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except OSError:
            self._stamp, self._entries = None, {}
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            registry = _read_registry(self.path)
        except FixError:
            self.read_errors += 1  # counted once per change of the file
            self._stamp, self._entries = stamp, {}
            return
        self._stamp = stamp
        self._entries = dict(registry.clients) if registry is not None else {}

    def _all(self) -> dict[str, str]:
        self._refresh()
        merged = {comp: e.spiffe_id for comp, e in self._entries.items()}
        merged.update(self.static)
        return merged

    def __getitem__(self, comp_id: str) -> str:
        return self._all()[comp_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def account(self, comp_id: str) -> str:
        """The account a client's orders are booked to ("" for the floor's demo clients: any)."""
        if comp_id in self.static:
            return ""
        self._refresh()
        entry = self._entries.get(comp_id)
        return entry.account if entry is not None else ""


class EdgeRevocations:
    """Revoked serials and SPIFFE IDs for the edge: pushed ones, and the identity store's.

    :meth:`refresh` reads the identity store (blocking: the gateway runs it in a worker
    thread before it checks each new connection); :meth:`is_revoked` only reads memory. A
    store that cannot be read makes :meth:`refresh` raise, and the connection is refused.
    """

    def __init__(self, pushed, identity_db: Path | str) -> None:
        self.pushed = pushed
        self.path = Path(identity_db)
        self._store: SqliteIdentityStore | None = None
        self._lock = threading.Lock()
        self._serials: frozenset[int] = frozenset()
        self._ids: frozenset[str] = frozenset()

    def refresh(self) -> None:
        with self._lock:
            if self._store is None:
                if not self.path.exists():
                    return  # no identity store yet: nothing revoked there
                self._store = SqliteIdentityStore(self.path)
            _version, rows = self._store.list_revocations()
        serials, ids = set(), set()
        for row in rows:
            if row.kind == "serial":
                serials.add(int(row.value))
            elif row.kind == "spiffe_id":
                ids.add(row.value)
            elif row.kind == "release_spiffe_id":
                ids.discard(row.value)
        self._serials, self._ids = frozenset(serials), frozenset(ids)

    def is_revoked(self, serial: int, spiffe_id: str) -> bool:
        if self.pushed is not None and self.pushed.is_revoked(serial, spiffe_id):
            return True
        return serial in self._serials or str(spiffe_id) in self._ids

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def settings_block(entry: ClientEntry, *, host: str, port: int | None, target_comp_id: str = GATEWAY_COMP_ID,
                   heartbeat_s: int = DEFAULT_HEARTBEAT_S) -> str:
    """A QuickFIX-style initiator session block for ``entry`` (SSL settings of QuickFIX's SSL build)."""
    creds = Path(entry.credentials_dir)
    port_line = (f"SocketConnectPort={port}" if port else
                 "SocketConnectPort=<the gateway's port: start the floor with trustfabric up --fix-port N>")
    return "\n".join([
        "[DEFAULT]",
        "ConnectionType=initiator",
        "BeginString=FIX.4.4",
        f"SocketConnectHost={host}",
        port_line,
        f"HeartBtInt={heartbeat_s}",
        "ReconnectInterval=5",
        "StartTime=00:00:00",
        "EndTime=00:00:00",
        "UseDataDictionary=N",
        "FileStorePath=store",
        "FileLogPath=log",
        "# mTLS (TLS 1.2+): the client certificate and key, and the CA bundle the gateway's certificate",
        "# chains to. QuickFIX C++ takes these with its SSLSocketInitiator; SocketUseSSL is QuickFIX/J's.",
        "SocketUseSSL=Y",
        f"ClientCertificateFile={creds / 'cert.pem'}",
        f"ClientCertificateKeyFile={creds / 'key.pem'}",
        f"CertificationAuthoritiesFile={creds / 'bundle.pem'}",
        "",
        "[SESSION]",
        f"SenderCompID={entry.comp_id}",
        f"TargetCompID={target_comp_id}",
        f"# orders are booked to account {entry.account} (tag 1 may be omitted or must be {entry.account})",
        (f"# certificate serial {entry.serial} (0x{entry.serial:x}), valid until "
         f"{iso_utc(entry.not_after)}; renew with: trustfabric fix client renew {entry.comp_id}"),
    ]) + "\n"


def entry_result(entry: ClientEntry) -> dict[str, str]:
    """A client entry as an operator reply's result (strings only)."""
    return {"comp_id": entry.comp_id, "account": entry.account, "spiffe_id": entry.spiffe_id,
            "serial": str(entry.serial), "not_after": repr(entry.not_after), "issued_at": repr(entry.issued_at),
            "credentials_dir": entry.credentials_dir}


def entry_from_result(result: Mapping[str, str]) -> ClientEntry:
    """The client entry an operator reply carries (:func:`entry_result`); a typed refusal when it does not."""
    try:
        return ClientEntry(comp_id=result["comp_id"], account=result["account"], spiffe_id=result["spiffe_id"],
                           serial=int(result["serial"]), not_after=float(result["not_after"]),
                           issued_at=float(result["issued_at"]), credentials_dir=result["credentials_dir"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FixError(f"the reply carries no client entry ({exc})", reason=REGISTRY_UNREADABLE) from None


def onboard(edge: EdgePki, action: str, comp_id: str, args: Mapping[str, str], now: float) -> ClientEntry:
    """``fix.client_add`` (``args``: account, days) or ``fix.client_renew`` (days) on the edge."""
    try:
        days = int(args.get("days") or DEFAULT_CLIENT_DAYS)
    except ValueError:
        raise FixError(f"--days must be 1..{MAX_CLIENT_DAYS}", reason=BAD_DAYS) from None
    if action == "fix.client_add":
        return edge.add_client(comp_id, args.get("account", ""), now, days=days)
    if action == "fix.client_renew":
        return edge.renew_client(comp_id, now, days=days)
    raise FixError(f"no FIX client action {action!r}", reason=UNKNOWN_CLIENT)


def iso_utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
