"""The JSON nesting bound: deep JSON is an ordinary bad-JSON error, never a RecursionError."""

from __future__ import annotations

import json
import struct
import time

import pytest

from arp.config import Limits
from arp.errors import RemoteProtocolError
from arp.protocol import frames
from arp.protocol.json_depth import JsonTooDeep, check_json_depth

BOUND = Limits().max_json_depth


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("kind", [str, bytes])
def test_nesting_up_to_the_bound_passes_and_beyond_it_is_refused(kind: type) -> None:
    def as_kind(text: str) -> str | bytes:
        return text if kind is str else text.encode()

    check_json_depth(as_kind(nested(BOUND)))
    check_json_depth(as_kind('{"a": ' * BOUND + "1" + "}" * BOUND))
    with pytest.raises(JsonTooDeep, match=f"deeper than {BOUND} levels"):
        check_json_depth(as_kind(nested(BOUND + 1)))
    with pytest.raises(ValueError):  # callers that answer bad JSON catch it as such
        check_json_depth(as_kind('{"a": ' * (BOUND + 1) + "1" + "}" * (BOUND + 1)))


def test_many_brackets_side_by_side_are_not_depth() -> None:
    wide = json.dumps([[{"k": [1]}] for _ in range(10_000)])
    check_json_depth(wide)
    check_json_depth(wide.encode())


def test_brackets_inside_strings_do_not_nest() -> None:
    inside = json.dumps({"text": "[" * 5000 + '\\"{' * 1000, "list": [["ok"]]})
    check_json_depth(inside)
    check_json_depth(inside.encode())
    # An escaped quote does not end the string, so what follows is still inside it.
    tricky = '["\\"' + "[" * 5000 + '"]'
    assert json.loads(tricky)
    check_json_depth(tricky)


def test_a_nesting_bomb_is_refused_fast() -> None:
    bomb = b"[" * 1_000_000
    started = time.perf_counter()
    with pytest.raises(JsonTooDeep):
        check_json_depth(bomb)
    assert time.perf_counter() - started < 1.0


def test_a_deep_control_frame_is_a_protocol_error_not_a_recursion_error() -> None:
    body = ('{"Register": {"client_id": ' + nested(2000) + "}}").encode()
    decoder = frames.FrameDecoder()
    with pytest.raises(RemoteProtocolError, match="nested deeper than"):
        decoder.feed(struct.pack(">I", len(body)) + body)
    with pytest.raises(RemoteProtocolError, match="nested deeper than"):
        frames.decode_body(nested(2000).encode())
    # Shallow frames decode as before.
    assert frames.decode_body(b'{"Heartbeat": {"seq": 3}}') == frames.Heartbeat(seq=3)
