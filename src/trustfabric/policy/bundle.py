"""Signed policy bundles: a policy version is only what two approvers signed, and only that is ever served.

A **bundle** is one JSON document: a :class:`Manifest` (format, version number, author, creation
time, why, and the SHA-256 of every file), the files themselves (the schema, ``*.cedar``,
``floor.toml``, ``tests/*.toml``) and Ed25519 signatures over the manifest's canonical bytes
(:func:`signed_bytes`). The author signs first (``role="author"``: who wrote it is proven, not
claimed); approvers sign after (``role="approver"``). The key of each person is registered in the
identity store (:class:`SigningKeys`: public halves only; the private half stays in the person's
``$TRUSTFABRIC_HOME/operator/policy-signing/<name>.key``, 0600, created at their first signature).

:func:`verify` is the whole check, pure and total, raising :class:`BundleError`:

=============================  ==============================================================
``policy.bundle.malformed``    not a bundle document, or files other than the manifest lists
``policy.bundle.digest``       a file whose SHA-256 is not the manifest's (tampered)
``policy.bundle.unsigned``     no approver signature
``policy.bundle.signature``    a signature that does not verify, or by a key not registered
``policy.bundle.author``       no valid author signature, or by another than the manifest's author
``policy.bundle.author_signed`` the author signed as an approver
``policy.bundle.same_approver`` one person signed twice as approver
``policy.bundle.under_signed`` fewer than two different approvers
=============================  ==============================================================

:class:`PolicyVersions` keeps the served version and the history under
``$TRUSTFABRIC_HOME/policy/`` (``bundles/v<N>.json``, ``versions.json``) and decides activation:
:meth:`PolicyVersions.admit` verifies, refuses a version not newer than the active one
(``policy.bundle.stale``: no rollback attack) unless it is an explicit rollback to a version in
the signed history (``policy.bundle.not_in_history`` otherwise), unpacks the files into
``versions/v<N>/`` and runs their policy tests (``policy.bundle.tests_failed``). Only then does the
caller load the set (the control plane: :meth:`~trustfabric.policy.engine.PolicyEngine.load_dir`,
epochs bumped and pushed) and :meth:`PolicyVersions.record` it; a refusal changes nothing, so the
active version keeps serving. Every step is an audit event under the person's name (the caller's).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trustfabric.keyfiles import key_to_pem, write_private_file
from trustfabric.policy.errors import BundleError, PolicyLoadError, PolicyTestError, TopologyError
from trustfabric.policy.testcases import run_cases

FORMAT = "trustfabric.policy-bundle/1"
SIGNING_CONTEXT = b"trustfabric policy bundle manifest v1\n"
REQUIRED_APPROVERS = 2
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
AUTHOR = "author"
APPROVER = "approver"
APPROVER_KEYS_META = "policy.signing_keys"


class Manifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: str = FORMAT
    version: int
    author: str
    created_at: float
    reason: str = ""
    files: dict[str, str]  # relative path -> SHA-256 hex


class Signature(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    signer: str
    role: str  # AUTHOR | APPROVER
    key_id: str  # SHA-256 of the raw public key, hex
    signed_at: float
    reason: str = ""
    signature: str  # base64 Ed25519 over signed_bytes(manifest)


class Bundle(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    manifest: Manifest
    files: dict[str, str]
    signatures: tuple[Signature, ...] = ()

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def digest(self) -> str:
        """The bundle's identity: SHA-256 of the signed manifest bytes."""
        return hashlib.sha256(signed_bytes(self.manifest)).hexdigest()

    def approvers(self) -> tuple[str, ...]:
        return tuple(s.signer for s in self.signatures if s.role == APPROVER)


_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder(Bundle)


def signed_bytes(manifest: Manifest) -> bytes:
    return SIGNING_CONTEXT + _encoder.encode(manifest)


def encode(bundle: Bundle) -> bytes:
    return _encoder.encode(bundle)


