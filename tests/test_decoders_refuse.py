"""Every decoder of outside bytes refuses bad input with its own typed error, and nothing else escapes.

Random and adversarial bytes - deep nesting, huge lengths, bad UTF-8, lone surrogates, NaN,
giant integers - go to each codec the fabric has: transport frames (the floor's and the
control plane's codec), FIX framing, access tokens, STIX bundles, posture reports, rules
files, audit events and spool records. Each may only answer with its typed refusal (a
:class:`~trustfabric.errors.TrustFabricError` subclass) or a value; a ``RecursionError``,
``ValueError`` or ``msgspec`` error leaving any of them is a defect.
"""

from __future__ import annotations

import base64
import json
import math

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustfabric.audit.compact import canonical, record_seq
from trustfabric.audit.errors import AuditError
from trustfabric.audit.events import decode_event
from trustfabric.audit.spool import Ack, encode_frame, read_spool_records, scan_frames
from trustfabric.clock import FakeClock
from trustfabric.control.protocol import CONTROL_CODEC
from trustfabric.enforcement.tables import StaticTableSource
from trustfabric.errors import ConfigError
from trustfabric.identity.errors import TokenError
from trustfabric.identity.tokens import KeyRing, TokenVerifier
from trustfabric.signals.errors import ThreatIntelError
from trustfabric.signals.errors import PostureError
from trustfabric.signals.posture import HostKeyRegistry, PostureMinimum, decode_signed, evaluate_posture
from trustfabric.signals.threat_intel import parse_bundle
from trustfabric.trading.fix.codec import FixFramer, checksum
from trustfabric.transport.errors import FrameError
from trustfabric.transport.frames import DEFAULT_CODEC, FrameDecoder

T0 = 1_700_000_000.0
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW_EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- adversarial material ------------------------------------------------------------------------

MSGPACK_ODDITIES = [
    b"\xdb\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",  # huge lengths
    b"\xc9\xff\xff\xff\xff\x01", b"\xa2\xff\xfe", b"\xa3\xed\xa0\x80", b"\xd9\x03\xed\xb0\x80",  # bad UTF-8, surrogate
    b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", b"\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00",  # NaN, inf
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",  # giant ints
    b"\xd6\xff\xff\xff\xff\xff", b"\xc7\x0c\xff" + b"\xff" * 12, b"\xc1", b"\xc0",  # timestamps ext, never-used
]
JSON_ODDITIES = [
    b"NaN", b"-Infinity", b"1e400", b"-1e400", b"9" * 5000, b"-" + b"9" * 5000, b'"\\ud800"', b'"\\udfff\\ud800"',
    b'"\xff\xfe"', b'"\xed\xa0\x80"', b"\xef\xbb\xbf{}", b"\x00", b'"' + b"a" * 70000 + b'"', b"{}", b"[]", b"null",
    b"true", b"-0", b"1.0e-400", b'"\\u0000"',
]


def _deep_msgpack(depth: int, opener: bytes) -> bytes:
    return opener * depth + b"\xc0"


