"""Calls a gRPC servicer method from an HTTP route, with a stand-in for the servicer context.

The servicers' ``_handler`` needs two things of the context: ``time_remaining()`` for the deadline
and ``abort(code, message)`` for errors. :class:`HttpContext` gives both; ``abort`` raises
:class:`HttpCallError`, which the routes' exception handler renders in the caller's vendor shape.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import grpc

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.server.api.interceptors import DENIED_MESSAGE, TokenCheck, requires_token
from twostage.server.api.servicers import ServingState, make_servicers

#: Optional request header: the call's timeout in milliseconds (gRPC callers set a deadline).
TIMEOUT_HEADER = "x-timeout-ms"


class HttpCallError(Exception):
    """A call that ended in a gRPC status; ``field`` names the request field when known."""

    def __init__(self, code: grpc.StatusCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class HttpContext:
    """The part of ``grpc.aio.ServicerContext`` the servicers use."""

    def __init__(self, deadline: float | None, metadata: tuple[tuple[str, str], ...]) -> None:
        self._deadline = deadline
        self._metadata = metadata

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise HttpCallError(code, details)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


class RpcBridge:
    """The servicers of one server, callable by method name (``/twostage.v1.Search/Search``)."""

    def __init__(self, state: ServingState) -> None:
        self.state = state
        self._token = TokenCheck(state.cfg.auth_token) if state.cfg.auth_token else None
        self.servicers: dict[str, Any] = make_servicers(state)
        self.methods = {
            f"/{service.full_name}/{method.name}": (service.name, method)
            for service in pb.DESCRIPTOR.services_by_name.values()
            if service.name in self.servicers
            for method in service.methods
        }

    def authorize(self, method: str, headers: Mapping[str, str]) -> None:
        if self._token is None or not requires_token(method, self.state.cfg.auth_reads):
            return
        if not self._token.ok(headers.get("authorization")):
            raise HttpCallError(grpc.StatusCode.UNAUTHENTICATED, DENIED_MESSAGE, "authorization")

    async def call(self, method: str, request: Any, headers: Mapping[str, str]) -> Any:
        """Run ``method`` on ``request`` as gRPC would; raises :class:`HttpCallError`."""
        self.authorize(method, headers)
        service, descriptor = self.methods[method]
        fn = getattr(self.servicers[service], descriptor.name)
        return await fn(request, HttpContext(_deadline(headers), _metadata(headers)))


def _deadline(headers: Mapping[str, str]) -> float | None:
    raw = headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        ms = float(raw)
    except ValueError:
        ms = -1.0
    if not ms >= 0:  # also NaN
        raise HttpCallError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{TIMEOUT_HEADER}: must be a number of milliseconds >= 0, got {raw!r}",
            TIMEOUT_HEADER,
        )
    return time.monotonic() + ms / 1000.0


def _metadata(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    # the token never travels further than the check above
    return tuple((k, v) for k, v in headers.items() if k != "authorization")
