"""One public HTTP connection, routed request by request.

A front proxy or CDN puts many people's requests on one connection to the relay, so every
request goes to the client its own token names (`arp.protocol.http.route`), never to the
client of the connection's first request.

Design:
- Request direction (public → tunnel): read by a readiness callback, split into messages by
  `arp.protocol.requests.RequestStream` (heads parsed by llhttp; Content-Length bodies counted,
  chunked bodies and trailers scanned), framed and sent. Each head gets the relay's
  X-Forwarded-* headers (`arp.protocol.forwarded`).
- Response direction (tunnel → public): spliced as before (`arp.net.pump.FromTunnel`), while a
  `ResponseTracker` watches the bytes go by and counts complete responses (one head scan per
  response; counted bodies may still be spliced, by count).
- Same client, next request: it goes on the same tunnel at once, pipelined or not. This is the
  keep-alive path: one head parse, one head rewrite and one response head scan per request,
  none of them when the bytes repeat the last head or answer (pollers, load tools, clients
  that open a connection per request), which is recognised by comparing bytes.
  The Set-Cookie that remembers a query token goes on the first response of each tunnel the
  connection takes, as it went on the connection's first response before.
- Route change (another client, or no client): reading stops (pipelined requests wait in the
  kernel's buffer) until the old tunnel owes no response; then
  the relay ends the tunnel's request direction with the data-frame end, arpc closes its idle
  local connection and answers with its own end, and the clean tunnel goes back to its pool.
  The waiting request then takes a tunnel of its own client, or gets the answer a fresh
  connection would (token page, 404, 503, 504), which closes the connection.
  Why count responses instead of ending the old tunnel at once and waiting for its close: many
  servers (aiohttp, uvicorn) drop a request still in progress when their peer half-closes, so
  pipelined requests would lose their answers; counting also tells a response that ends with
  the connection (then the caller must see the close) or a service that closed early owing
  answers (then the next client's answer must not be taken for them): both end the connection.
- Upgrade and CONNECT: reading pauses after the request until its response: 101 (2xx for
  CONNECT) and the connection is raw from then on; any other answer and HTTP goes on.
- Between requests a keep-alive connection on which nothing moves for `Timeouts.keepalive_idle`
  is ended (cleanly, like the caller closing), checked on the relay's clock (`check_idle`) so a
  connection costs no timer of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Final

from arp.errors import ArpError
from arp.net import sockio
from arp.net.links import Link, SocketLink
from arp.net.pump import COPY_BUFFER, SPLICE_AVAILABLE, CountedSplice, FromTunnel
from arp.net.readiness import readiness
from arp.net.sockets import shut_write
from arp.protocol import frames
from arp.protocol import http as phttp
from arp.protocol.forwarded import Caller, rewrite_head
from arp.protocol.requests import END_OF_MESSAGE, Body, Event, Request, RequestStream
from arp.protocol.responses import ResponseTracker
from arp.protocol.tunnel import END_FRAME, HEADER
from arp.relay.answers import cookie_transform, error_response
from arp.relay.door import Door
from arp.relay.registry import ClientState

log = logging.getLogger(__name__)

_BUFFER: Final = bytearray(64 * 1024)
_VIEW: Final = memoryview(_BUFFER)
"""One read buffer for every conversation: its bytes are copied into the stream at once."""
_RETRY: Final = (BlockingIOError, InterruptedError)
# Final: compiled code calls these from C statics; an imported name is a dict lookup per call.
_recv_into: Final = sockio.recv_into
_send: Final = sockio.send
_forward_if_same: Final = sockio.forward_if_same


def _nothing() -> None:
    pass


def _frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


class Conversation:
    """Routes one public connection's requests; see the module docstring."""

    __slots__ = (
        "_bytes_in",
        "_caller",
        "_discarded",
        "_discarding",
        "_door",
        "_down",
        "_ended",
        "_last_framed",
        "_last_progress",
        "_last_request",
        "_last_route",
        "_loop",
        "_on_end",
        "_out",
        "_pending",
        "_psock",
        "_public",
        "_public_eof",
        "_quiet_since",
        "_reading",
        "_reads",
        "_ready",
        "_request_ended",
        "_splicer",
        "_state",
        "_stream",
        "_tracker",
        "_tsock",
        "_tunnel",
        "_upgrade_wait",
        "_waiting_tunnel",
        "_writing",
    )

    def __init__(
        self,
        door: Door,
        public: SocketLink,
        stream: RequestStream,
        caller: Caller,
        on_end: Callable[[], None],
    ) -> None:
        self._door = door
        self._public = public
        self._psock = public.sock
        self._stream = stream
        self._caller = caller
        self._on_end = on_end
        self._loop = asyncio.get_running_loop()
        self._ready = readiness(self._loop)
        self._state: ClientState | None = None
        self._tunnel: Link | None = None
        self._tsock: socket.socket | None = None
        self._down: FromTunnel | None = None
        self._tracker: ResponseTracker | None = None
        self._out = b""  # for the tunnel, not yet sent
        self._splicer: CountedSplice | None = None  # large counted bodies go by splice
        self._pending: tuple[Request, phttp.Route | None] | ArpError | None = None
        self._reading = False
        self._writing = False
        self._public_eof = False
        self._request_ended = False  # this tunnel's request direction has its end frame
        self._upgrade_wait = False
        self._waiting_tunnel = False
        self._ended = False
        self._discarding = False  # nothing more to carry: the caller's bytes are dropped
        self._discarded = 0
        self._reads = 0
        self._bytes_in = 0  # caller → this tunnel, for the client's counts
        self._last_request: Request | None = None  # the last head forwarded, as rewritten
        self._last_route: phttp.Route | None = None
        self._last_framed = b""
        self._last_progress = 0
        self._quiet_since = time.monotonic()

    # -- start and attach ---------------------------------------------------------------------

    def start(self, state: ClientState, tunnel: Link, request: Request, route: phttp.Route) -> None:
        """Carry `request` (already taken from the stream) to `tunnel` of `state`, then go on."""
        self._attach(state, tunnel, request, route)

    def _attach(
        self, state: ClientState, tunnel: Link, request: Request, route: phttp.Route
    ) -> None:
        tsock = tunnel.sock
        assert tsock is not None  # plain tunnels only (TLS ones are bridged to a socket)
        self._state, self._tunnel, self._tsock = state, tunnel, tsock
        self._request_ended = False
        self._bytes_in = len(request.raw) + self._stream.buffered  # read with its head
        state.stats.joined()
        state.carrying.add(self)
        self._down = FromTunnel(
            self._loop,
            tsock,
            self._psock,
            self._door.config.limits.pipe_size,
            self._down_done,
            cookie_transform(route, request.head),
        )
        tracker = ResponseTracker(self._door.config.limits.max_head)
        tracker.expect(request.head.method)
        self._tracker = self._down.tracker = tracker
        recent = self._door.recent
        if (
            recent is not None
            and recent[0] is request
            and recent[1] == self._caller
            and state.forwarded_headers
        ):
            framed = recent[2]  # the head the last connection began with, rewritten the same
        else:
            framed = _frame(self._head_bytes(request, route))
            if not request.upgrade and state.forwarded_headers:
                self._door.recent = (request, self._caller, framed)
        self._last_request, self._last_route, self._last_framed = request, route, framed
        out = [frames.START_HTTP, framed]
        self._upgrade_wait = self._stream.held
        self._down.start()
        self._pump(out)

    def _head_bytes(self, request: Request, route: phttp.Route) -> bytes:
        state = self._state
        caller = self._caller if state is None or state.forwarded_headers else None
        if caller is None and route.target is None:
            return request.raw
        return rewrite_head(request.raw, request.head, caller, route.target)

    # -- request direction --------------------------------------------------------------------

    def _on_readable(self) -> None:
        stream = self._stream
        if (
            SPLICE_AVAILABLE
            and stream.body_left >= COPY_BUFFER
            and not stream.buffered
            and self._tsock is not None
            and not self._out
            and not self._discarding
        ):
            self._splice_body()
            return
        request, tsock = self._last_request, self._tsock
        try:
            if request is not None and tsock is not None and self._may_repeat(request):
                # The keep-alive case, kept short: a read of exactly the last request's bytes
                # sends its rewritten head on in the same call.
                got = _forward_if_same(self._psock, tsock, _BUFFER, request.raw, self._last_framed)
                if not isinstance(got, int) or got < 0:
                    self._sent_again(request, got)
                    return
                n = got
            else:
                n = _recv_into(self._psock, _BUFFER, 0)
        except _RETRY:
            return
        except OSError:
            self._abort()
            return
        if self._discarding:
            self._discarded += n
            if not n or self._discarded > self._door.config.limits.max_answer_drain:
                self._stop(close_public=True)
            return
        self._reads += 1
        self._bytes_in += n
        if not n:
            self._public_eof = True
            self._pause_reading()
        else:
            repeat = self._stream.repeat(_BUFFER, n)
            if repeat is not None:
                self._pump([], repeat)
                return
            self._stream.feed(_VIEW[:n])
        self._pump([])

    def _may_repeat(self, request: Request) -> bool:
        """Whether the next read, if it is exactly `request`'s bytes, may go to the tunnel as
        its head did (`_pump` of the stream's `repeat`) with nothing else to do: nothing
        waits or is queued, and the request's token still opens this tunnel's client."""
        splicer = self._splicer
        return (
            self._tracker is not None
            and self._pending is None
            and not self._upgrade_wait
            and not self._request_ended
            and not self._discarding
            and len(self._out) == 0
            and (splicer is None or not splicer.pending)
            and self._last_route is not None
            and self._stream.repeats(request)
            and self._door.client_for(self._last_route) is self._state
        )

    def _sent_again(self, request: Request, got: int | tuple[int, int]) -> None:
        """`request` came again and its head went on (`sockio.forward_if_same`), all of it
        (-n) or the first `sent` bytes of it ((n, sent)): what `_pump` does after a send."""
        tracker = self._tracker
        assert tracker is not None
        n = -got if isinstance(got, int) else got[0]
        self._reads += 1
        self._bytes_in += n
        tracker.expect(request.head.method)
        if not isinstance(got, int):
            self._keep_out(self._last_framed[got[1] :])
            self._update_reading()
        if tracker.on_complete is not None:
            self._listen_for_responses(tracker)

    def _pump(self, out: list[bytes], first: Request | None = None) -> None:
        """Forward every complete event buffered, `first` (the stream's `repeat`) before them;
        stop at a route change."""
        stream = self._stream
        door = self._door
        tracker = self._tracker
        while not self._upgrade_wait and self._pending is None:
            if first is not None:
                event: Event | None = first
                first = None
            else:
                try:
                    event = stream.next_event()
                except ArpError as exc:
                    self._pending = exc
                    break
            if event is None:
                break
            if type(event) is Body:
                out.append(_frame(event.data))
                continue
            if event is END_OF_MESSAGE:
                if stream.held:
                    self._upgrade_wait = True  # until its response says raw or not
                continue
            assert isinstance(event, Request)
            if event is self._last_request:
                route, framed = self._last_route, self._last_framed  # the same head again
            else:
                route = phttp.route(event.head, door.config.domain)
                framed = b""
            if (
                route is not None
                and tracker is not None
                and not self._request_ended
                and door.client_for(route) is self._state
            ):
                tracker.expect(event.head.method)
                if not framed:
                    framed = _frame(self._head_bytes(event, route))
                    self._last_request, self._last_route = event, route
                    self._last_framed = framed
                out.append(framed)
                if stream.held:
                    self._upgrade_wait = True  # a bodiless Upgrade: held already
                continue
            self._pending = (event, route)
        waiting = self._pending is not None or self._public_eof or self._upgrade_wait
        if waiting:
            self._end_requests_if_due(out)
        if out:
            self._send(out)
        if not self._reading or waiting or len(self._out) != 0:
            self._update_reading()
        tracker = self._tracker
        if tracker is not None and (waiting or tracker.on_complete is not None):
            self._listen_for_responses(tracker)

    def _listen_for_responses(self, tracker: ResponseTracker) -> None:
        """Hear of complete responses only while something waits for them (keep-alive needs
        nothing); if what it waits for has happened already, act now."""
        # Once the end frame is out, only the tunnel's own end (`_down_done`) is awaited.
        waiting = self._upgrade_wait or (
            not self._request_ended and (self._pending is not None or self._public_eof)
        )
        tracker.on_complete = self._response_done if waiting else None
        if waiting and (not tracker.outstanding or tracker.upgraded or tracker.lost):
            self._loop.call_soon(self._response_done)

    def _end_requests_if_due(self, out: list[bytes]) -> None:
        """End the tunnel's request direction once nothing more goes on it and it owes no
        response: the caller is done, or the next request is for another tunnel."""
        tracker = self._tracker
        if tracker is None or self._request_ended or self._upgrade_wait:
            return
        if self._pending is not None:
            if self._down is not None:
                self._down.keep_open = True
        elif not self._public_eof:
            return
        if tracker.outstanding and not tracker.lost:
            return  # `_response_done` calls back
        out.append(END_FRAME)
        self._request_ended = True

    def _response_done(self) -> None:
        """A response completed (or the tracker learned the connection is raw, or lost)."""
        tracker = self._tracker
        if self._ended or tracker is None:
            return
        if tracker.upgraded:
            self._upgrade_wait = False
            self._stream.go_raw()
        elif self._upgrade_wait and not tracker.outstanding:
            self._upgrade_wait = False  # the Upgrade was refused: HTTP goes on
            self._stream.resume()
        elif (tracker.outstanding and not tracker.lost) or (
            self._pending is None and not self._public_eof
        ):
            return  # nothing waits for this (the keep-alive path)
        self._loop.call_soon(self._resume)

    def _resume(self) -> None:
        if not self._ended and self._tunnel is not None:
            self._pump([])

    def _splice_body(self) -> None:
        """A large Content-Length body: a pipeful at a time, by count, through the kernel."""
        splicer = self._splicer
        if splicer is None:
            try:
                splicer = self._splicer = CountedSplice(
                    self._psock, self._door.config.limits.pipe_size
                )
            except OSError:
                return  # out of descriptors: this read waits for the next wake-up
        try:
            n = splicer.read(self._stream.body_left)
        except _RETRY:
            return
        except OSError:
            self._abort()
            return
        self._reads += 1
        self._bytes_in += n
        if not n:
            self._public_eof = True
            self._pause_reading()
            self._pump([])
            return
        self._stream.skip_body(n)
        self._flush_splice()

    def _flush_splice(self) -> None:
        splicer, tsock = self._splicer, self._tsock
        if splicer is None or tsock is None:
            return
        try:
            done = splicer.flush(tsock)
        except OSError:
            self._abort()
            return
        if not done:
            self._pause_reading()
            if not self._writing:
                self._writing = True
                self._ready.add_writer(tsock.fileno(), self._on_tunnel_writable)
            return
        if not self._stream.body_left:
            self._pump([])  # the body's end: what follows is read as usual

    def _send(self, out: list[bytes]) -> None:
        if not out or self._tsock is None:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        if len(self._out):
            data = self._out + data  # (a concatenation copies even when one side is empty)
        if self._splicer is not None and self._splicer.pending:
            self._out = data  # after the bytes in the pipe (`_on_tunnel_writable`)
            return
        try:
            sent = _send(self._tsock, data, 0, len(data), 0)
        except _RETRY:
            sent = 0
        except OSError:
            self._abort()
            return
        self._keep_out(data[sent:] if sent < len(data) else b"")

    def _keep_out(self, rest: bytes) -> None:
        """What a send to the tunnel left: it goes once the tunnel is writable."""
        self._out = rest
        if len(rest) != 0 and not self._writing and self._tsock is not None:
            self._writing = True
            self._ready.add_writer(self._tsock.fileno(), self._on_tunnel_writable)

    def _on_tunnel_writable(self) -> None:
        assert self._tsock is not None
        splicer = self._splicer
        try:
            if splicer is not None and splicer.pending and not splicer.flush(self._tsock):
                return
            sent = self._tsock.send(self._out) if self._out else 0
        except _RETRY:
            return
        except OSError:
            self._abort()
            return
        self._out = self._out[sent:]
        if self._out:
            return
        self._writing = False
        self._ready.remove_writer(self._tsock.fileno())
        if splicer is not None and not self._stream.body_left:
            self._pump([])  # a spliced body ended: read on as usual
        else:
            self._update_reading()

    def _update_reading(self) -> None:
        want = not (
            self._ended
            or self._public_eof
            or self._out
            or (self._splicer is not None and self._splicer.pending)
            or self._pending is not None
            or self._upgrade_wait
            or self._waiting_tunnel
        )
        if want and not self._reading:
            self._reading = True
            self._ready.add_reader(self._psock.fileno(), self._on_readable)
        elif not want:
            self._pause_reading()

    def _pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._ready.remove_reader(self._psock.fileno())

    # -- route changes ------------------------------------------------------------------------

    def _down_done(self, ended: object) -> None:
        """The response direction of the current tunnel ended (its end frame, a close, an error)."""
        flow, tracker = self._down, self._tracker
        if self._ended or flow is None or ended is not flow or tracker is None:
            return
        if flow.error is not None:
            self._abort()  # a broken tunnel reaches the caller as a reset, never a clean end
            return
        if flow.clean and not self._request_ended:
            self._send([END_FRAME])  # the service ended first: so does this tunnel's use
            self._request_ended = True
        # Serve the waiting request only when every response owed has come whole and none
        # ended with the connection; otherwise the caller must see the end of this one.
        carry_on = (
            self._pending is not None
            and flow.clean
            and flow.keep_open
            and not tracker.outstanding
            and not tracker.lost
            and not tracker.until_close
        )
        # A tunnel that closed, or whose end frame from us did not go whole, is not reused.
        spliced = self._splicer is not None and self._splicer.pending
        self._release_tunnel(clean=flow.clean and not self._out and not spliced)
        if not carry_on:
            if flow.keep_open:
                shut_write(self._psock)
            self._pending = None
            self._finish_quietly()
            return
        pending, self._pending = self._pending, None
        if isinstance(pending, ArpError):
            self._answer(error_response(pending))
        elif pending is not None:
            self._route(*pending)

    def _release_tunnel(self, *, clean: bool = True) -> None:
        down, tunnel, state = self._down, self._tunnel, self._state
        if self._writing and self._tsock is not None:
            self._ready.remove_writer(self._tsock.fileno())
        self._writing = False
        self._account()
        self._down = self._tunnel = self._tsock = self._tracker = None
        self._upgrade_wait = False
        if down is None or tunnel is None or state is None:
            return
        down.stop()
        self._out = b""
        if self._splicer is not None and self._splicer.pending:
            self._splicer.close()  # its bytes were for this tunnel
            self._splicer = None
        self._door.tunnel_done(state, tunnel, down.leftover if down.clean and clean else None)

    def _account(self) -> None:
        """This tunnel's use ends: its bytes and responses go to the admin port's counts
        (integer adds per tunnel use; the tracker counted per response)."""
        state, tracker = self._state, self._tracker
        if state is None or tracker is None:
            return
        self._tracker = None
        state.carrying.discard(self)
        state.stats.ended(self._bytes_in, tracker.total)
        self._door.stats.count_classes(tracker.classes)

    def _route(self, request: Request, route: phttp.Route | None) -> None:
        door = self._door
        answer, state = door.decide(request.head, route)
        if answer is not None:
            self._answer(answer)
            return
        assert state is not None and route is not None
        tunnel = door.pools.take_pooled(state) if state.control is not None else None
        if tunnel is not None:
            self._attach(state, door.plain(tunnel), request, route)
            return
        self._waiting_tunnel = True
        door.spawn(self._wait_tunnel(state, request, route))

    async def _wait_tunnel(self, state: ClientState, request: Request, route: phttp.Route) -> None:
        try:
            tunnel = await self._door.take_tunnel(state)
        except ArpError as exc:
            self._waiting_tunnel = False
            if not self._ended:
                self._answer(error_response(exc))
            return
        except BaseException:
            self._abort()
            raise
        self._waiting_tunnel = False
        if self._ended:
            self._door.pools.deliver(state, tunnel)  # unused: back to its pool
            return
        self._attach(state, self._door.plain(tunnel), request, route)

    # -- idle deadline ------------------------------------------------------------------------

    def check_idle(self, now: float) -> None:
        """On the relay's clock: end the connection if nothing moved for the keep-alive
        deadline while no request was partly read and no response was owed."""
        if self._ended or self._stream.raw:
            return
        if self._discarding:
            if now - self._quiet_since >= self._door.config.timeouts.answer:
                self._abort()  # the caller never closed: enough waiting
            return
        progress = self._reads + (self._down.moved if self._down is not None else 0)
        if progress != self._last_progress:
            self._last_progress, self._quiet_since = progress, now
            return
        owed = self._tracker.outstanding if self._tracker is not None else 0
        if (
            now - self._quiet_since < self._door.config.timeouts.keepalive_idle
            or owed
            or not self._stream.idle
            or self._pending is not None
            or self._waiting_tunnel
        ):
            return
        log.debug("public connection idle past the keep-alive deadline; ending it")
        self._public_eof = True
        self._pause_reading()
        if self._tunnel is None:
            self._finish_quietly()
        else:
            self._pump([])

    # -- endings ------------------------------------------------------------------------------

    def _answer(self, response: bytes) -> None:
        """The relay's own answer, as a fresh connection would get it; then the end."""
        self._stop(close_public=False)
        self._door.spawn(self._door.send_and_close(self._public, response))

    def _finish_quietly(self) -> None:
        """Nothing more to carry: read what the caller still sends until it closes (bounded in
        bytes and time, so the close does not reset what it has yet to read), then close."""
        if self._public_eof:
            self._stop(close_public=True)
            return
        self._discarding = True
        self._pending = None
        self._quiet_since = time.monotonic()  # `check_idle` bounds the wait
        self._update_reading()

    def _abort(self) -> None:
        """A broken side: end everything now, with resets (a cut-short stream must never look
        complete to either peer)."""
        if self._ended:
            return
        if self._tunnel is not None:
            self._tunnel.reset()
        self._stop(close_public=False)
        self._public.reset()

    def abort(self) -> None:
        """Shutdown: end now; idempotent."""
        self._abort()

    def _stop(self, *, close_public: bool) -> None:
        if self._ended:
            return
        self._ended = True
        self._pause_reading()
        if self._writing and self._tsock is not None:
            self._ready.remove_writer(self._tsock.fileno())
            self._writing = False
        if self._down is not None:
            self._down.stop()
        self._account()
        if self._tunnel is not None:
            self._tunnel.close()  # not at a clean end
            self._down = self._tunnel = self._tsock = None
        if self._splicer is not None:
            self._splicer.close()
            self._splicer = None
        if close_public:
            self._public.close()
        on_end, self._on_end = self._on_end, _nothing  # no cycle through the callback
        with contextlib.suppress(Exception):
            on_end()
