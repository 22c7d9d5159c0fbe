"""The frame codec: round trips, streaming, and every refusal with its reason code."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustfabric.nesting import MAX_NESTING, msgpack_nesting_exceeds
from trustfabric.transport.errors import FrameError
from trustfabric.transport.frames import (
    DEFAULT_CODEC, MAX_FRAME_NESTING, ErrorFrame, Frame, FrameCodec, FrameDecoder, Hello, Ping, Request, Response,
)


class Quote(Frame, frozen=True, tag="quote"):
    symbol: str
    bid: float
    ask: float


def test_request_round_trips_with_a_typed_body():
    body = msgspec.msgpack.encode({"qty": 100, "px": 10.5})
    frame = Request(rid=7, action="order.submit", resource="risk/orders", body=msgspec.Raw(body),
                    symbol="XYZ", notional=1050.0)
    decoded = DEFAULT_CODEC.decode(DEFAULT_CODEC.encode(frame))
    assert isinstance(decoded, Request)
    assert (decoded.rid, decoded.action, decoded.symbol, decoded.notional) == (7, "order.submit", "XYZ", 1050.0)
    assert msgspec.msgpack.decode(decoded.body) == {"qty": 100, "px": 10.5}


def test_stream_fed_one_byte_at_a_time_yields_every_frame_in_order():
    frames = [Ping(n=i) for i in range(5)] + [Hello(spiffe_id="spiffe://prod.acme/a/b")]
    data = b"".join(DEFAULT_CODEC.encode(f) for f in frames)
    decoder = FrameDecoder()
    out = []
    for i in range(len(data)):
        out += decoder.feed(data[i:i + 1])
    assert out == frames
    assert decoder.pending == 0


def test_a_codec_with_extra_types_decodes_them_and_the_default_one_calls_them_unknown():
    codec = FrameCodec([Quote])
    data = codec.encode(Quote(symbol="XYZ", bid=1.0, ask=1.1))
    assert codec.decode(data) == Quote(symbol="XYZ", bid=1.0, ask=1.1)
    with pytest.raises(FrameError) as info:
        DEFAULT_CODEC.decode(data)
    assert info.value.reason == "frame.unknown_type"


def test_types_need_unique_tags():
    class Dup(Frame, frozen=True, tag="ping"):
        n: int = 0

    with pytest.raises(ValueError):
        FrameCodec([Dup])


def test_oversized_is_refused_from_the_header_alone():
    decoder = FrameDecoder(FrameCodec(max_frame=1024))
    with pytest.raises(FrameError) as info:
        decoder.feed((1025).to_bytes(4, "big") + b"x")  # the body never needs to arrive
    assert info.value.reason == "frame.oversized"


def test_encoding_a_frame_above_the_maximum_is_refused_and_leaves_the_batch_intact():
    codec = FrameCodec(max_frame=64)
    batch = bytearray()
    codec.encode_into(Ping(n=1), batch)
    before = bytes(batch)
    with pytest.raises(FrameError) as info:
        codec.encode_into(ErrorFrame(reason="x" * 100), batch)
    assert info.value.reason == "frame.oversized"
    assert bytes(batch) == before


@pytest.mark.parametrize("body", [b"\xff\xfe\xfd", b"\x93\xa4ping\x01\x02", b"\xa3abc", b"\x91\x05"])
def test_garbage_bodies_are_malformed(body):
    decoder = FrameDecoder()
    with pytest.raises(FrameError) as info:
        decoder.feed(len(body).to_bytes(4, "big") + body)
    assert info.value.reason == "frame.malformed"


def test_zero_length_frame_is_malformed():
    with pytest.raises(FrameError) as info:
        FrameDecoder().feed(b"\0\0\0\0")
    assert info.value.reason == "frame.malformed"


def test_unknown_type_is_named_as_such():
    body = msgspec.msgpack.encode(["launch_missiles", 1])
    with pytest.raises(FrameError) as info:
        FrameDecoder().feed(len(body).to_bytes(4, "big") + body)
    assert info.value.reason == "frame.unknown_type"


def test_good_frames_before_a_bad_one_are_kept_and_the_decoder_stays_poisoned():
    good = DEFAULT_CODEC.encode(Ping(n=1))
    decoder = FrameDecoder()
    with pytest.raises(FrameError) as info:
        decoder.feed(good + b"\0\0\0\3abc")
    assert info.value.decoded == [Ping(n=1)]
    with pytest.raises(FrameError):
        decoder.feed(good)


def test_stream_ending_inside_a_frame_is_truncated():
    data = DEFAULT_CODEC.encode(Response(rid=1, ok=True))
    decoder = FrameDecoder()
    assert decoder.feed(data[:-2]) == []
    with pytest.raises(FrameError) as info:
        decoder.eof()
    assert info.value.reason == "frame.truncated"


def test_clean_end_of_stream_is_not_an_error():
    decoder = FrameDecoder()
    decoder.feed(DEFAULT_CODEC.encode(Ping()))
    decoder.eof()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_as_anything_but_frame_error(data):
    decoder = FrameDecoder(FrameCodec(max_frame=256))
    try:
        frames = decoder.feed(data)
        decoder.eof()
    except FrameError as exc:
        assert exc.reason in {"frame.oversized", "frame.malformed", "frame.unknown_type", "frame.truncated"}
    else:
        assert all(isinstance(f, Frame) for f in frames)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**40), max_size=20), st.integers(min_value=1, max_value=17))
def test_any_chunking_of_a_valid_stream_decodes_the_same(ns, chunk):
    frames = [Ping(n=n) for n in ns]
    data = b"".join(DEFAULT_CODEC.encode(f) for f in frames)
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(data), chunk):
        out += decoder.feed(data[i:i + chunk])
    assert out == frames


def _nested(depth: int, opener: bytes = b"\x91") -> bytes:
    return opener * depth + b"\xc0"


@pytest.mark.parametrize("opener", [b"\x91", b"\x81\xa1k", b"\xdc\x00\x01", b"\xdd\x00\x00\x00\x01",
                                    b"\xde\x00\x01\xc0", b"\xdf\x00\x00\x00\x01\x01"])
def test_nesting_is_measured_without_recursion_for_every_container_form(opener):
    assert not msgpack_nesting_exceeds(_nested(MAX_NESTING, opener))
    assert msgpack_nesting_exceeds(_nested(MAX_NESTING + 1, opener))
    assert msgpack_nesting_exceeds(_nested(100_000, opener))  # far beyond any recursion limit


def test_wide_but_shallow_values_and_skipped_payloads_are_within_the_bound():
    wide = msgspec.msgpack.encode([[i, {"k": [1, 2]}] for i in range(500)])
    assert not msgpack_nesting_exceeds(wide)
    # Container-looking bytes inside strings, bins and exts are skipped, not counted as depth.
    payloads = msgspec.msgpack.encode(["\x91" * 200, b"\x91" * 200, msgspec.msgpack.Ext(1, b"\x91" * 200)])
    assert not msgpack_nesting_exceeds(payloads)


@pytest.mark.parametrize("depth", [MAX_FRAME_NESTING, 1000, 100_000])
def test_a_deeply_nested_body_is_refused_before_decoding_and_the_frames_before_it_are_kept(depth):
    body = msgspec.msgpack.encode(Request(rid=1, action="a", resource="r", body=msgspec.Raw(_nested(depth))))
    decoder = FrameDecoder(FrameCodec(max_frame=1 << 20))
    good = DEFAULT_CODEC.encode(Ping(n=1))
    with pytest.raises(FrameError) as refused:
        decoder.feed(good + len(body).to_bytes(4, "big") + body)
    assert refused.value.reason == "frame.too_deep"
    assert refused.value.decoded == [Ping(n=1)]
    with pytest.raises(FrameError) as direct:
        DEFAULT_CODEC.decode_body(_nested(depth + 1))
    assert direct.value.reason == "frame.too_deep"


def test_a_frame_within_the_bound_in_a_read_full_of_containers_still_decodes():
    frame = Request(rid=1, action="a", resource="r", body=msgspec.Raw(_nested(MAX_FRAME_NESTING - 1)))
    stream = DEFAULT_CODEC.encode(frame) * 3
    assert FrameDecoder().feed(stream) == [frame] * 3
