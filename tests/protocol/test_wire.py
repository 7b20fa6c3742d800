"""The data path's byte checks (`arp.protocol.wire`): the C ones and the Python ones agree,
on generated input, with the plain definitions they stand for."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arp import native
from arp.protocol import wire
from arp.protocol.tunnel import END_FRAME, HEADER, data_frame

SingleFrame = Callable[[bytes | bytearray | memoryview, int], int]
SameAt = Callable[[bytes | bytearray | memoryview, int, bytes | bytearray | memoryview], bool]


def _implementations() -> list[tuple[SingleFrame, SameAt]]:
    pairs: list[tuple[SingleFrame, SameAt]] = [(wire._single_frame, wire._same_at)]
    if native.active():
        from arp.protocol import _wire

        pairs.append((_wire.single_frame, _wire.same_at))
    return pairs


IMPLEMENTATIONS = _implementations()


def test_the_suite_runs_the_c_checks() -> None:
    assert wire.BUILT, "arp.protocol._wire is not built: run bash scripts/setup.sh --dev"
    assert len(IMPLEMENTATIONS) == 2


@pytest.mark.parametrize(("single_frame", "same_at"), IMPLEMENTATIONS)
def test_single_frame_takes_one_whole_frame_only(
    single_frame: SingleFrame, same_at: SameAt
) -> None:
    frame = data_frame(b"payload")
    buffer = bytearray(frame + b"next")
    assert single_frame(buffer, len(frame)) == len(b"payload")
    assert single_frame(bytearray(frame + END_FRAME), len(frame) + len(END_FRAME)) == -1
    assert single_frame(buffer, len(frame) - 1) == -1  # cut short
    assert single_frame(bytearray(END_FRAME), len(END_FRAME)) == -1  # the end frame: no payload
    assert single_frame(bytearray(b"\x00\x00"), 2) == -1
    assert single_frame(bytearray(), 0) == -1
    with pytest.raises(ValueError):
        single_frame(buffer, len(buffer) + 1)
    with pytest.raises(ValueError):
        single_frame(buffer, -1)


@pytest.mark.parametrize(("single_frame", "same_at"), IMPLEMENTATIONS)
def test_same_at_compares_the_bytes_at_an_offset(
    single_frame: SingleFrame, same_at: SameAt
) -> None:
    buffer = bytearray(b"....HTTP/1.1 200 OK\r\n")
    assert same_at(buffer, 4, b"HTTP/1.1 200")
    assert not same_at(buffer, 4, b"HTTP/1.1 201")
    assert not same_at(buffer, 3, b"HTTP")
    assert same_at(buffer, len(buffer), b"")
    assert not same_at(buffer, len(buffer) - 1, b"\n\n")  # runs past the end
    assert not same_at(buffer, len(buffer) + 5, b"x")
    with pytest.raises(ValueError):
        same_at(buffer, -1, b"")
    with pytest.raises(TypeError):
        same_at(buffer, 0, "text")  # type: ignore[arg-type]


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=70))
def test_single_frame_agrees_with_its_definition(data: bytes, size: int) -> None:
    buffer = bytearray(data)
    if size > len(buffer):
        for single_frame, _ in IMPLEMENTATIONS:
            with pytest.raises(ValueError):
                single_frame(buffer, size)
        return
    expected = -1
    if size > HEADER.size:
        (length,) = HEADER.unpack_from(buffer)
        expected = length if length == size - HEADER.size else -1
    for single_frame, _ in IMPLEMENTATIONS:
        assert single_frame(buffer, size) == expected
        assert single_frame(bytes(buffer), size) == expected
        assert single_frame(memoryview(buffer), size) == expected


@given(st.binary(max_size=48), st.integers(min_value=0, max_value=60), st.binary(max_size=16))
def test_same_at_agrees_with_its_definition(data: bytes, start: int, expected: bytes) -> None:
    want = len(data) - start >= len(expected) and data[start : start + len(expected)] == expected
    for _, same_at in IMPLEMENTATIONS:
        assert same_at(bytearray(data), start, expected) is want
        assert same_at(memoryview(data), start, bytearray(expected)) is want


@given(st.binary(min_size=1, max_size=200))
def test_a_frame_of_any_payload_is_single(payload: bytes) -> None:
    frame = bytearray(data_frame(payload))
    for single_frame, _ in IMPLEMENTATIONS:
        assert single_frame(frame + b"x" * 3, len(frame)) == len(payload)


class _Bytes(bytearray):
    """A bytearray subclass: read through the buffer protocol, not directly."""


@pytest.mark.parametrize(("single_frame", "same_at"), IMPLEMENTATIONS)
def test_every_kind_of_buffer_reads_alike_and_is_free_after(
    single_frame: SingleFrame, same_at: SameAt
) -> None:
    """bytes and bytearray are read directly in C, anything else through the buffer protocol;
    each gives the same answers, and a bytearray can be resized after every call (its export
    is released, on errors too)."""
    frame = data_frame(b"payload")
    import array

    kinds: list[Callable[[bytes], bytes | bytearray | memoryview]] = [
        bytes,
        bytearray,
        _Bytes,
        memoryview,
        lambda b: memoryview(array.array("B", b)),
    ]
    for kind in kinds:
        buffer = kind(frame + b"HTTP")
        assert single_frame(buffer, len(frame)) == len(b"payload")
        assert same_at(buffer, len(frame), kind(b"HTTP"))
        assert not same_at(buffer, len(frame), kind(b"HTTPS"))
    resizable = bytearray(frame)
    for _ in range(3):
        single_frame(resizable, len(frame))
        same_at(resizable, 0, resizable)
        with pytest.raises(ValueError):
            single_frame(resizable, len(resizable) + 1)
        resizable.extend(b"x")  # BufferError if an export were still held
        del resizable[-1:]
