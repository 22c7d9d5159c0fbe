"""SIEM export: OCSF events validated against OCSF models, CEF escaping, RFC 5424 framing, and live
forwarding over TLS that resumes after the SIEM was away (every record at least once, in order)."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import ssl
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from trustfabric.audit.events import Emitter, Kind
from trustfabric.audit.forward import SyslogForwarder
from trustfabric.audit.log import open_log
from trustfabric.audit.siem import render, syslog_frame, to_cef, to_ocsf

from py_ocsf_models.events.base_event import BaseEvent  # the OCSF models (py-ocsf-models, OCSF 1.5)
from py_ocsf_models.events.findings.detection_finding import DetectionFinding
from py_ocsf_models.objects.api import API
from py_ocsf_models.objects.resource_details import ResourceDetails
from py_ocsf_models.objects.service import Service
from py_ocsf_models.objects.user import User

# Per class (OCSF 1.5): the category, the activities we emit, the required attributes, and the object
# attributes py-ocsf-models has a model for. Detection Finding has a whole-class model.
CLASSES = {
    3002: (3, {1, 2}, {"user"}),
    3003: (3, {1}, {"user"}),
    2004: (2, {1}, {"finding_info"}),
    6003: (6, {99}, {"actor", "api", "src_endpoint"}),
}
OBJECTS = {"user": User, "api": API, "service": Service}


def validate(event: dict) -> None:
    """The event against the OCSF models: the base event, the class's rules, each modelled object."""
    BaseEvent.model_validate(event)  # metadata (product, version), severity_id, status_id...
    category, activities, required = CLASSES[event["class_uid"]]
    assert event["category_uid"] == category and event["activity_id"] in activities
    assert event["type_uid"] == event["class_uid"] * 100 + event["activity_id"]
    assert required <= set(event), (event["class_name"], required - set(event))
    if event["class_uid"] == 2004:
        DetectionFinding.model_validate(event)
    for name, model in OBJECTS.items():
        if name in event:
            model.model_validate(event[name])
    if "actor" in event:
        User.model_validate(event["actor"]["user"])
    if "api" in event and "service" in event["api"]:
        Service.model_validate(event["api"]["service"])
    for resource in event.get("resources", []):
        ResourceDetails.model_validate(resource)
ALGO = "spiffe://prod.acme.example/algo/algo-momentum"


def fill(log, n_decisions: int = 3, *, run: int = 0) -> None:
    """Records of every kind; ``run`` > 0 starts each source past the sequence numbers of earlier runs."""
    start = run * 1000
    venue = Emitter("venue-a", log, start_seq=start)
    plane = Emitter("control-plane", log, start_seq=start)
    for i in range(n_decisions):
        venue.emit(Kind.DECISION, principal=ALGO, action="submit_order", resource="venue/orders",
                   decision="allow" if i % 2 == 0 else "deny", reason="" if i % 2 == 0 else "policy.rate",
                   trace_id=f"algo-momentum-{i}", policy_ids=("algo.trade",), epoch=3)
    venue.emit(Kind.HANDSHAKE_REFUSED, decision="deny", reason="cert.missing",
               detail={"peer_address": "127.0.0.1:51234", "server": "venue-a"})
    venue.emit(Kind.SESSION_REFUSED, principal=ALGO, decision="deny", reason="session.peer_quarantined")
    venue.emit(Kind.SESSION_OPEN, principal=ALGO, action="connect", resource="svc/venue-a", decision="allow")
    venue.emit(Kind.SESSION_CLOSE, principal=ALGO, reason="session.closed_by_peer")
    plane.emit(Kind.ALERT, principal=ALGO, action="lateral_movement", decision="deny",
               reason="response.lateral_movement", detail={"targets": ["settlement", "oms"]})
    plane.emit(Kind.ADMIN_ACTION, principal="user:dave", action="operator.quarantine", resource=ALGO,
               decision="allow", detail={"role": "security_officer"})


@pytest.fixture
def log(tmp_path):
    log = open_log(tmp_path / "audit")
    fill(log)
    yield log
    log.close()


def test_every_record_is_an_ocsf_event_the_models_accept(log):
    records = list(log.store.records(0, log.size))
    classes = set()
    for record in records:
        event = to_ocsf(record)
        validate(event)
        assert event["metadata"]["uid"] == record.event().event_id
        classes.add(event["class_uid"])
    assert classes == set(CLASSES)
    deny = to_ocsf(records[1])
    assert deny["status_id"] == 2 and deny["status_detail"] == "policy.rate"
    assert deny["actor"]["user"]["uid"] == ALGO and deny["api"]["operation"] == "submit_order"
    assert deny["metadata"]["correlation_uid"] == "algo-momentum-1"
    refused = to_ocsf(records[3])
    assert refused["class_uid"] == 3002 and refused["src_endpoint"] == {"ip": "127.0.0.1", "port": 51234}


def test_cef_escapes_what_the_specification_asks(log):
    em = Emitter("venue|a", log)
    em.emit(Kind.DECISION, principal=ALGO, action="a=b", resource="x\\y", decision="deny", reason="line\nbreak")
    line = to_cef(list(log.store.records(log.size - 1, log.size))[0])
    assert line.startswith("CEF:0|trustfabric|trustfabric|")
    assert "act=a\\=b" in line and "request=x\\\\y" in line and "reason=line\\nbreak" in line
    assert "dvchost=venue|a" in line  # a pipe needs no escape in the extension
    assert "\n" not in line and line.split("|")[4] == "decision"


