"""Types of `arp.net._sockio` (src/arp/net/_sockio.c); see `arp.net.sockio`."""

import socket
from collections.abc import Callable
from typing import Any

def recv_into(sock: socket.socket, buffer: bytearray, start: int, /) -> int: ...
def recv_frame(sock: socket.socket, buffer: bytearray, /) -> int: ...
def send(
    sock: socket.socket, data: bytes | bytearray | memoryview, start: int, end: int, flags: int, /
) -> int: ...
def forward_frame(
    src: socket.socket, dst: socket.socket, buffer: bytearray, /
) -> int | tuple[int, int]: ...
def frame_out(
    src: socket.socket, dst: socket.socket, buffer: bytearray, /
) -> int | tuple[int, int]: ...
def forward_if_same(
    src: socket.socket,
    dst: socket.socket,
    buffer: bytearray,
    expected: bytes,
    instead: bytes,
    /,
) -> int | tuple[int, int]: ...
def dispatch(
    epoll: Any,
    timeout_ms: int,
    maxevents: int,
    readers: list[Any],
    writers: list[Any],
    loop_keys: list[Any] | None,
    on_error: Callable[[BaseException], object],
    /,
) -> list[tuple[Any, int]] | None: ...
def peer_closed(sock: socket.socket, /) -> bool: ...
def accept(listener: socket.socket, /) -> int: ...
def epoll_set(epoll: Any, fd: int, old: int, new: int, /) -> None: ...
def peer_ip(sock: socket.socket, /) -> str | None: ...
