"""The SPIFFE Workload API, served by a per-host agent on a Unix socket, to workloads it attests itself.

SPIFFE-aware software (Envoy, a Java service with java-spiffe, Python with
py-spiffe) asks the Workload API for its identity instead of reading key files:
``SPIFFE_ENDPOINT_SOCKET=unix:///path/to/agent.sock``. The agent implements the
SPIFFE ``SpiffeWorkloadAPI`` service (``workload.proto``; the message classes are
the ones py-spiffe ships, the server is grpclib's, which gives the handler the
connection's socket):

* every call must carry the ``workload.spiffe.io: true`` metadata header
  (``INVALID_ARGUMENT`` otherwise, as the specification asks);
* the caller is attested as SPIRE's unix workload attestor does: the socket's peer
  credentials (``SO_PEERCRED``: pid, uid, gid) -> ``/proc/<pid>/exe`` -> the SHA-256 of
  the executable; for an interpreter (``python*``) the digest is the script's, the
  first argument that is a file (``-m`` / ``-c`` workloads are ambiguous and
  refused) -> a release promoted to the agent's trust domain -> its SPIFFE ID,
  ``spiffe://<trust domain>/<release name>`` (the release's name is the workload's
  path, e.g. ``pricing/fair-value``). A digest that is no promoted release gets
  ``PERMISSION_DENIED`` and an audit record (``cert.refused``,
  ``attest.unpromoted_digest``), as does a release whose name is no SPIFFE path and a
  workload whose SPIFFE ID is quarantined (``attest.quarantined``);
* ``FetchX509SVID`` streams an X.509-SVID (DER chain, PKCS#8 key, the trust
  domain's bundle), issued by the trust domain's CA through the attesting issuer
  (the code digest and a fresh posture report of this host, signed by the agent's
  host key, which an operator registered with ``trustfabric ca register-host``),
  and pushes a new one on the same stream at half its lifetime;
* ``FetchX509Bundles`` streams the trust domain's bundle (again when the CA rotates);
* ``FetchJWTSVID`` / ``FetchJWTBundles`` / ``ValidateJWTSVID``: JWT-SVIDs signed by an
  ES256 key of the agent's (:class:`~trustfabric.agent.jwt_svid.JwtSvidKeys`: the
  JWT-SVID profile admits RSA and ECDSA, not the Ed25519 of the fabric's access
  tokens), ``sub`` the SPIFFE ID, ``aud`` required, short ``exp``; its JWKS is the
  JWT bundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from google.protobuf import struct_pb2
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream
from spiffe._proto import workload_pb2 as pb

from trustfabric.agent.jwt_svid import JwtSvidKeys
from trustfabric.audit.events import Kind
from trustfabric.errors import TrustFabricError
from trustfabric.identity.attestation import AttestationRequest
from trustfabric.identity.certs import load_certificates
from trustfabric.identity.plane import IdentityPlane
from trustfabric.identity.spiffe import SpiffeId
from trustfabric.identity.workload import new_key_and_csr
from trustfabric.signals.host_agent import HostPostureAgent

SECURITY_HEADER = "workload.spiffe.io"
SERVICE = "/SpiffeWorkloadAPI/"
DEFAULT_SVID_TTL_S = 3600
_PEERCRED = struct.Struct("3i")


class WorkloadAttestationError(TrustFabricError):
    reason = "attest.workload"


@dataclass(frozen=True)
class Caller:
    pid: int
    uid: int
    gid: int
    path: str  # the file whose digest identifies the workload (the executable or the script)
    digest: str


def peer_credentials(sock: Any) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    return _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def attest_process(pid: int, uid: int, gid: int) -> Caller:
    """The file that identifies process ``pid`` and its SHA-256 (``WorkloadAttestationError`` when unclear)."""
    try:
        exe = os.path.realpath(f"/proc/{pid}/exe")
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cwd = os.path.realpath(f"/proc/{pid}/cwd")
    except OSError as exc:
        raise WorkloadAttestationError(f"process {pid} cannot be inspected: {exc.strerror}",
                                       reason="attest.process_unreadable") from None
    path = exe
    if os.path.basename(exe).startswith("python"):
        script = None
        for arg in (a.decode(errors="replace") for a in argv[1:] if a):
            if arg in ("-m", "-c"):
                break  # a module or a command string: no file is the workload's code
            if not arg.startswith("-"):
                script = arg
                break
        if script is None:
            raise WorkloadAttestationError(f"process {pid} runs the interpreter without a script file "
                                           "(-m / -c): no code to attest", reason="attest.ambiguous_workload")
        path = script if os.path.isabs(script) else os.path.join(cwd, script)
    try:
        return Caller(pid, uid, gid, path, _sha256(path))
    except OSError as exc:
        raise WorkloadAttestationError(f"{path}: {exc.strerror}", reason="attest.process_unreadable") from None


def _stream_socket(stream: Stream) -> Any:
    """The Unix socket of a call (grpclib's peer keeps the connection's transport)."""
    transport = getattr(stream.peer, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        raise GRPCError(Status.PERMISSION_DENIED, "the caller's socket cannot be read: no attestation")
    return sock


class WorkloadApi:
    """The ``SpiffeWorkloadAPI`` handlers over an identity plane (one trust domain, one host)."""

    def __init__(self, plane: IdentityPlane, trust_domain: str, host_agent: HostPostureAgent, *,
                 svid_ttl_s: int = DEFAULT_SVID_TTL_S, jwt_keys: JwtSvidKeys | None = None) -> None:
        self.plane = plane
        self.trust_domain = trust_domain
        self.host_agent = host_agent
        self.svid_ttl_s = int(svid_ttl_s)
        self.jwt_keys = jwt_keys or JwtSvidKeys.open(plane.home, trust_domain)
        self.stopping = asyncio.Event()
        self.issued = 0
        self.refused = 0

    def __mapping__(self) -> dict[str, Handler]:
        return {
            SERVICE + "FetchX509SVID": Handler(self.fetch_x509_svid, Cardinality.UNARY_STREAM,
                                               pb.X509SVIDRequest, pb.X509SVIDResponse),
            SERVICE + "FetchX509Bundles": Handler(self.fetch_x509_bundles, Cardinality.UNARY_STREAM,
                                                  pb.X509BundlesRequest, pb.X509BundlesResponse),
            SERVICE + "FetchJWTSVID": Handler(self.fetch_jwt_svid, Cardinality.UNARY_UNARY,
                                              pb.JWTSVIDRequest, pb.JWTSVIDResponse),
            SERVICE + "FetchJWTBundles": Handler(self.fetch_jwt_bundles, Cardinality.UNARY_STREAM,
                                                 pb.JWTBundlesRequest, pb.JWTBundlesResponse),
            SERVICE + "ValidateJWTSVID": Handler(self.validate_jwt_svid, Cardinality.UNARY_UNARY,
                                                 pb.ValidateJWTSVIDRequest, pb.ValidateJWTSVIDResponse),
        }

    # -- attestation ---------------------------------------------------------------------
    def _refuse(self, status: Status, message: str, reason: str, caller: Caller | None = None) -> GRPCError:
        self.refused += 1
        detail = {"pid": caller.pid, "uid": caller.uid, "path": caller.path, "code_digest": caller.digest} \
            if caller else {}
        with contextlib.suppress(Exception):
            self.plane.emitter.emit(Kind.CERT_REFUSED, action="workload_api", decision="deny", reason=reason,
                                    trust_domain=self.trust_domain, detail=detail)
        return GRPCError(status, message)

    def _check_header(self, stream: Stream) -> None:
        metadata = stream.metadata or {}
        if metadata.get(SECURITY_HEADER) != "true":
            raise self._refuse(Status.INVALID_ARGUMENT, "security header missing from request",
                               "workload_api.security_header")

    def attest(self, stream: Stream) -> tuple[Caller, SpiffeId]:
        """The caller's process, its digest, and the SPIFFE ID of its promoted release; refusals audited."""
        self._check_header(stream)
        pid, uid, gid = peer_credentials(_stream_socket(stream))
        try:
            caller = attest_process(pid, uid, gid)
        except TrustFabricError as exc:
            raise self._refuse(Status.PERMISSION_DENIED, exc.detail, exc.reason) from None
        release = next((r for r in self.plane.releases.list(self.trust_domain) if r.digest == caller.digest), None)
        if release is None:
            raise self._refuse(Status.PERMISSION_DENIED,
                               f"{caller.path} (sha256 {caller.digest[:16]}...) is not a release promoted to "
                               f"{self.trust_domain}: no SVID", "attest.unpromoted_digest", caller)
        try:
            sid = SpiffeId.parse(f"spiffe://{self.trust_domain}/{release.name}")
        except TrustFabricError:
            raise self._refuse(Status.PERMISSION_DENIED, f"release {release.name!r} names no workload path "
                               "(segment/service)", "attest.no_registration", caller) from None
        if self.plane.revocations.is_quarantined(str(sid)):
            raise self._refuse(Status.PERMISSION_DENIED, f"{sid} is quarantined: no SVID", "attest.quarantined",
                               caller)
        return caller, sid

    # -- X.509 ---------------------------------------------------------------------------
    def _bundle_der(self) -> bytes:
        ca = self.plane.ca(self.trust_domain)
        return b"".join(c.public_bytes(serialization.Encoding.DER) for c in load_certificates(ca.bundle_pem()))

    def issue_x509(self, caller: Caller, sid: SpiffeId) -> tuple[pb.X509SVID, float]:
        now = time.time()
        key, csr = new_key_and_csr(sid)
        posture = self.host_agent.report(now)
        cert = self.plane.attesting_issuer().issue(
            AttestationRequest(sid, csr, caller.digest, posture, self.svid_ttl_s), now)
        chain = cert.public_bytes(serialization.Encoding.DER)
        key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        self.issued += 1
        return pb.X509SVID(spiffe_id=str(sid), x509_svid=chain, x509_svid_key=key_der,
                           bundle=self._bundle_der()), cert.not_valid_after_utc.timestamp()

    async def fetch_x509_svid(self, stream: Stream) -> None:
        await stream.recv_message()
        caller, sid = self.attest(stream)
        while not self.stopping.is_set():
            try:
                svid, not_after = await asyncio.to_thread(self.issue_x509, caller, sid)
            except TrustFabricError as exc:
                raise self._refuse(Status.PERMISSION_DENIED, exc.detail, exc.reason, caller) from None
            await stream.send_message(pb.X509SVIDResponse(svids=[svid]))
            # the next one before this one is half through its life: pushed on the open stream
            wait = max(0.5, (not_after - time.time()) / 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), wait)

    async def fetch_x509_bundles(self, stream: Stream) -> None:
        await stream.recv_message()
        self.attest(stream)
        sent = b""
        while not self.stopping.is_set():
            bundle = self._bundle_der()
            if bundle != sent:
                await stream.send_message(pb.X509BundlesResponse(bundles={self.trust_domain: bundle}))
                sent = bundle
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 5.0)

    # -- JWT -----------------------------------------------------------------------------
    async def fetch_jwt_svid(self, stream: Stream) -> None:
        request = await stream.recv_message()
        _caller, sid = self.attest(stream)
        audience = [a for a in (request.audience if request else []) if a]
        if not audience:
            raise self._refuse(Status.INVALID_ARGUMENT, "audience must be specified", "workload_api.no_audience")
        if request.spiffe_id and request.spiffe_id != str(sid):
            raise self._refuse(Status.PERMISSION_DENIED, f"this workload is {sid}, not {request.spiffe_id}",
                               "workload_api.not_your_id")
        token = self.jwt_keys.sign(str(sid), audience, time.time(), ttl_s=min(self.svid_ttl_s, 300))
        await stream.send_message(pb.JWTSVIDResponse(svids=[pb.JWTSVID(spiffe_id=str(sid), svid=token)]))

    async def fetch_jwt_bundles(self, stream: Stream) -> None:
        await stream.recv_message()
        self.attest(stream)
        await stream.send_message(pb.JWTBundlesResponse(bundles={self.trust_domain: self.jwt_keys.jwks_json()}))
        await self.stopping.wait()

    async def validate_jwt_svid(self, stream: Stream) -> None:
        request = await stream.recv_message()
        self.attest(stream)
        if request is None or not request.audience or not request.svid:
            raise self._refuse(Status.INVALID_ARGUMENT, "audience and svid must be specified",
                               "workload_api.bad_request")
        try:
            claims = self.jwt_keys.verify(request.svid, request.audience, time.time())
        except TrustFabricError as exc:
            raise self._refuse(Status.INVALID_ARGUMENT, exc.detail, exc.reason) from None
        values = struct_pb2.Struct()
        values.update({k: v for k, v in claims.items() if isinstance(v, (str, int, float, bool, list))})
        await stream.send_message(pb.ValidateJWTSVIDResponse(spiffe_id=claims["sub"], claims=values))


class WorkloadApiServer:
    """The agent: :class:`WorkloadApi` on a Unix socket (0666 in a directory the operator chose)."""

    def __init__(self, api: WorkloadApi) -> None:
        self.api = api
        self.server = Server([api])
        self.path = ""

    async def start(self, path: str | Path) -> "WorkloadApiServer":
        self.path = str(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        await self.server.start(path=self.path)
        os.chmod(self.path, 0o666)  # any local workload may ask; attestation decides what it gets
        return self

    async def close(self) -> None:
        self.api.stopping.set()
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 5.0)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
