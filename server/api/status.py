"""The one table from domain errors to gRPC status codes.

INVALID_ARGUMENT for bad input, UNAVAILABLE for transient failures, INTERNAL only for bugs (with
a generic message: the detail goes to the log, never the raw exception text to the client).
"""

from __future__ import annotations

import logging

import grpc

from twostage.server import errors

log = logging.getLogger(__name__)

_CODES: dict[type[errors.TwostageError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.BundleError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.InternalError: grpc.StatusCode.INTERNAL,
}

INTERNAL_MESSAGE = "internal error; the server log has the details"
# A message may quote the caller's input (a name, an id); a status message rides in HTTP/2
# trailers, which peers refuse past a few KB, so a longer one would replace the real refusal.
MAX_MESSAGE_CHARS = 512


def clip(message: str) -> str:
    """``message`` cut to :data:`MAX_MESSAGE_CHARS`, saying how long it was."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[: MAX_MESSAGE_CHARS - 40]}... ({len(message)} characters, cut)"


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Map any exception to (code, client-safe message)."""
    if isinstance(exc, errors.InternalError):
        log.error("internal error: %s", exc.message, exc_info=exc)
        return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
    if isinstance(exc, errors.TwostageError):
        for cls in type(exc).__mro__:
            code = _CODES.get(cls)  # type: ignore[arg-type]
            if code is not None:
                return code, clip(exc.message)
    log.exception("unhandled error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
