"""The decimal-number delta filter of the MEDIUM context (rk_jupyter/link/delta.py): exact
round trips on any bytes, bounded and error-only decoding of hostile input, and the frames a
real plot makes."""

from __future__ import annotations

import socket

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rk_jupyter.link import delta, wxf
from rk_jupyter.link.compression import (
    MEDIUM,
    CompressionError,
    StreamCompressor,
    StreamDecompressor,
)
from rk_jupyter.link.delta import DeltaError, bound, decode, encode
from rk_jupyter.link.frames import FrameError, FrameReader, FrameWriter, encode_header
from rk_jupyter.link.packets import packet

EXAMPLES = settings(max_examples=600, deadline=None)

# Pieces that sit at the edges of what counts as a number, or of the escapes.
NUMBERISH = st.sampled_from([
    b"0.0", b"-0.0", b"-0.000", b"0.5", b"-0.5", b"1.", b".5", b"-", b".", b"007.5", b"10.25",
    b"1.2.3", b"-1.5e-10", b"123456789012345.123456789012345", b"1234567890123456.5",
    b"3.14159265358979323846264338327950288", b"99999999999999.9999999", b"\xff", b"\xfe",
    b"\xfe\x01", b"\xfe\x02", b"\xff\xfe", b" ", b",", b"a", b"\x00",
])
TEXTS = st.one_of(
    st.binary(max_size=400),
    st.lists(NUMBERISH, max_size=60).map(b"".join),
    st.lists(st.one_of(NUMBERISH, st.floats(allow_nan=False, allow_infinity=False).map(
        lambda x: repr(x).encode()), st.integers().map(lambda i: b"%d" % i),
        st.binary(max_size=3)), max_size=80).map(b" ".join),
)


@EXAMPLES
@given(TEXTS)
def test_round_trip_is_exact_and_bounded(data: bytes) -> None:
    filtered = encode(data)
    assert len(filtered) <= bound(len(data))
    assert decode(filtered, len(data)) == data


@EXAMPLES
@given(TEXTS, st.integers(1, 50))
def test_a_limit_below_the_payload_is_refused(data: bytes, short: int) -> None:
    assume(short < len(data))
    with pytest.raises(DeltaError, match="more than"):
        decode(encode(data), len(data) - short)


@EXAMPLES
@given(st.one_of(
    st.binary(max_size=300),
    st.builds(lambda cut, junk: encode(b"p 1.5,2.25 3.5,-4.75 \xff"[:cut] * 3) + junk,
              st.integers(0, 23), st.binary(max_size=8)),
    st.builds(lambda head, tokens: head + b"".join(tokens),
              st.sampled_from([b"\x02\x03a\xffb", b"\x01\x01\xff", b"\x02\x02\xff\xff"]),
              st.lists(st.from_regex(rb"\A[a-p]?-?[0-9]{0,40} ?\Z"), max_size=3)),
))
def test_hostile_input_gives_only_delta_errors_within_the_limit(data: bytes) -> None:
    try:
        out = decode(data, 1000)
    except DeltaError:
        return
    assert len(out) <= 1000


@pytest.mark.parametrize("data, message", [
    (b"\x02\x01\xff", "skeleton"),  # two numbers, one slot
    (b"\x01\x03\xfe\x05\xffa1 ", "escape"),
    (b"\x01\x01\xff1 ", "out of range"),  # no count of decimals before the first number
    (b"\x01\x01\xffa" + b"9" * 20 + b" ", "out of range"),  # 19 digits before the point
    (b"\x01\x01\xffa1", "do not match"),  # no terminator
    (b"\x01\x01\xffa1 2 ", "do not match"),  # more numbers than slots
    (b"\x01\x01\xffa1 x", "do not match"),
    (b"\x80\x80\x80\x80\x80\x80", "varint"),
    (b"\x03\x03\xff\xff\xffo" + b"9" * 29 + b" " + b"0 " * 2, "more than"),  # 32 B per slot
])
def test_malformed_filtered_forms_are_named(data: bytes, message: str) -> None:
    with pytest.raises(DeltaError, match=message):
        decode(data, 64)


