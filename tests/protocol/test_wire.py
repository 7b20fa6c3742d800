"""The data path's byte compare (`arp.protocol.wire`): the C one and the Python one agree,
on generated input, with the plain definition they stand for. (The frame check lives in
`arp.net.sockio.forward_frame`: tests/net/test_sockio.py.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arp import native
from arp.protocol import wire
from arp.protocol.tunnel import data_frame

SameAt = Callable[[bytes | bytearray | memoryview, int, bytes | bytearray | memoryview], bool]


def _implementations() -> list[SameAt]:
    checks: list[SameAt] = [wire._same_at]
    if native.active():
        from arp.protocol import _wire

        checks.append(_wire.same_at)
    return checks


IMPLEMENTATIONS = _implementations()


def test_the_suite_runs_the_c_checks() -> None:
    assert wire.BUILT, "arp.protocol._wire is not built: run bash scripts/setup.sh --dev"
    assert len(IMPLEMENTATIONS) == 2


@pytest.mark.parametrize("same_at", IMPLEMENTATIONS)
def test_same_at_compares_the_bytes_at_an_offset(same_at: SameAt) -> None:
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


@given(st.binary(max_size=48), st.integers(min_value=0, max_value=60), st.binary(max_size=16))
def test_same_at_agrees_with_its_definition(data: bytes, start: int, expected: bytes) -> None:
    want = len(data) - start >= len(expected) and data[start : start + len(expected)] == expected
    for same_at in IMPLEMENTATIONS:
        assert same_at(bytearray(data), start, expected) is want
        assert same_at(memoryview(data), start, bytearray(expected)) is want


class _Bytes(bytearray):
    """A bytearray subclass: read through the buffer protocol, not directly."""


@pytest.mark.parametrize("same_at", IMPLEMENTATIONS)
def test_every_kind_of_buffer_reads_alike_and_is_free_after(same_at: SameAt) -> None:
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
        assert same_at(buffer, len(frame), kind(b"HTTP"))
        assert not same_at(buffer, len(frame), kind(b"HTTPS"))
    resizable = bytearray(frame)
    for _ in range(3):
        same_at(resizable, 0, resizable)
        with pytest.raises(ValueError):
            same_at(resizable, -1, resizable)
        resizable.extend(b"x")  # BufferError if an export were still held
        del resizable[-1:]
