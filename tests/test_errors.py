"""The package's one error hierarchy and its one JSON shape (pure: no loop, no sockets)."""

from __future__ import annotations

import pytest

from arp import errors
from arp.agents.errors import SessionNotFound, TooManySessions
from arp.errors import ArpError, error_body, snake_case, status_code
from arp.protocol.http import HeadError
from arp.protocol.tunnel import TunnelProtocolError
from arp.relay.registry import ClientOffline, TooManyPending, TunnelTimeout


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("SessionNotFound", "session_not_found"),
        ("ArpError", "arp_error"),
        ("HTTPError", "http_error"),
        ("TooManyRequests", "too_many_requests"),
        ("Http2Error", "http2_error"),
    ],
)
def test_codes_are_class_names_in_snake_case(name: str, code: str) -> None:
    assert snake_case(name) == code


def test_every_error_carries_status_code_and_message() -> None:
    assert SessionNotFound("no session 'x'").to_json() == {
        "error": {"status": 404, "code": "session_not_found", "message": "no session 'x'"}
    }
    assert TooManySessions.code == "too_many_sessions" and TooManySessions.status == 429
    assert errors.NotFound.code == "not_found"


def test_code_and_status_can_be_named() -> None:
    class Renamed(ArpError):
        status = 418
        code = "teapot"

    assert Renamed("x").to_json()["error"] == {"status": 418, "code": "teapot", "message": "x"}
    assert ArpError("x", code="mine").code == "mine"
    # A plain ArpError with a status says what the status says.
    assert ArpError("big", status=413).code == "request_entity_too_large"
    assert ArpError("x").code == "arp_error" and ArpError("x").status == 500


def test_error_body_is_the_one_shape() -> None:
    assert error_body(405, "PUT is not allowed") == {
        "error": {"status": 405, "code": "method_not_allowed", "message": "PUT is not allowed"}
    }
    assert status_code(599) == "error"


def test_the_relays_errors_are_arp_errors_with_their_status() -> None:
    assert issubclass(ClientOffline, ArpError) and ClientOffline.status == 503
    assert TunnelTimeout.status == 504 and TooManyPending.status == 503
    head = HeadError(431, "request head larger than 8192 bytes")
    assert isinstance(head, errors.RemoteProtocolError)
    assert (head.status, head.message) == (431, "request head larger than 8192 bytes")
    tunnel = TunnelProtocolError("bad frame")
    # Still a ConnectionError, as the pump's callers expect.
    assert isinstance(tunnel, ConnectionError) and isinstance(tunnel, ArpError)
    assert str(tunnel) == "bad frame" and tunnel.status == 502