def test_what_stays_text() -> None:
    """A '-' before zero (no integer is -0), leading zeros and digits beyond 15 stay in the
    skeleton; what follows them decodes unchanged."""
    data = b"-0.0 007.5 3.14159265358979323846 1234567890123456.5 x"
    filtered = encode(data)
    count = filtered[0]
    assert count == 4, filtered
    assert b"-\xff" in filtered and b"00\xff" in filtered and b"\xff23846" in filtered
    assert decode(filtered, len(data)) == data


def test_the_points_of_a_line_become_one_repeated_token() -> None:
    """Each number minus the one two places back: the same coordinate of the previous point.
    Along a straight line that difference is constant, which is what the compressor sees."""
    points = " ".join(f"{10 + 1.25 * k:.6f},{200 - 0.75 * k:.6f}" for k in range(50))
    data = f'<polyline points="{points}" />'.encode()
    filtered = encode(data)
    tokens = filtered[filtered.index(b'" />') + 4:].split(b" ")[:-1]
    assert tokens[:4] == [b"f10000000", b"200000000", b"1250000", b"-750000"]
    assert set(tokens[4:]) == {b"1250000", b"-750000"}
    assert decode(filtered, len(data)) == data


def test_payloads_without_numbers_go_as_they_are() -> None:
    data = wxf.dumps(packet("TextPacket", "no numbers here \xff" * 10))
    assert encode(data) == b"\x00" + data


def test_a_filtered_form_never_exceeds_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every number costs a slot, a token and a space: with GROWTH lowered below what that
    takes, the payload goes unfiltered rather than past the bound the reader inflates to."""
    data = b"0.1 " * 100
    assert encode(data)[0] != 0
    monkeypatch.setattr(delta, "GROWTH", 1)
    assert encode(data) == b"\x00" + data


@pytest.mark.parametrize("codec", ["brotli", "zlib"])
def test_medium_context_filters_and_restores(codec: str) -> None:
    c, d = StreamCompressor(codec, MEDIUM), StreamDecompressor(codec, MEDIUM)
    for k in range(1, 6):
        data = wxf.dumps(packet("ReturnPacket", {"image/svg+xml": " ".join(
            f"{i * 0.5:.6f},{(i * k) % 17 / 3:.6f}" for i in range(300))}))
        assert d.decompress(c.compress(data), len(data)) == data


def test_medium_frame_whose_body_is_no_filtered_form_is_malformed() -> None:
    """The body decompresses, but what comes out is not the filter's form: the reader names a
    malformed frame instead of passing garbage to the WXF decoder."""
    body = _unfiltered("brotli").compress(b"\x05\x01\xff")
    a, b = socket.socketpair()
    a.sendall(encode_header(MEDIUM, 1, len(body)) + body)
    with pytest.raises(FrameError, match="malformed frame: corrupt filtered frame"):
        FrameReader(b, "brotli").recv(5)
    with pytest.raises(CompressionError, match="more than 10 bytes"):
        StreamDecompressor("zlib", MEDIUM).decompress(
            _unfiltered("zlib").compress(b"\x00" + b"x" * 15), 10)


def _unfiltered(codec: str) -> StreamCompressor:
    """A MEDIUM compressor that skips the filter: it sends what it is given as the filtered
    form."""
    compressor = StreamCompressor(codec, MEDIUM)
    compressor.filtered = False
    return compressor


def test_a_plot_result_crosses_a_link_exactly() -> None:
    """A ReturnPacket shaped like Mathics3's plots, through FrameWriter/FrameReader."""
    points = " ".join(f"{18.181818 + 6.493507 * i:.6f},{123.606798 - (i % 7) * 1.5:.6f}"
                      for i in range(400))
    result = packet("ReturnPacket", {
        "text/plain": "-Graphics-",
        "image/svg+xml": f'<svg viewBox="-17.066667 -14.010939 434.133333, 275.235473">'
                         f'<polyline points="{points}" style="stroke-width: 1.066667px" /></svg>'})
    a, b = socket.socketpair()
    writer, reader = FrameWriter(a, "brotli"), FrameReader(b, "brotli")
    for _ in range(3):
        writer.send(1, result)
        assert reader.recv(5) == (1, result)
