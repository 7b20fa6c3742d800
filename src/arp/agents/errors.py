"""The session manager's errors, each mapped to the HTTP status an adapter answers with."""

from __future__ import annotations

from arp import errors
from arp.errors import ArpError


class SessionError(ArpError):
    """Base of the errors the session manager raises on purpose."""

    status = 400


class BadRequest(SessionError, errors.BadRequest):
    """Unknown executor, binary not found, bad option, project path missing or not a folder."""

    status = 400


class Forbidden(SessionError, errors.Forbidden):
    """A project path outside ``--allowed-root``."""

    status = 403


class SessionNotFound(SessionError, errors.NotFound):
    """No session with that id (never existed, or deleted)."""

    status = 404


class Conflict(SessionError, errors.Conflict):
    """The session is in the wrong state (a follow-up while a run is going on, no id to resume)."""

    status = 409


class PromptTooLarge(SessionError, errors.PayloadTooLarge):
    """A prompt larger than the configured limit."""

    status = 413


class TooManySessions(SessionError, errors.TooManyRequests):
    """``--max-sessions`` runs are already going on."""

    status = 429


class ManagerClosed(SessionError, errors.Unavailable):
    """The session manager is shutting down or not started."""

    status = 503
