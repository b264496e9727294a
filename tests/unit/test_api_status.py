"""The one table from domain errors to status codes, and messages short enough for trailers."""

from __future__ import annotations

import grpc

from twostage.server.api.status import INTERNAL_MESSAGE, MAX_MESSAGE_CHARS, to_status
from twostage.server.errors import InternalError, InvalidArgument, NotFound, Overloaded


def test_codes_and_clipped_messages() -> None:
    assert to_status(InvalidArgument("texts: 300 given")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "texts: 300 given",
    )
    assert to_status(Overloaded("busy"))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    code, message = to_status(NotFound(f"model {'a' * 50_000!r} is not loaded"))
    assert code == grpc.StatusCode.NOT_FOUND and len(message) <= MAX_MESSAGE_CHARS
    assert message.startswith("model 'aaa") and "50022 characters" in message
    assert to_status(InternalError("secret detail")) == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    assert to_status(KeyError("x")) == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