def test_syslog_frames_are_rfc5424_with_octet_counting():
    frame = syslog_frame("hello ünïcode", time_ns=1_700_000_000_123_456_000, msgid="venue-a-7", severity=4)
    length, _, body = frame.partition(b" ")
    assert int(length) == len(body)
    assert re.match(rb"<108>1 2023-11-14T22:13:20\.123456Z trustfabric trustfabric - venue-a-7 - \xef\xbb\xbf",
                    body), body


def test_export_command_writes_ocsf_cef_and_jsonl(log, tmp_path, monkeypatch):
    from trustfabric.cli import app

    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    for fmt in ("ocsf", "cef", "jsonl"):
        result = CliRunner().invoke(app, ["audit", "export", "--format", fmt, "--dir", str(tmp_path / "audit")])
        assert result.exit_code == 0, result.output
        lines = result.stdout.strip().splitlines()
        assert len(lines) == log.size
        if fmt != "cef":
            assert all(json.loads(line) for line in lines)
    bad = CliRunner().invoke(app, ["audit", "export", "--format", "xml", "--dir", str(tmp_path / "audit")])
    assert bad.exit_code == 2 and "audit.export.format" in bad.output


# -- forwarding -----------------------------------------------------------------------------
def _receiver_pki(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "siem.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("siem.test")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "siem.pem", tmp_path / "siem.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Receiver:
    """A syslog-over-TLS receiver on loopback: octet-counted RFC 5424 frames, MSGIDs kept in arrival order."""

    def __init__(self, cert, key, port: int = 0) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.msgids: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as tls:
                    tls.settimeout(0.1)
                    buf = b""
                    while not self.stop.is_set():
                        try:
                            data = tls.recv(65536)
                        except TimeoutError:
                            continue
                        if not data:
                            break
                        buf += data
                        while b" " in buf:
                            length, _, rest = buf.partition(b" ")
                            if len(rest) < int(length):
                                break
                            body, buf = rest[:int(length)], rest[int(length):]
                            self.msgids.append(body.split(b" ")[5].decode())
            except (ssl.SSLError, OSError):
                continue

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(5)


def _until(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_forwarding_resumes_after_the_siem_was_away_and_loses_nothing(tmp_path):
    cert, key = _receiver_pki(tmp_path)
    log = open_log(tmp_path / "audit")
    fill(log, n_decisions=40)
    receiver = Receiver(cert, key)
    port = receiver.port
    forwarder = SyslogForwarder(log, "127.0.0.1", port, ssl.create_default_context(cafile=str(cert)),
                                tmp_path / "state", server_name="siem.test", batch=16)
    stop = threading.Event()
    thread = threading.Thread(target=forwarder.run, args=(stop,), kwargs={"max_backoff_s": 0.3}, daemon=True)
    thread.start()
    try:
        assert _until(lambda: forwarder.status()["lag"] == 0)
        first = log.size
        before = receiver
        receiver.close()  # the SIEM goes away; the floor keeps logging
        fill(log, n_decisions=40, run=1)
        assert _until(lambda: forwarder.status()["failures"] >= 1), forwarder.status()
        assert forwarder.status()["lag"] >= log.size - first  # queued, counted, not dropped
        receiver = Receiver(cert, key, port)  # back on the same port
        assert _until(lambda: forwarder.status()["lag"] == 0, 20.0), forwarder.status()
    finally:
        stop.set()
        thread.join(10)
        receiver.close()
    expected = [r.event().event_id for r in log.store.records(0, log.size)]
    got = before.msgids + receiver.msgids
    assert set(expected) <= set(got)  # nothing lost: every record arrived at least once
    assert list(dict.fromkeys(got)) == expected  # in log order (a resend only repeats what came before)
    # a new forwarder resumes from the checkpoint: nothing more to send
    again = SyslogForwarder(log, "127.0.0.1", port, ssl.create_default_context(cafile=str(cert)),
                            tmp_path / "state", server_name="siem.test")
    assert again.status()["lag"] == 0
    log.close()


def test_render_is_one_line_per_record(log):
    for record in log.store.records(0, log.size):
        for fmt in ("ocsf", "cef", "jsonl"):
            assert "\n" not in render(record, fmt)


def test_forward_command_ships_the_log_once_and_keeps_its_checkpoint(tmp_path, monkeypatch):
    from trustfabric.cli import app

    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    cert, key = _receiver_pki(tmp_path)
    log = open_log(tmp_path / "audit")
    fill(log, n_decisions=10)
    size = log.size
    log.close()
    receiver = Receiver(cert, key)
    try:
        args = ["audit", "forward", "--to", f"127.0.0.1:{receiver.port}", "--ca", str(cert), "--server-name",
                "siem.test", "--once", "--format", "cef"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert f"acknowledged up to record {size} of {size}" in " ".join(result.output.split())
        assert _until(lambda: len(receiver.msgids) == size)
        again = CliRunner().invoke(app, args)  # nothing new: nothing sent again
        assert again.exit_code == 0 and len(receiver.msgids) == size
    finally:
        receiver.close()
    log = open_log(tmp_path / "audit")
    fill(log, n_decisions=1, run=1)  # something new to ship, and nobody listening
    log.close()
    unreachable = CliRunner().invoke(app, ["audit", "forward", "--to", f"127.0.0.1:{receiver.port}", "--ca",
                                           str(cert), "--once"])
    assert unreachable.exit_code == 1 and "audit.forward.unreachable" in unreachable.output
