"""The SPIFFE Workload API with a real client (py-spiffe) in its own process, attested by its code digest.

The client gets its X.509-SVID and bundle from the agent's socket, is pushed a rotated SVID
before expiry on the same stream, opens mTLS to a trustfabric service with it, and fetches
a JWT-SVID that the agent and the fabric's JWT-SVID verifier accept. Refused: an unpromoted
script (PERMISSION_DENIED, audited), a call without the security header (INVALID_ARGUMENT),
a JWT-SVID asked to validate for another audience.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import textwrap
import time

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from spiffe._proto import workload_pb2, workload_pb2_grpc

from trustfabric.agent.workload_api import WorkloadApi, WorkloadApiServer
from trustfabric.audit.events import Kind, MemorySink
from trustfabric.identity.plane import IdentityPlane
from trustfabric.identity.workload import issue_for_test
from trustfabric.signals.host_agent import HostPostureAgent
from trustfabric.transport.connection import FrameServer
from trustfabric.transport.tls import TLSConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

DOMAIN = "prod.acme.example"
WORKLOAD = f"spiffe://{DOMAIN}/pricing/fair-value"
VENUE = f"spiffe://{DOMAIN}/venue/venue-a"

CLIENT = textwrap.dedent('''
    """A SPIFFE-aware workload: identity from the Workload API, nothing on disk."""
    import json, socket, ssl, sys, tempfile, time, os
    from cryptography.hazmat.primitives import serialization
    from spiffe import WorkloadApiClient, X509Source

    socket_path, port = sys.argv[1], int(sys.argv[2])
    out = {}
    source = X509Source(socket_path="unix://" + socket_path,
                        timeout_in_seconds=float(sys.argv[4]) if len(sys.argv) > 4 else 10)
    first = source.svid
    out["spiffe_id"] = str(first.spiffe_id)
    out["first_serial"] = first.leaf.serial_number
    deadline = time.time() + 20
    while source.svid.leaf.serial_number == first.leaf.serial_number and time.time() < deadline:
        time.sleep(0.1)  # the agent pushes the next SVID on the open stream
    svid = source.svid
    out["rotated_serial"] = svid.leaf.serial_number
    out["rotated_before_expiry"] = time.time() < first.leaf.not_valid_after_utc.timestamp()
    bundle = source.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    out["bundle_authorities"] = len(bundle.x509_authorities)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key, ca = (os.path.join(tmp, n) for n in ("cert.pem", "key.pem", "ca.pem"))
        open(cert, "wb").write(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in svid.cert_chain))
        open(key, "wb").write(svid.private_key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        open(ca, "wb").write(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in bundle.x509_authorities))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(ca)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
            out["mtls_hello"] = len(tls.recv(4096)) > 0  # the service's Hello frame: our identity accepted
    client = WorkloadApiClient(socket_path="unix://" + socket_path)
    jwt_svid = client.fetch_jwt_svid(audience={"svc/venue-a"})
    out["jwt"] = jwt_svid.token
    out["jwt_ep"] = client.fetch_jwt_svid(audience={sys.argv[3]}).token  # for the enforcement point
    out["leaf_pem"] = svid.leaf.public_bytes(serialization.Encoding.PEM).decode()
    out["jwt_valid"] = str(client.validate_jwt_svid(jwt_svid.token, "svc/venue-a").spiffe_id)
    try:
        client.validate_jwt_svid(jwt_svid.token, "svc/treasury")
        out["wrong_audience"] = "accepted"
    except Exception as exc:
        out["wrong_audience"] = type(exc).__name__
    source.close()
    print(json.dumps(out))
''')


@pytest.fixture
def agent_home(tmp_path):
    plane = IdentityPlane(tmp_path / "home", sink=MemorySink())
    plane.init("acme.example")
    host = HostPostureAgent("host-1")
    plane.register_host("host-1", host.public_key)
    yield plane, host
    plane.close()


async def _run(script, *args):
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), *map(str, args),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_py_spiffe_gets_rotated_svids_talks_mtls_and_gets_a_jwt_svid(agent_home, tmp_path):
    plane, host = agent_home
    script = tmp_path / "fair_value.py"
    script.write_text(CLIENT)
    plane.releases.promote(DOMAIN, hashlib.sha256(script.read_bytes()).hexdigest(), time.time(),
                           "pricing/fair-value")
    api = WorkloadApi(plane, DOMAIN, host, svid_ttl_s=6)
    server = await WorkloadApiServer(api).start(tmp_path / "agent.sock")
    service_creds = issue_for_test(plane.ca(DOMAIN), f"spiffe://{DOMAIN}/venue/venue-a", time.time() - 60)

    async def hold(conn):
        await asyncio.sleep(1)

    service = await FrameServer(hold, tls=TLSConfig(service_creds), name="venue-a").start()
    try:
        rc, out, err = await _run(script, tmp_path / "agent.sock", service.port, VENUE)
        assert rc == 0, err[-3000:]
        result = json.loads(out.strip().splitlines()[-1])
    finally:
        await service.close()
        await server.close()
    assert result["spiffe_id"] == WORKLOAD
    assert result["rotated_serial"] != result["first_serial"] and result["rotated_before_expiry"]
    assert result["bundle_authorities"] >= 1 and result["mtls_hello"]
    assert result["jwt_valid"] == WORKLOAD and result["wrong_audience"] != "accepted"
    claims = api.jwt_keys.verify(result["jwt"], "svc/venue-a")  # the fabric's verifier accepts it too
    assert claims["sub"] == WORKLOAD
    assert api.issued >= 2
    # an enforcement point takes the JWT-SVID over mTLS from the workload whose certificate it names
    from cryptography import x509 as cx509

    from trustfabric.agent.jwt_svid import JwtBundle, JwtSvidVerifier
    from trustfabric.enforcement.errors import SessionRefused
    from trustfabric.enforcement.pep import EnforcementPoint
    from trustfabric.enforcement.tables import StaticTableSource
    from trustfabric.transport.tls import identity_from_der

    leaf = cx509.load_pem_x509_certificate(result["leaf_pem"].encode())
    der = leaf.public_bytes(serialization.Encoding.DER)
    peer = identity_from_der(der, trust_domain=DOMAIN, now=time.time())
    bundle = JwtBundle.from_jwks(DOMAIN, api.jwt_keys.jwks_json())  # what FetchJWTBundles hands out
    pep = EnforcementPoint(VENUE, StaticTableSource.from_mapping(
        {"principals": {WORKLOAD: [{"action": "quote", "resource": "venue/quotes"}]}}),
        JwtSvidVerifier(bundle), sink=MemorySink())
    session = pep.open_session(peer, result["jwt_ep"])
    assert pep.check(session, "quote", "venue/quotes")[0] is True
    with pytest.raises(SessionRefused) as replay:  # good for one session open
        pep.open_session(peer, result["jwt_ep"])
    assert replay.value.reason == "session.token_replayed"
    other = issue_for_test(plane.ca(DOMAIN), f"spiffe://{DOMAIN}/algo/algo-momentum", time.time() - 60)
    stranger = identity_from_der(other.certificate.public_bytes(serialization.Encoding.DER), trust_domain=DOMAIN,
                                 now=time.time())
    with pytest.raises(SessionRefused) as wrong:  # someone else's certificate with this workload's JWT-SVID
        pep.open_session(stranger, result["jwt_ep"])
    assert wrong.value.reason == "session.token_wrong_subject"
    with pytest.raises(SessionRefused) as audience:  # a JWT-SVID for another audience
        pep.open_session(peer, result["jwt"])
    assert audience.value.reason == "jwt_svid.wrong_audience"


async def test_an_unpromoted_workload_gets_no_svid_and_the_refusal_is_audited(agent_home, tmp_path):
    plane, host = agent_home
    script = tmp_path / "rogue.py"
    script.write_text(CLIENT)  # never promoted
    api = WorkloadApi(plane, DOMAIN, host)
    server = await WorkloadApiServer(api).start(tmp_path / "agent.sock")
    try:
        rc, _out, err = await _run(script, tmp_path / "agent.sock", 1, VENUE, 2)
    finally:
        await server.close()
    assert rc != 0 and api.issued == 0 and api.refused >= 1  # py-spiffe retries, then gives up
    refusals = plane.emitter.sink.of_kind(Kind.CERT_REFUSED)
    assert refusals and all(e.reason == "attest.unpromoted_digest" for e in refusals)
    assert refusals[0].detail["path"] == str(script) and refusals[0].detail["pid"] > 0


async def test_a_call_without_the_security_header_is_refused(agent_home, tmp_path):
    plane, host = agent_home
    api = WorkloadApi(plane, DOMAIN, host)
    server = await WorkloadApiServer(api).start(tmp_path / "agent.sock")
    try:
        def call() -> grpc.StatusCode:
            with grpc.insecure_channel(f"unix://{tmp_path / 'agent.sock'}") as channel:
                stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
                try:
                    stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["x"]), timeout=5)
                except grpc.RpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK

        assert await asyncio.to_thread(call) == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.close()
    assert api.issued == 0


def test_jwt_svid_verification_refuses_what_it_must(agent_home):
    from trustfabric.agent.jwt_svid import JwtSvidKeys
    from trustfabric.errors import IdentityError

    plane, _ = agent_home
    keys = JwtSvidKeys.open(plane.home, DOMAIN)
    other = JwtSvidKeys.open(plane.home, "dev.acme.example")
    now = time.time()
    token = keys.sign(WORKLOAD, ["svc/venue-a"], now, ttl_s=60)
    assert keys.verify(token, "svc/venue-a", now)["sub"] == WORKLOAD
    for bad, audience, when, reason in (
        (token, "svc/treasury", now, "jwt_svid.wrong_audience"),
        (token, "svc/venue-a", now + 3600, "jwt_svid.expired"),
        (other.sign(WORKLOAD, ["svc/venue-a"], now), "svc/venue-a", now, "jwt_svid.unknown_key"),
        ("not.a.jwt", "svc/venue-a", now, "jwt_svid.invalid"),
        ("", "svc/venue-a", now, "jwt_svid.malformed"),
    ):
        with pytest.raises(IdentityError) as info:
            keys.verify(bad, audience, when)
        assert info.value.reason == reason, (reason, info.value.reason)
    # alg none is never accepted
    import jwt as pyjwt

    unsigned = pyjwt.encode({"sub": WORKLOAD, "aud": "svc/venue-a", "exp": int(now) + 60}, None, algorithm="none",
                            headers={"kid": keys.kid})
    with pytest.raises(IdentityError):
        keys.verify(unsigned, "svc/venue-a", now)


def test_the_agent_refuses_to_start_until_its_host_key_is_registered(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from trustfabric.cli import app

    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    with IdentityPlane(tmp_path) as plane:
        plane.init("acme.example")
    result = CliRunner().invoke(app, ["agent", "--socket", str(tmp_path / "a.sock"), "--host", "host-9"])
    assert result.exit_code == 1 and "agent.host_not_registered" in result.output
    assert (tmp_path / "agent" / "host-host-9.pub").exists()  # what the operator registers
    assert oct((tmp_path / "agent" / "host-host-9.pem").stat().st_mode & 0o777) == "0o600"


async def test_a_quarantined_workload_gets_no_svid(agent_home, tmp_path):
    plane, host = agent_home
    script = tmp_path / "fair_value.py"
    script.write_text(CLIENT)
    plane.releases.promote(DOMAIN, hashlib.sha256(script.read_bytes()).hexdigest(), time.time(),
                           "pricing/fair-value")
    plane.revocations.revoke_spiffe_id(WORKLOAD, time.time(), "quarantine")
    api = WorkloadApi(plane, DOMAIN, host)
    server = await WorkloadApiServer(api).start(tmp_path / "agent.sock")
    try:
        rc, _out, _err = await _run(script, tmp_path / "agent.sock", 1, VENUE, 2)
    finally:
        await server.close()
    assert rc != 0 and api.issued == 0
    assert {e.reason for e in plane.emitter.sink.of_kind(Kind.CERT_REFUSED)} == {"attest.quarantined"}
