"""One exception hierarchy for the package.

Errors split as h11 splits them: the peer broke the protocol (`RemoteProtocolError`) or we were
asked to do something we cannot (`LocalProtocolError`). Each carries the HTTP status it maps to,
so the layer that answers a person picks the status from the error, never from a second table.
"""

from __future__ import annotations


class ArpError(Exception):
    """Base of every error ARP raises on purpose."""

    status: int = 500
    """The HTTP status this error answers with where it reaches an HTTP client."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class ProtocolError(ArpError):
    """A frame or message that breaks the ARP control protocol."""

    status = 400


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow (bad JSON, unknown type, oversize)."""


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
