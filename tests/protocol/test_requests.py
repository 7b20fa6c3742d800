"""The request stream, the response tracker and chunked scanning: pure tests, no loop."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arp.protocol.chunked import ChunkedScanner
from arp.protocol.http import HeadError
from arp.protocol.requests import END_OF_MESSAGE, Body, Framing, Request, RequestStream
from arp.protocol.responses import ResponseTracker


def events(stream: RequestStream) -> list[object]:
    found: list[object] = []
    while (event := stream.next_event()) is not None:
        found.append(event)
    return found


def test_a_get_then_a_post_with_a_counted_body() -> None:
    stream = RequestStream(4096)
    stream.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\n")
    stream.feed(b"Content-Length: 5\r\n\r\nhel")
    found = events(stream)
    assert isinstance(found[0], Request) and found[0].head.target == "/a"
    assert isinstance(found[1], Request) and found[1].framing is Framing.LENGTH
    assert found[2] == Body(b"hel")
    assert stream.body_left == 2
    stream.skip_body(2)  # moved by count, e.g. spliced
    assert events(stream) == [END_OF_MESSAGE]
    assert stream.idle


def test_a_chunked_body_with_trailers_ends_where_it_ends() -> None:
    stream = RequestStream(4096)
    body = b"4;x=y\r\nwiki\r\n0\r\nT: 1\r\n\r\n"
    stream.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    stream.feed(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    found = events(stream)
    assert b"".join(e.data for e in found if isinstance(e, Body)) == body
    assert found[-2] is END_OF_MESSAGE
    assert isinstance(found[-1], Request) and found[-1].head.target == "/next"


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
    ],
)
def test_framings_a_relay_cannot_follow_are_refused(head: bytes) -> None:
    stream = RequestStream(4096)
    stream.feed(head)
    with pytest.raises(HeadError) as info:
        stream.next_event()
    assert info.value.status == 400


def test_an_upgrade_holds_the_stream_until_its_answer() -> None:
    stream = RequestStream(4096)
    stream.feed(b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    stream.feed(b"GET /not-a-request HTTP/1.1\r\n\r\n")
    (request,) = events(stream)
    assert isinstance(request, Request) and request.upgrade
    assert stream.held and stream.next_event() is None
    stream.go_raw()
    assert stream.next_event() == Body(b"GET /not-a-request HTTP/1.1\r\n\r\n")


def test_a_bad_chunk_size_is_refused() -> None:
    with pytest.raises(HeadError):
        ChunkedScanner(100).scan(b"0x5\r\n")
    with pytest.raises(HeadError):
        ChunkedScanner(100).scan(b"5\r\nhelloXX\r\n")


@settings(max_examples=150, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=50), max_size=6),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_chunked_scanning_finds_the_end_in_any_split(chunks: list[bytes], cuts: list[int]) -> None:
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    stream = body + b"NEXT"
    scanner = ChunkedScanner(1000)
    points = sorted({c % len(stream) for c in cuts} | {0, len(stream)})
    offset = 0
    for start, end in itertools.pairwise(points):
        found = scanner.scan(stream[start:end])
        if found is not None:
            offset = start + found
            break
    assert offset == len(body)


def response_tracker() -> tuple[ResponseTracker, list[int]]:
    tracker = ResponseTracker(4096)
    done: list[int] = []
    tracker.on_complete = lambda: done.append(tracker.outstanding)
    return tracker, done


def test_the_tracker_counts_responses_of_every_framing() -> None:
    tracker, done = response_tracker()
    for method in ("GET", "HEAD", "GET", "GET", "GET"):
        tracker.expect(method)
    tracker.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    tracker.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")  # HEAD: no body
    tracker.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    tracker.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert done == [4, 3, 2, 1]
    tracker.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    assert tracker.body_left == 100000
    tracker.consumed(100000)  # spliced by count
    assert tracker.outstanding == 0 and done[-1] == 0


def test_the_tracker_sees_upgrades_bodies_until_close_and_nonsense() -> None:
    tracker, _ = response_tracker()
    tracker.expect("GET")
    tracker.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    assert tracker.upgraded and tracker.outstanding == 0
    tracker, _ = response_tracker()
    tracker.expect("GET")
    tracker.feed(b"HTTP/1.0 200 OK\r\n\r\nuntil the close")
    assert tracker.until_close and tracker.outstanding == 1
    tracker, _ = response_tracker()
    tracker.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # nobody asked
    assert tracker.lost


GET_A = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
GET_B = b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
POST = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"


def test_repeat_is_the_last_bodiless_head_only_when_it_is_all_there_is() -> None:
    stream = RequestStream(4096)
    stream.feed(GET_A)
    (first,) = events(stream)
    assert isinstance(first, Request)
    assert stream.repeat(bytearray(GET_A + b"junk"), len(GET_A)) is first
    assert stream.repeat(bytearray(GET_A), len(GET_A) - 1) is None  # cut short
    assert stream.repeat(bytearray(GET_A + GET_A), 2 * len(GET_A)) is None  # two: fed, parsed
    assert stream.repeat(bytearray(GET_B), len(GET_B)) is None  # other bytes
    stream.feed(b"G")
    assert stream.repeat(bytearray(GET_A), len(GET_A)) is None  # something is buffered
    stream = RequestStream(4096)
    stream.feed(POST)
    assert [type(e) for e in events(stream)] == [Request, Body, type(END_OF_MESSAGE)]
    assert stream.repeat(bytearray(POST), len(POST)) is None  # a head with a body is never one
    stream.feed(b"GET /u HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
    events(stream)
    assert stream.held
    assert stream.repeat(bytearray(GET_A), len(GET_A)) is None  # held for the answer


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from([GET_A, GET_B, POST, b"\r\n"]), min_size=1, max_size=12),
    st.lists(st.integers(min_value=1, max_value=80), min_size=1, max_size=20),
)
def test_repeat_gives_what_feeding_would(requests: list[bytes], cuts: list[int]) -> None:
    """The same events, read after read, whether a read is taken by `repeat` or fed."""
    data = b"".join(requests)
    reads: list[bytes] = []
    pos = 0
    for cut in itertools.cycle(cuts):
        if pos >= len(data):
            break
        reads.append(data[pos : pos + cut])
        pos += cut
    reads += [GET_A, GET_A]  # whole repeats, which `repeat` can take
    plain, fast = RequestStream(4096), RequestStream(4096)
    for read in reads:
        plain.feed(read)
        want = events(plain)
        repeated = fast.repeat(bytearray(read), len(read))
        if repeated is not None:
            got: list[object] = [repeated]
        else:
            fast.feed(read)
            got = events(fast)
        assert [(type(e), getattr(e, "raw", e)) for e in got] == [
            (type(e), getattr(e, "raw", e)) for e in want
        ]
        assert (fast.idle, fast.buffered) == (plain.idle, plain.buffered)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2, 3]), min_size=1, max_size=10))
def test_feed_at_counts_as_feed_does(picks: list[int]) -> None:
    """The read buffer with an offset (`feed_at`) and a slice of it (`feed`) count the same."""
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno",  # the same head, another body
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    ]
    by_slice, by_offset = ResponseTracker(4096), ResponseTracker(4096)
    for pick in picks:
        answer = answers[pick]
        buffer = bytearray(b"\x00" * 4 + answer + b"tail")
        for tracker in (by_slice, by_offset):
            tracker.expect("GET")
        by_slice.feed(memoryview(buffer)[4 : 4 + len(answer)])
        by_offset.feed_at(buffer, 4, 4 + len(answer))
        assert (by_offset.outstanding, by_offset.total, by_offset.classes) == (
            by_slice.outstanding,
            by_slice.total,
            by_slice.classes,
        )
    assert by_offset.outstanding == 0 and by_offset.total == sum(len(answers[p]) for p in picks)


def test_a_tracker_that_always_owes_one_keeps_its_methods_in_order_and_bounded() -> None:
    """A pipelining caller keeps one request in flight: every answer still belongs to the
    right method (a HEAD's answer has no body), and the ring of owed methods stays small."""
    tracker, done = response_tracker()
    tracker.expect("GET")
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    for n in range(1, 1001):
        method = "HEAD" if n % 7 == 0 else "GET"
        tracker.expect(method)
        answers_head = n > 1 and (n - 1) % 7 == 0  # request n - 1 was a HEAD: no body
        tracker.feed(ok[:-2] if answers_head else ok)
        assert tracker.outstanding == 1 and not tracker.lost, n
    assert len(done) == 1000
    assert len(tracker._methods) <= 4  # never more than two owed at once


def test_a_tracker_owed_many_answers_them_in_order() -> None:
    """Deep pipelining grows the ring (past its first size, at every wrap point): the answers
    still go to their methods in order."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    for depth in (1, 3, 4, 5, 9, 40):
        tracker, done = response_tracker()
        methods = ["HEAD" if n % 3 == 0 else "GET" for n in range(depth * 3)]
        fed = 0
        for n, method in enumerate(methods):
            tracker.expect(method)
            if n >= depth:  # keep `depth` owed, answering the oldest as each new one goes
                tracker.feed(ok[:-2] if methods[fed] == "HEAD" else ok)
                fed += 1
        while fed < len(methods):
            tracker.feed(ok[:-2] if methods[fed] == "HEAD" else ok)
            fed += 1
        assert not tracker.lost and tracker.outstanding == 0
        assert len(done) == len(methods) and done[-1] == 0