def decode(data: bytes) -> Bundle:
    """A bundle document; :class:`BundleError` ``policy.bundle.malformed`` for anything else."""
    if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_BUNDLE_BYTES:
        raise BundleError("not a policy bundle (or over 16 MiB)", reason="policy.bundle.malformed")
    try:
        bundle = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BundleError(f"not a policy bundle: {str(exc)[:200]}", reason="policy.bundle.malformed") from None
    if bundle.manifest.format != FORMAT or bundle.manifest.version < 1:
        raise BundleError(f"unknown bundle format {bundle.manifest.format!r} or version < 1",
                          reason="policy.bundle.malformed")
    return bundle


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _safe_path(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and all(p not in ("", ".", "..") for p in parts) \
        and "\\" not in name and "\0" not in name and len(parts) <= 2


def collect(directory: str | Path) -> dict[str, str]:
    """The files a bundle carries from a policy directory: schema, policies, topology, tests."""
    directory = Path(directory)
    files: dict[str, str] = {}
    try:
        for pattern in ("*.cedarschema", "*.cedar", "floor.toml", "tests/*.toml"):
            for path in sorted(directory.glob(pattern)):
                files[path.relative_to(directory).as_posix()] = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"cannot read {directory}: {exc}", reason="policy.bundle.io") from exc
    if not any(n.endswith(".cedarschema") for n in files) or not any(n.endswith(".cedar") for n in files):
        raise BundleError(f"{directory} holds no schema or no policies", reason="policy.bundle.malformed")
    return files


def build(files: Mapping[str, str], *, version: int, author: str, now: float, reason: str = "") -> Bundle:
    """An unsigned bundle of ``files`` (the author signs it next with :func:`sign`)."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError("version must be a positive integer", reason="policy.bundle.malformed")
    bad = [n for n in files if not _safe_path(n)]
    if bad:
        raise BundleError(f"unsafe file names {bad}", reason="policy.bundle.malformed")
    manifest = Manifest(version=version, author=author, created_at=now, reason=reason,
                        files={n: _sha256(t) for n, t in sorted(files.items())})
    return Bundle(manifest=manifest, files=dict(sorted(files.items())))


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).hexdigest()


def sign(bundle: Bundle, signer: str, role: str, key: Ed25519PrivateKey, now: float, reason: str = "") -> Bundle:
    """``bundle`` with ``signer``'s signature added (the rules are :func:`verify`'s, checked before signing)."""
    if role not in (AUTHOR, APPROVER):
        raise BundleError(f"unknown signing role {role!r}", reason="policy.bundle.malformed")
    if role == AUTHOR and signer != bundle.manifest.author:
        raise BundleError(f"{signer} is not the author ({bundle.manifest.author})", reason="policy.bundle.author")
    if role == APPROVER and signer == bundle.manifest.author:
        raise BundleError(f"{signer} wrote version {bundle.version}: an author does not approve their own change",
                          reason="policy.bundle.author_signed")
    if any(s.signer == signer and s.role == role for s in bundle.signatures):
        raise BundleError(f"{signer} already signed version {bundle.version}", reason="policy.bundle.same_approver")
    sig = Signature(signer=signer, role=role, key_id=key_id(key.public_key()), signed_at=now, reason=reason,
                    signature=base64.b64encode(key.sign(signed_bytes(bundle.manifest))).decode())
    return msgspec.structs.replace(bundle, signatures=bundle.signatures + (sig,))


def check_files(bundle: Bundle) -> None:
    """The files are exactly those the manifest lists, each with its digest (``policy.bundle.digest``)."""
    listed, carried = set(bundle.manifest.files), set(bundle.files)
    if listed != carried or not all(_safe_path(n) for n in listed):
        raise BundleError(f"files differ from the manifest: {sorted(listed ^ carried)[:5]}",
                          reason="policy.bundle.malformed")
    for name, text in bundle.files.items():
        if _sha256(text) != bundle.manifest.files[name]:
            raise BundleError(f"{name} does not match its manifest digest: tampered", reason="policy.bundle.digest")


def _check_signature(bundle: Bundle, sig: Signature, keys: Mapping[str, Ed25519PublicKey]) -> None:
    public = keys.get(sig.signer)
    if public is None or key_id(public) != sig.key_id:
        raise BundleError(f"{sig.signer} has no registered signing key {sig.key_id[:16]}",
                          reason="policy.bundle.signature")
    try:
        public.verify(base64.b64decode(sig.signature, validate=True), signed_bytes(bundle.manifest))
    except (InvalidSignature, binascii.Error, ValueError):
        raise BundleError(f"{sig.signer}'s signature does not verify over version {bundle.version}",
                          reason="policy.bundle.signature") from None


def verify(bundle: Bundle, keys: Mapping[str, Ed25519PublicKey], *, required: int = REQUIRED_APPROVERS) -> None:
    """Digests, the author's signature and ``required`` different approvers other than the author."""
    check_files(bundle)
    approvals = [s for s in bundle.signatures if s.role == APPROVER]
    if not approvals:
        raise BundleError(f"version {bundle.version} carries no approver signature", reason="policy.bundle.unsigned")
    authors = [s for s in bundle.signatures if s.role == AUTHOR]
    if len(authors) != 1 or authors[0].signer != bundle.manifest.author:
        raise BundleError(f"version {bundle.version} needs exactly one signature by its author "
                          f"{bundle.manifest.author}", reason="policy.bundle.author")
    if any(s.role not in (AUTHOR, APPROVER) for s in bundle.signatures):
        raise BundleError("a signature of an unknown role", reason="policy.bundle.malformed")
    for sig in bundle.signatures:
        _check_signature(bundle, sig, keys)
    names = [s.signer for s in approvals]
    if bundle.manifest.author in names:
        raise BundleError(f"the author {bundle.manifest.author} signed as approver", reason="policy.bundle.author_signed")
    if len(set(names)) != len(names):
        raise BundleError(f"{names}: the same person approved twice", reason="policy.bundle.same_approver")
    if len(set(names)) < required:
        raise BundleError(f"version {bundle.version} has {len(set(names))} approver(s), needs {required} different",
                          reason="policy.bundle.under_signed")


