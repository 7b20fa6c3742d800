"""Types of `arp.protocol._wire` (src/arp/protocol/_wire.c); see `arp.protocol.wire`."""

def same_at(
    buffer: bytes | bytearray | memoryview, start: int, expected: bytes | bytearray | memoryview, /
) -> bool: ...
