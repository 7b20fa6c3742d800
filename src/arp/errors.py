"""One exception hierarchy for the package, and the one JSON shape every error is answered in.

Errors split as h11 splits them: the peer broke the protocol (`RemoteProtocolError`) or we were
asked to do something we cannot (`LocalProtocolError`). Each carries the HTTP status it maps to
and a snake_case `code` (from its class name unless it names one), so the layer that answers a
person picks both from the error, never from a second table.

Every HTTP face (command mode's API, its MCP face, the gateway) answers an error as
`error_body` builds it::

    {"error": {"status": 404, "code": "session_not_found", "message": "no session 'x'"}}
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """``SessionNotFound`` -> ``session_not_found``; ``HTTPError`` -> ``http_error``."""
    return _WORD_START.sub("_", name).lower()


def status_code(status: int) -> str:
    """The code of an error known only by its HTTP status: its reason phrase in snake_case."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "error"
    return re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_")


def error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """The one JSON error shape; `code` defaults to the status's reason (`status_code`)."""
    return {"error": {"status": status, "code": code or status_code(status), "message": message}}


class ArpError(Exception):
    """Base of every error ARP raises on purpose."""

    status: int = 500
    """The HTTP status this error answers with where it reaches an HTTP client."""
    code: str = "arp_error"
    """A stable snake_case name for programs; by default the class name in snake_case."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            cls.code = snake_case(cls.__name__)

    def __init__(
        self, message: str | None = None, *, status: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(*(() if message is None else (message,)))
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        elif status is not None and type(self).code == ArpError.code:
            self.code = status_code(status)  # a plain ArpError: its status says more

    @property
    def message(self) -> str:
        if self.args:
            return str(self.args[0])
        return (self.__doc__ or self.__class__.__name__).strip().splitlines()[0]

    def to_json(self) -> dict[str, Any]:
        """This error in the one JSON shape (`error_body`)."""
        return error_body(self.status, self.message, self.code)


class ProtocolError(ArpError):
    """A frame or message that breaks the ARP control protocol."""

    status = 400


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow (bad JSON, unknown type, oversize)."""


class TunnelProtocolError(RemoteProtocolError, ConnectionError):
    """The tunnel's peer sent something that is not a data frame (`arp.protocol.tunnel`).

    A `ConnectionError` too: for the public side it ends the connection like a broken link.
    (Defined here, not beside the decoder: a compiled module cannot define a subclass of a
    built-in exception, see `arp.native`.)
    """

    status = 502


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow."""

    status = 500


class ConfigError(ArpError):
    """A flag, environment variable or config file value that cannot be used."""

    status = 400


class RegistrationError(ArpError):
    """The relay refused a client's registration."""

    status = 403

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


# Plain HTTP-status errors, for the parts that need nothing more specific.


class BadRequest(ArpError):
    status = 400


class Forbidden(ArpError):
    status = 403


class NotFound(ArpError):
    status = 404


class Conflict(ArpError):
    status = 409


class PayloadTooLarge(ArpError):
    status = 413


class TooManyRequests(ArpError):
    status = 429


class Unavailable(ArpError):
    status = 503


# Raised by compiled modules (`arp.native`), defined here: mypyc keeps no class attributes of
# an exception class it compiles.


class HeadError(RemoteProtocolError):
    """The public connection's bytes are not a usable HTTP request head (400, 431)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status=status)


class HeadTimeout(ArpError):
    """The request head did not arrive within `Timeouts.head`."""

    status = 408


class TooManyFromAddress(Unavailable):
    """One address holds its share of the public port already (503, Retry-After)."""

    retry_after = 1


class ClientOffline(Unavailable):
    """The client's control link is gone; no tunnel can be had now (503)."""

    def __init__(self, client_id: str, offline_for: float) -> None:
        super().__init__(f"client {client_id} is offline (disconnected {offline_for:.0f} s ago)")


class TunnelTimeout(ArpError):
    """The client did not open a tunnel in time (504)."""

    status = 504

    def __init__(self, client_id: str, timeout: float) -> None:
        super().__init__(f"client {client_id} did not open a tunnel within {timeout:g} s")


class TooManyPending(Unavailable):
    """Too many tunnel requests are already outstanding for this client (503)."""

    retry_after = 1

    def __init__(self, client_id: str) -> None:
        super().__init__(f"client {client_id} has too many requests waiting")


class AtTunnelBound(Unavailable):
    """Every tunnel the client may have is busy, or the client refused one more (503 with
    Retry-After): it serves again as soon as one of its connections ends."""

    retry_after = 1

    def __init__(self, client_id: str) -> None:
        super().__init__(
            f"client {client_id} is serving as many connections as it allows; try again shortly"
        )