class SigningKeys:
    """People's policy-signing public keys, in the identity store (meta ``policy.signing_keys``)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def all(self) -> dict[str, Ed25519PublicKey]:
        raw = self._store.get_meta(APPROVER_KEYS_META, {}) or {}
        out: dict[str, Ed25519PublicKey] = {}
        for name, b64 in raw.items() if isinstance(raw, dict) else ():
            try:
                out[name] = Ed25519PublicKey.from_public_bytes(base64.b64decode(b64, validate=True))
            except (ValueError, binascii.Error, TypeError):
                continue  # an unreadable key verifies nothing
        return out

    def register(self, name: str, public: Ed25519PublicKey) -> bool:
        """Register ``name``'s key; False when another key is already registered for them."""
        raw = dict(self._store.get_meta(APPROVER_KEYS_META, {}) or {})
        b64 = base64.b64encode(public.public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)).decode()
        if name in raw and raw[name] != b64:
            return False
        raw[name] = b64
        self._store.set_meta(APPROVER_KEYS_META, raw)
        return True


def personal_key(directory: Path, name: str, *, create: bool) -> Ed25519PrivateKey | None:
    """``name``'s private signing key under ``directory`` (0600), created when asked and missing."""
    path = Path(directory) / f"{name}.key"
    if path.is_file():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError, OSError) as exc:
            raise BundleError(f"{path}: unreadable signing key: {exc}", reason="policy.bundle.key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise BundleError(f"{path}: not an Ed25519 key", reason="policy.bundle.key")
        return key
    if not create:
        return None
    key = Ed25519PrivateKey.generate()
    write_private_file(path, key_to_pem(key))
    return key


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class _VersionRows:
    """Beyond one machine: the signed bundles and the version record in PostgreSQL (migration 0004)."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema

    def _connect(self):  # noqa: ANN202 - a psycopg connection
        import psycopg  # beyond one machine only: the embedded default never pays psycopg's import

        try:
            return psycopg.connect(self.dsn, autocommit=True, connect_timeout=2, options=f"-c search_path={self.schema}")
        except psycopg.Error as exc:
            raise BundleError(f"{self.schema}: PostgreSQL unreachable: {exc}".strip(), reason="db.unreachable") from None

    def state(self) -> bytes | None:
        with self._connect() as conn:
            row = conn.execute("SELECT data FROM policy_state WHERE id = 1").fetchone()
        return bytes(row[0]) if row else None

    def bundle(self, version: int) -> bytes | None:
        with self._connect() as conn:
            row = conn.execute("SELECT data FROM policy_bundles WHERE version = %s", (int(version),)).fetchone()
        return bytes(row[0]) if row else None

    def record(self, version: int, bundle: bytes, update) -> dict[str, Any]:  # noqa: ANN001 - state -> entry
        """In one transaction, the version record locked: store the bundle and apply ``update`` to the state; a
        concurrent activation (another control plane) waits for the lock and sees the new record."""
        import psycopg

        try:
            with self._connect() as conn, conn.transaction():
                conn.execute("INSERT INTO policy_state (id, data) VALUES (1, %s) ON CONFLICT (id) DO NOTHING",
                             (json.dumps({"active": None, "history": []}).encode(),))
                current = json.loads(bytes(conn.execute("SELECT data FROM policy_state WHERE id = 1 FOR UPDATE")
                                           .fetchone()[0]))
                state, entry = update(current)
                conn.execute("INSERT INTO policy_bundles (version, data) VALUES (%s, %s) ON CONFLICT (version) DO "
                             "UPDATE SET data = EXCLUDED.data", (int(version), bundle))
                conn.execute("UPDATE policy_state SET data = %s WHERE id = 1", (json.dumps(state).encode(),))
            return entry
        except psycopg.Error as exc:
            raise BundleError(f"{self.schema}: the version record was not written: {exc}".strip(),
                              reason="db.unreachable") from None


class PolicyVersions:
    """The served version and the signed history under ``$TRUSTFABRIC_HOME/policy/`` (or, beyond one machine,
    in PostgreSQL: ``$TRUSTFABRIC_DATABASE_URL``; the unpacked files stay a local copy under the directory)."""

    def __init__(self, directory: str | Path, environ: Mapping[str, str] | None = None) -> None:
        self.directory = Path(directory)
        self._state_path = self.directory / "versions.json"
        env = os.environ if environ is None else environ
        dsn = env.get("TRUSTFABRIC_DATABASE_URL", "")
        self._rows = _VersionRows(dsn, env.get("TRUSTFABRIC_DATABASE_SCHEMA") or "trustfabric") if dsn else None

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        if self._rows is not None:
            data = self._rows.state()
            raw = json.loads(data) if data else {"active": None, "history": []}
            if not isinstance(raw, dict) or not isinstance(raw.get("history"), list):
                raise BundleError("the database's policy version record is not one", reason="policy.bundle.store")
            return raw
        try:
            raw = json.loads(self._state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"active": None, "history": []}
        except (OSError, ValueError) as exc:
            raise BundleError(f"{self._state_path}: unreadable: {exc}", reason="policy.bundle.store") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("history"), list):
            raise BundleError(f"{self._state_path}: not a version record", reason="policy.bundle.store")
        return raw

    def active_version(self) -> int:
        active = self.state().get("active")
        return int(active["version"]) if isinstance(active, dict) else 0

    def history(self) -> list[dict[str, Any]]:
        return list(self.state()["history"])

    def signed(self, version: int) -> Bundle | None:
        if self._rows is not None:
            data = self._rows.bundle(version)
            return decode(data) if data is not None else None
        path = self.directory / "bundles" / f"v{int(version)}.json"
        try:
            return decode(path.read_bytes())
        except FileNotFoundError:
            return None

    def next_version(self) -> int:
        versions = [int(h["version"]) for h in self.history()] + [self.active_version()]
        return max(versions) + 1

    def active_dir(self) -> Path | None:
        active = self.state().get("active")
        return self.directory / "versions" / f"v{int(active['version'])}" if isinstance(active, dict) else None

    # ------------------------------------------------------------------ activation
    def admit(self, bundle: Bundle, keys: Mapping[str, Ed25519PublicKey], *, rollback: bool = False) -> Path:
        """Verify ``bundle`` for activation and unpack it; returns its directory. Changes no state."""
        verify(bundle, keys)
        active = self.active_version()
        if rollback:
            stored = self.signed(bundle.version)
            if stored is None or stored.digest != bundle.digest:
                raise BundleError(f"version {bundle.version} is not in the signed history",
                                  reason="policy.bundle.not_in_history")
            if bundle.version == active:
                raise BundleError(f"version {bundle.version} is already active", reason="policy.bundle.stale")
        elif bundle.version <= active:
            raise BundleError(f"version {bundle.version} is not newer than the active version {active} "
                              "(an older set is restored only by an explicit policy rollback)",
                              reason="policy.bundle.stale")
        target = self.directory / "versions" / f"v{bundle.version}"
        staging = target.with_name(target.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        for name, text in bundle.files.items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        try:
            report = run_cases(staging)
        except (PolicyLoadError, PolicyTestError, TopologyError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise BundleError(f"version {bundle.version} does not load: {exc.reason}: {exc.detail}",
                              reason="policy.bundle.tests_failed") from None
        if report.failed:
            failed = [f"{r.case.name}: {r.why}" for r in report.results if not r.passed][:3]
            shutil.rmtree(staging, ignore_errors=True)
            raise BundleError(f"version {bundle.version}: policy test {report.summary()}: {'; '.join(failed)}",
                              reason="policy.bundle.tests_failed")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        return target

    def record(self, bundle: Bundle, *, by: str, reason: str, now: float, kind: str = "activate") -> dict[str, Any]:
        """Make ``bundle`` (admitted and loaded) the active version and append it to the history."""
        if self._rows is not None:
            def update(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
                active = state["active"]["version"] if isinstance(state.get("active"), dict) else 0
                if kind != "rollback" and bundle.version <= active:  # another control plane activated meanwhile
                    raise BundleError(f"version {bundle.version} is not newer than the active version {active}",
                                      reason="policy.bundle.stale")
                return self._entry(state, bundle, by=by, reason=reason, now=now, kind=kind)

            return self._rows.record(bundle.version, encode(bundle), update)
        _write_atomic(self.directory / "bundles" / f"v{bundle.version}.json", encode(bundle))
        state, entry = self._entry(self.state(), bundle, by=by, reason=reason, now=now, kind=kind)
        _write_atomic(self._state_path, json.dumps(state, indent=1).encode())
        return entry

    @staticmethod
    def _entry(state: dict[str, Any], bundle: Bundle, *, by: str, reason: str, now: float,
               kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
        entry = {"version": bundle.version, "digest": bundle.digest, "author": bundle.manifest.author,
                 "approvers": list(bundle.approvers()), "kind": kind, "by": by, "reason": reason, "at": now,
                 "previous": state["active"]["version"] if isinstance(state.get("active"), dict) else None}
        state["active"] = {"version": bundle.version, "digest": bundle.digest}
        state["history"].append(entry)
        return state, entry

    def active_bundle(self, keys: Mapping[str, Ed25519PublicKey]) -> tuple[Bundle, Path] | None:
        """The active bundle, re-verified with its unpacked files (a control plane starts from it)."""
        state = self.state()
        active = state.get("active")
        if not isinstance(active, dict):
            return None
        bundle = self.signed(int(active["version"]))
        if bundle is None or bundle.digest != active.get("digest"):
            raise BundleError(f"active version {active.get('version')} is missing or altered in the store",
                              reason="policy.bundle.digest")
        verify(bundle, keys)
        directory = self.directory / "versions" / f"v{bundle.version}"
        if self._rows is not None and not directory.is_dir():  # a control plane on another host: unpack its copy
            for name, text in bundle.files.items():
                path = directory / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
        on_disk = {p.relative_to(directory).as_posix(): p.read_text(encoding="utf-8")
                   for p in directory.rglob("*") if p.is_file()} if directory.is_dir() else {}
        if on_disk != bundle.files:
            raise BundleError(f"the unpacked files of version {bundle.version} differ from the signed bundle",
                              reason="policy.bundle.digest")
        return bundle, directory
