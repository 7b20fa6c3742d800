"""Two byte checks of the data path: the C ones of `arp.protocol._wire` when built.

Why: each runs once per keep-alive request on a read buffer, where compiled Python pays for a
struct call, slices and copies (about 1,800 and 1,600 instructions); `_wire` (built with the
compiled data path, `arp.native`) does a bounds check and a few loads or a memcmp. Without
the build the functions below do the same.
"""

from __future__ import annotations

from arp.protocol.tunnel import HEADER, HEADER_SIZE

Buffer = bytes | bytearray | memoryview


def _single_frame(buffer: Buffer, size: int) -> int:
    """The payload's length when ``buffer[:size]`` is exactly one whole data frame with a
    payload, else -1."""
    if not 0 <= size <= len(buffer):
        raise ValueError("size must be inside the buffer")
    if size <= HEADER_SIZE:
        return -1
    (length,) = HEADER.unpack_from(buffer)
    return int(length) if length == size - HEADER_SIZE else -1


def _same_at(buffer: Buffer, start: int, expected: Buffer) -> bool:
    """Whether ``buffer[start:start + len(expected)]`` is `expected`."""
    if start < 0:
        raise ValueError("start must not be negative")
    view = memoryview(buffer)
    end = start + len(expected)
    return end <= len(view) and bytes(view[start:end]) == bytes(expected)


try:
    from arp.protocol._wire import same_at as same_at
    from arp.protocol._wire import single_frame as single_frame

    BUILT = True
    """Whether the C checks are what runs (the compiled data path is built and loaded)."""
except ImportError:  # not built
    single_frame, same_at = _single_frame, _same_at
    BUILT = False
