"""The node-to-node link's framing and proofs, without sockets."""

from __future__ import annotations

import random

import pytest

from arp.errors import RemoteProtocolError
from arp.protocol import peer as pp

SECRET = "s" * 20


def test_messages_round_trip_in_any_split() -> None:
    messages: list[pp.PeerMessage] = [
        pp.Challenge(node="a", nonce=pp.new_nonce()),
        pp.Answer(node="b", nonce="n", mac="m"),
        pp.Carry(client_id="x", tcp_port=None),
        pp.Carry(client_id="x", tcp_port=20001),
        pp.Verdict(mac="m"),
        pp.Verdict(mac="m", status=503, error="offline"),
    ]
    data = b"".join(pp.encode(m, 4096) for m in messages) + b"raw bytes"
    rng = random.Random(3)
    for _ in range(50):
        decoder = pp.PeerDecoder(4096)
        got: list[pp.PeerMessage] = []
        rest = data
        while rest:
            cut = rng.randint(1, 40)
            decoder.feed(rest[:cut])
            rest = rest[cut:]
            while len(got) < len(messages) and (message := decoder.next()) is not None:
                got.append(message)
        assert got == messages
        assert decoder.take_rest() == b"raw bytes"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1]",
        b'{"t": "nope"}',
        b'{"t": "carry"}',
        b'{"t": "carry", "client_id": 5}',
        b'{"t": "verdict", "mac": "m", "status": true}',
        b"\xff\xfe",
    ],
)
def test_bad_frames_are_protocol_errors(body: bytes) -> None:
    decoder = pp.PeerDecoder(4096)
    decoder.feed(pp.HEADER.pack(len(body)) + body)
    with pytest.raises(RemoteProtocolError):
        decoder.next()


def test_an_oversize_frame_is_refused_before_it_is_buffered() -> None:
    decoder = pp.PeerDecoder(100)
    decoder.feed(pp.HEADER.pack(101))
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        decoder.next()
    with pytest.raises(ValueError):
        pp.encode(pp.Carry(client_id="x" * 200), 100)


def test_proofs_bind_both_nonces_both_nodes_and_the_role() -> None:
    proof = pp.mac(SECRET, "dial", "na", "nb", "b", "a")
    pp.verify(pp.mac(SECRET, "dial", "na", "nb", "b", "a"), proof)
    for other in (
        pp.mac("t" * 20, "dial", "na", "nb", "b", "a"),
        pp.mac(SECRET, "listen", "na", "nb", "b", "a"),
        pp.mac(SECRET, "dial", "nX", "nb", "b", "a"),
        pp.mac(SECRET, "dial", "na", "nb", "c", "a"),
    ):
        with pytest.raises(pp.PeerAuthError):
            pp.verify(other, proof)


def test_expect_names_what_came() -> None:
    with pytest.raises(RemoteProtocolError, match="expected answer, got carry"):
        pp.expect(pp.Carry(client_id="x"), pp.Answer)
    with pytest.raises(RemoteProtocolError, match="got nothing"):
        pp.expect(None, pp.Answer)
