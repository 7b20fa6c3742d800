"""The data path's byte compare: the C one of `arp.protocol._wire` when built.

Why: it runs once per keep-alive request on a read buffer, where compiled Python pays for a
slice and a copy (about 1,600 instructions); `_wire` (built with the compiled data path,
`arp.native`) does a bounds check and a memcmp. Without the build the function below does the
same. (The frame check is part of the read it checks: `arp.net.sockio.forward_frame`.)
"""

from __future__ import annotations

Buffer = bytes | bytearray | memoryview


def _same_at(buffer: Buffer, start: int, expected: Buffer) -> bool:
    """Whether ``buffer[start:start + len(expected)]`` is `expected`."""
    if start < 0:
        raise ValueError("start must not be negative")
    view = memoryview(buffer)
    end = start + len(expected)
    return end <= len(view) and bytes(view[start:end]) == bytes(expected)


try:
    from arp.protocol._wire import same_at as same_at

    BUILT = True
    """Whether the C checks are what runs (the compiled data path is built and loaded)."""
except ImportError:  # not built
    same_at = _same_at
    BUILT = False
