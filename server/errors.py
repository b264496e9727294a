"""Domain errors of the server: one taxonomy, mapped to gRPC codes in ``server/api/status.py``.

Lower layers raise these; they never import grpc. Messages name the field and the limit and
are safe to show to a client (no stack traces, no internal paths).
"""

from __future__ import annotations


class TwostageError(Exception):
    """Base class. ``field`` names the request field at fault, where there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class InvalidArgument(TwostageError):
    """The request is malformed: a field is empty, too long, out of range or of the wrong shape."""


class NotFound(TwostageError):
    """A named collection, document or model does not exist."""


class AlreadyExists(TwostageError):
    """A collection with that name exists already."""


class Overloaded(TwostageError):
    """Admission refused the work: a queue or in-flight limit is full. Retry later."""


class Unavailable(TwostageError):
    """Transient: the server is starting, draining, or a worker died. Retry on another replica."""


class DeadlineExceeded(TwostageError):
    """The caller's deadline passed before the work could run; it was dropped, not computed."""


class Cancelled(TwostageError):
    """The caller went away; the work was dropped."""


class FailedPrecondition(TwostageError):
    """The request cannot run in the server's current configuration (e.g. no reranker loaded).

    Not used for transient failures (those are :class:`Unavailable`).
    """


class BundleError(TwostageError):
    """A model bundle is missing, malformed, or its hashes do not check out."""


class InternalError(TwostageError):
    """A bug. The message sent to the client is generic; the detail goes to the log."""


class ConfigError(TwostageError):
    """The server's own configuration is wrong (bad flag, CUDA asked for but not available).

    Raised at start, before serving; the command exits with the message.
    """
