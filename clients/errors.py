"""Client-side errors: one small hierarchy over gRPC status codes.

Every failed call raises a :class:`TwostageError` subclass carrying the status code and the
server's message (which names the bad field), so callers catch by meaning
(``except NotFoundError``) instead of comparing ``grpc.StatusCode`` values.
"""

from __future__ import annotations

import grpc


class TwostageError(Exception):
    """A call failed. ``code`` is the gRPC status code, ``message`` the server's detail."""

    def __init__(self, code: grpc.StatusCode, message: str, *, method: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.method = method

    @property
    def code_name(self) -> str:
        """The status code's name, e.g. ``"NOT_FOUND"``."""
        return self.code.name

    def __str__(self) -> str:
        where = f" ({self.method})" if self.method else ""
        return f"{self.code.name}{where}: {self.message}"


class InvalidArgumentError(TwostageError):
    """The request was malformed; the message names the field and the limit."""


class NotFoundError(TwostageError):
    """A collection, document or model does not exist."""


class AlreadyExistsError(TwostageError):
    """A collection with that name exists already."""


class ResourceExhaustedError(TwostageError):
    """The server is overloaded (its queue is full). Retry later, with backoff."""


class DeadlineExceededError(TwostageError):
    """The call's timeout passed before the server answered."""


class UnavailableError(TwostageError):
    """The server cannot be reached, or is starting or draining. Transient."""


class FailedPreconditionError(TwostageError):
    """The server lacks what the call needs (e.g. no reranker loaded)."""


class UnauthenticatedError(TwostageError):
    """The bearer token is missing or wrong."""


class PermissionDeniedError(TwostageError):
    """The token is valid but may not make this call."""


class RequestCancelledError(TwostageError):
    """The call was cancelled before it finished."""


class InternalError(TwostageError):
    """The server hit a bug (INTERNAL, UNKNOWN, or any code without its own class)."""


_BY_CODE: dict[grpc.StatusCode, type[TwostageError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.CANCELLED: RequestCancelledError,
}


def error_for(code: grpc.StatusCode, message: str, *, method: str = "") -> TwostageError:
    """The exception for one status code."""
    return _BY_CODE.get(code, InternalError)(code, message, method=method)


def from_rpc_error(error: grpc.RpcError, *, method: str = "") -> TwostageError:
    """Translate a ``grpc.RpcError`` (sync or aio) into the hierarchy."""
    code_fn = getattr(error, "code", None)
    details_fn = getattr(error, "details", None)
    code = code_fn() if callable(code_fn) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    message = details_fn() if callable(details_fn) else None
    return error_for(code, message or code.name.lower().replace("_", " "), method=method)
