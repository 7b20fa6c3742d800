"""The control protocol's framing: pure tests, no loop, no sockets."""

from __future__ import annotations

import contextlib
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arp.errors import LocalProtocolError, RemoteProtocolError
from arp.protocol import frames

MAX = 4096

ids = st.text(min_size=1, max_size=40)
messages = st.one_of(
    st.builds(
        frames.Register,
        client_id=ids,
        auth_token=st.none() | st.text(max_size=20),
        resume_key=st.none() | st.text(max_size=20),
        tcp_ports=st.lists(st.integers(1, 65535), max_size=4),
        version=st.none() | st.text(max_size=8),
    ),
    st.builds(
        frames.RegisterResult,
        success=st.booleans(),
        error=st.none() | st.text(max_size=50),
        retryable=st.booleans(),
        resume_key=st.none() | st.text(max_size=20),
        tcp_ports=st.lists(st.integers(1, 65535), max_size=4),
        public_port=st.none() | st.integers(0, 65535),
    ),
    st.builds(frames.RequestNewProxyConn, proxy_conn_id=ids),
    st.builds(frames.NewProxyConn, proxy_conn_id=ids, client_id=ids),
    st.builds(frames.StartProxy, tcp_port=st.none() | st.integers(1, 65535)),
    st.builds(frames.Heartbeat, seq=st.integers(0, 2**53)),
    st.builds(frames.Error, message=st.text(max_size=100)),
)


def frame(obj: object) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def test_wire_format_is_the_originals() -> None:
    data = frames.encode(frames.Register(client_id="abc"))
    (length,) = struct.unpack(">I", data[:4])
    assert length == len(data) - 4
    assert json.loads(data[4:]) == {
        "Register": {
            "client_id": "abc",
            "auth_token": None,
            "resume_key": None,
            "tcp_ports": [],
            "version": None,
            "tunnel_protocol": 1,
            "forwarded_headers": True,
            "proxy_protocol": False,
            "access_token_hashes": [],
        }
    }


def test_a_refusal_round_trips_and_an_old_result_means_no_bound() -> None:
    """ProxyConnRefused (issue 14 item 1) travels like every frame; a RegisterResult from a
    relay before it has no max_tunnels, so arpc keeps silent refusals for that relay."""
    refusal = frames.ProxyConnRefused(proxy_conn_id="p1", reason="at bound")
    assert frames.FrameDecoder().feed(frames.encode(refusal)) == [refusal]
    (old,) = frames.FrameDecoder().feed(frame({"RegisterResult": {"success": True}}))
    assert isinstance(old, frames.RegisterResult)
    assert old.max_tunnels is None and old.access_tokens == 0


def test_the_originals_messages_decode() -> None:
    decoder = frames.FrameDecoder()
    got = decoder.feed(
        frame({"Register": {"client_id": "c1"}})
        + frame({"RegisterResult": {"success": True, "error": None}})
        + frame({"RequestNewProxyConn": {"proxy_conn_id": "p1"}})
        + frame({"NewProxyConn": {"proxy_conn_id": "p1", "client_id": "c1"}})
    )
    assert got == [
        frames.Register(client_id="c1"),
        frames.RegisterResult(success=True, error=None),
        frames.RequestNewProxyConn(proxy_conn_id="p1"),
        frames.NewProxyConn(proxy_conn_id="p1", client_id="c1"),
    ]


def test_unknown_fields_are_ignored_and_unit_form_is_read() -> None:
    decoder = frames.FrameDecoder()
    got = decoder.feed(
        frame({"Register": {"client_id": "c", "from_the_future": [1, 2]}}) + frame("Heartbeat")
    )
    assert got == [frames.Register(client_id="c"), frames.Heartbeat()]


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ({"Nope": {}}, "unknown control message type 'Nope'"),
        ({"Register": {}}, "missing required field 'client_id'"),
        ({"Register": {"client_id": 7}}, "Register.client_id"),
        ({"RegisterResult": {"success": "yes"}}, "RegisterResult.success"),
        ({"Heartbeat": {"seq": True}}, "Heartbeat.seq"),
        ({"Register": {"client_id": "a", "tcp_ports": ["x"]}}, "Register.tcp_ports"),
        ({"A": {}, "B": {}}, "exactly one key"),
        ([1, 2], "exactly one key"),
        ({"Register": [1]}, "must be a JSON object"),
    ],
)
def test_bad_messages_are_typed_errors(obj: object, needle: str) -> None:
    with pytest.raises(RemoteProtocolError, match=needle.replace("(", r"\(")):
        frames.FrameDecoder().feed(frame(obj))


def test_bad_json_and_utf8_are_typed_errors() -> None:
    with pytest.raises(RemoteProtocolError, match="not valid JSON"):
        frames.FrameDecoder().feed(struct.pack(">I", 3) + b"{x}")
    with pytest.raises(RemoteProtocolError, match="not valid UTF-8"):
        frames.FrameDecoder().feed(struct.pack(">I", 2) + b"\xff\xfe")


def test_oversize_frame_is_refused_before_its_body_arrives() -> None:
    decoder = frames.FrameDecoder(max_frame=100)
    with pytest.raises(RemoteProtocolError, match="exceeds the limit of 100"):
        decoder.feed(struct.pack(">I", 101))  # only the header: nothing buffered yet


def test_encode_refuses_oversize() -> None:
    with pytest.raises(LocalProtocolError):
        frames.encode(frames.Error(message="x" * 200), max_frame=100)


def test_raw_bytes_after_a_frame_are_kept() -> None:
    decoder = frames.FrameDecoder()
    decoder.receive_data(frames.encode(frames.StartProxy()) + b"GET / HTTP/1.1\r\n")
    assert decoder.next_message() == frames.StartProxy()
    assert decoder.take_rest() == b"GET / HTTP/1.1\r\n"
    assert decoder.take_rest() == b""


@given(st.lists(messages, min_size=1, max_size=6), st.data())
def test_round_trip_in_any_split(batch: list[frames.Message], data: st.DataObject) -> None:
    stream = b"".join(frames.encode(m, MAX * 4) for m in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = frames.FrameDecoder(MAX * 4)
    got: list[frames.Message] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        got += decoder.feed(stream[previous:cut])
        previous = cut
    assert got == batch


@settings(max_examples=300)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=6))
def test_arbitrary_bytes_raise_only_protocol_errors(blob: bytes, cuts: list[int]) -> None:
    decoder = frames.FrameDecoder(max_frame=200)
    previous = 0
    try:
        for cut in [*sorted(c for c in cuts if c <= len(blob)), len(blob)]:
            decoder.feed(blob[previous:cut])
            previous = cut
    except RemoteProtocolError:
        pass


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=10,
    )
)
def test_arbitrary_json_raises_only_protocol_errors(obj: object) -> None:
    with contextlib.suppress(RemoteProtocolError):
        frames.FrameDecoder().feed(frame(obj))