def _deep_json(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth  # unterminated


deep_msgpack = st.builds(_deep_msgpack, st.integers(60, 5000),
                         st.sampled_from([b"\x91", b"\x81\xa1k", b"\xdc\x00\x01", b"\xde\x00\x01\xc0"]))
deep_json = st.builds(_deep_json, st.integers(60, 5000), st.sampled_from(["array", "object", "open"]))
msgpack_bytes = st.one_of(st.binary(max_size=300), deep_msgpack, st.sampled_from(MSGPACK_ODDITIES),
                          st.lists(st.sampled_from(MSGPACK_ODDITIES), min_size=1, max_size=4).map(b"".join))
json_bytes = st.one_of(st.binary(max_size=300), deep_json, st.sampled_from(JSON_ODDITIES))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
              st.sampled_from([math.nan, math.inf, 10**400, -(10**400), "\ud800", "\udfff"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def _json_with(value) -> bytes:
    """JSON text of ``value`` as an attacker would write it (NaN, surrogates and giant ints included)."""
    return json.dumps(value, allow_nan=True, ensure_ascii=True).encode()


def _substituted(template: dict, key: str, raw: bytes) -> bytes:
    """``template`` as JSON with the value of ``key`` replaced by raw (possibly invalid) JSON bytes."""
    marker = "\x00MARK\x00"
    text = json.dumps({**template, key: marker}).encode()
    return text.replace(json.dumps(marker).encode(), raw)


# -- transport frames -----------------------------------------------------------------------------


def _framed(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize("codec", [DEFAULT_CODEC, CONTROL_CODEC], ids=["floor", "control"])
@EXAMPLES
@given(st.one_of(st.binary(max_size=400), msgpack_bytes.map(_framed),
                 st.tuples(st.sampled_from(["req", "resp", "open", "err", "push_table", "join"]), msgpack_bytes)
                 .map(lambda t: _framed(b"\x93" + msgspec.msgpack.encode(t[0]) + b"\x01" + t[1]))))
def test_frames_refuse_only_with_frame_error(codec, data):
    decoder = FrameDecoder(codec)
    try:
        decoder.feed(data)
        decoder.eof()
    except FrameError:
        pass


# -- FIX ------------------------------------------------------------------------------------------


def _fix(body: bytes) -> bytes:
    head = b"8=FIX.4.4\x019=" + str(len(body)).encode() + b"\x01" + body
    return head + b"10=" + f"{checksum(head):03d}".encode() + b"\x01"


fix_fields = st.lists(st.tuples(st.sampled_from([b"35", b"49", b"56", b"34", b"52", b"44", b"38", b"x", b"", b"=",
                                                 b"9" * 30, b"-1"]),
                                st.binary(max_size=20).filter(lambda v: b"\x01" not in v)),
                      max_size=8).map(lambda pairs: b"".join(k + b"=" + v + b"\x01" for k, v in pairs))


@EXAMPLES
@given(st.one_of(st.binary(max_size=400), fix_fields.map(_fix), st.binary(max_size=200).map(_fix)))
def test_fix_framing_never_raises_and_names_every_problem(data):
    for framed in FixFramer().feed(data):
        assert (framed.message is None) != (framed.problem == "")


# -- access tokens (header and envelope; claim values are the token module's own tests) ----------


@pytest.fixture(scope="module")
def verifier() -> TokenVerifier:
    return TokenVerifier(KeyRing.generate(T0), "https://issuer.acme", clock=FakeClock(T0))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@EXAMPLES
@given(st.one_of(
    st.text(max_size=300), st.binary(max_size=300),
    st.tuples(st.one_of(json_bytes, json_values.map(_json_with)), st.binary(max_size=80))
      .map(lambda t: f"{_b64(t[0])}.{_b64(b'{}')}.{_b64(t[1])}"),
    st.tuples(json_values, st.binary(max_size=80))
      .map(lambda t: f"{_b64(_json_with({'alg': 'EdDSA', 'kid': t[0], 'typ': 'at+jwt'}))}.e30.{_b64(t[1])}"),
))
def test_tokens_refuse_only_with_token_error(verifier, token):
    with pytest.raises(TokenError):
        verifier.verify(token, "spiffe://prod.acme/risk/pretrade")


# -- STIX bundles ---------------------------------------------------------------------------------

BUNDLE = {"type": "bundle", "id": "bundle--44af6c39-c09b-49c5-9de2-394224b04982"}
INDICATOR = {"type": "indicator", "spec_version": "2.1", "id": "indicator--44af6c39-c09b-49c5-9de2-394224b04982",
             "created": "2024-01-01T00:00:00Z", "modified": "2024-01-01T00:00:00Z", "pattern_type": "stix",
             "valid_from": "2020-01-01T00:00:00Z", "pattern": "[url:value = 'spiffe://prod.acme/a/b']"}


@SLOW_EXAMPLES
@given(st.one_of(
    json_bytes,
    json_bytes.map(lambda raw: _substituted(BUNDLE, "objects", raw)),
    st.tuples(st.sampled_from(sorted(INDICATOR)), st.one_of(json_bytes, json_values.map(_json_with)))
      .map(lambda t: _substituted(BUNDLE, "objects", b"[" + _substituted(INDICATOR, t[0], t[1]) + b"]")),
    st.text(max_size=80).map(lambda p: _substituted(BUNDLE, "objects",
                                                    b"[" + json.dumps({**INDICATOR, "pattern": p}).encode() + b"]")),
))
def test_stix_bundles_refuse_only_with_threat_intel_error(data):
    for form in (data, data.decode("utf-8", "replace")):
        try:
            parse_bundle(form, T0)
        except ThreatIntelError:
            pass


# -- posture reports ------------------------------------------------------------------------------

SIGNED = {"report": "e30=", "signature": "AAAA", "key_id": "k"}


@EXAMPLES
@given(st.one_of(
    json_bytes,
    st.tuples(st.sampled_from(sorted(SIGNED) + ["extra"]), st.one_of(json_bytes, json_values.map(_json_with)))
      .map(lambda t: _substituted(SIGNED, t[0], t[1])),
))
def test_posture_reports_refuse_only_with_posture_error(data):
    try:
        signed = decode_signed(data)
    except PostureError:
        return
    verdict = evaluate_posture(signed, HostKeyRegistry(), PostureMinimum(), T0)
    assert not verdict.ok


# -- rules files ----------------------------------------------------------------------------------

RULES = {"ttl_s": 60, "principals": {"spiffe://prod.acme/a/b": [{"action": "x", "resource": "y", "allow": True}]}}


@EXAMPLES
@given(st.one_of(
    json_bytes,
    st.tuples(st.sampled_from(sorted(RULES) + ["extra"]), st.one_of(json_bytes, json_values.map(_json_with)))
      .map(lambda t: _substituted(RULES, t[0], t[1])),
))
def test_rules_files_refuse_only_with_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("rules") / "rules.json"
    path.write_bytes(data)
    try:
        StaticTableSource.from_file(path)
    except ConfigError:
        pass


# -- audit events and spool records ---------------------------------------------------------------

EVENT = {"v": 1, "event_id": "e-1", "source": "s", "seq": 1, "time_ns": 1, "kind": "decision"}


@EXAMPLES
@given(st.one_of(
    json_bytes, msgpack_bytes,
    st.tuples(st.sampled_from(sorted(EVENT) + ["detail", "obligations", "extra"]),
              st.one_of(json_bytes, json_values.map(_json_with)))
      .map(lambda t: _substituted(EVENT, t[0], t[1])),
    st.tuples(st.integers(0, 2**70), msgpack_bytes)
      .map(lambda t: msgspec.msgpack.encode(["d1", "s", "p", 1, 1, None])[:-1] + t[1]),
))
def test_audit_events_and_spool_records_refuse_only_with_audit_error(data):
    for decode in (decode_event, canonical, record_seq):
        try:
            decode(data)
        except AuditError:
            pass
    frames, _ = scan_frames(encode_frame(data) + data)
    if data:  # a record frames and reads back whole; the bytes after it are no frame of their own
        assert frames[0][1] == data


# -- the escapes found, each pinned to its refusal ----------------------------------------------


def test_each_escape_found_is_now_its_decoders_refusal(tmp_path):
    deep = _deep_json(2000, "object")
    with pytest.raises(PostureError) as posture:
        decode_signed(_substituted(SIGNED, "extra", deep))  # was RecursionError
    assert posture.value.reason == "posture.malformed"
    with pytest.raises(AuditError) as event:
        decode_event(_substituted(EVENT, "extra", deep))  # was RecursionError, and msgspec's errors untranslated
    assert event.value.reason == "audit.event.malformed"
    with pytest.raises(msgspec.DecodeError):  # still what the log's readers catch
        decode_event(b"{")
    with pytest.raises(AuditError) as seq:
        record_seq(msgspec.msgpack.encode(["d1", "s", "p", "x", 1, [None] * 13]))  # was ValueError from int()
    assert seq.value.reason == "audit.spool.malformed"
    [framed] = FixFramer().feed(_fix(b"35=D\x01=x\x01"))  # was AttributeError (a missing simplefix name)
    assert framed.problem == "fix.garbled"
    rules = tmp_path / "rules.json"
    rules.write_bytes(_substituted(RULES, "principals", _deep_json(2000, "array")))
    with pytest.raises(ConfigError) as loaded:
        StaticTableSource.from_file(rules)
    assert loaded.value.reason == "config.rules_invalid"
    with pytest.raises(ThreatIntelError) as intel:
        parse_bundle(_substituted(BUNDLE, "objects", deep), T0)
    assert intel.value.reason == "signal.intel.malformed"


@EXAMPLES
@given(st.lists(st.binary(min_size=1, max_size=60), min_size=1, max_size=12), st.binary(max_size=200),
       st.integers(0, 10_000), st.integers(0, 7))
def test_spool_segments_read_back_only_records_or_typed_refusals(tmp_path_factory, payloads, garbage, where, bit):
    directory = tmp_path_factory.mktemp("spool")
    segment = bytearray(b"".join(encode_frame(p) for p in payloads))
    if segment:
        segment[where % len(segment)] ^= 1 << bit
    (directory / "00000001.seg").write_bytes(bytes(segment) + garbage)
    try:
        strict = [p for _, _, p in read_spool_records(directory, Ack())]
    except AuditError:
        strict = None
    found: list = []
    tolerant = [p for _, _, p in read_spool_records(directory, Ack(), damaged=found.append)]
    assert set(tolerant) <= set(payloads) | set(garbage_frames(garbage))
    if strict is not None:
        assert strict == tolerant and not found


def garbage_frames(garbage: bytes) -> list[bytes]:
    return [p for _, p in scan_frames(garbage)[0]]
