"""The tunnel's data-frame codec: pure tests, no loop, no sockets."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arp.errors import ArpError
from arp.protocol.tunnel import (
    END_FRAME,
    HEADER,
    MAX_DATA_FRAME,
    TunnelDecoder,
    TunnelProtocolError,
    data_frame,
    encode_data,
)


def decode_in_pieces(stream: bytes, cuts: list[int]) -> tuple[bytes, TunnelDecoder]:
    decoder = TunnelDecoder()
    out = bytearray()
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for start, end in itertools.pairwise(points):
        for part in decoder.feed(memoryview(stream[start:end])):
            out += part
        if decoder.ended:
            break
    return bytes(out), decoder


def test_frames_encode_a_length_then_the_payload() -> None:
    assert data_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert data_frame(b"") == b""  # an empty frame would mean "end"
    assert END_FRAME == b"\x00\x00\x00\x00"
    assert encode_data(b"hi") == data_frame(b"hi") + END_FRAME


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    after=st.binary(max_size=40),
    cuts=st.lists(st.integers(0, 5000), max_size=12),
)
def test_any_split_gives_the_payloads_the_end_and_the_rest(
    payloads: list[bytes], after: bytes, cuts: list[int]
) -> None:
    stream = b"".join(data_frame(p) for p in payloads) + END_FRAME + after
    out, decoder = decode_in_pieces(stream, cuts)
    assert out == b"".join(payloads)
    assert decoder.ended
    # The rest is whatever followed the end frame within the piece that held it; the caller
    # keeps reading the rest of the stream for the tunnel's next use.
    assert after.startswith(decoder.rest)


def test_the_rest_after_the_end_frame_is_kept() -> None:
    decoder = TunnelDecoder()
    parts = decoder.feed(memoryview(data_frame(b"x") + END_FRAME + b"next"))
    assert [bytes(p) for p in parts] == [b"x"]
    assert decoder.ended and decoder.rest == b"next"


def test_an_oversize_frame_is_a_protocol_error_with_a_status() -> None:
    decoder = TunnelDecoder()
    with pytest.raises(TunnelProtocolError) as info:
        decoder.feed(memoryview(struct.pack(">I", MAX_DATA_FRAME + 1)))
    assert isinstance(info.value, ArpError) and info.value.status == 502
    assert "over the limit" in info.value.message


def test_closing_inside_a_frame_is_an_error_between_frames_is_not() -> None:
    decoder = TunnelDecoder()
    decoder.feed(memoryview(data_frame(b"whole")))
    decoder.close()  # between frames: like a FIN
    decoder.feed(memoryview(data_frame(b"cut")[:5]))
    with pytest.raises(TunnelProtocolError):
        decoder.close()
    half_header = TunnelDecoder()
    half_header.feed(memoryview(b"\x00\x00"))
    with pytest.raises(TunnelProtocolError):
        half_header.close()


def test_splice_mode_reads_headers_alone_and_counts_payload() -> None:
    decoder = TunnelDecoder()
    assert decoder.header_needed() == HEADER.size
    header = HEADER.pack(10)
    decoder.feed_header(header[:3])
    assert (decoder.header_needed(), decoder.left) == (1, 0)
    decoder.feed_header(header[3:])
    assert decoder.header_needed() == 0 and decoder.left == 10
    decoder.consumed(10)
    assert decoder.between_frames
    decoder.feed_header(END_FRAME)
    assert decoder.ended and decoder.rest == b""
