"""Bearer-token check for writes and admin calls (optional; off when no token is configured).

Reads (Embed, Rerank, ScorePairs, Search, Get, List/Describe, GetInfo, health, reflection) stay
open; Upsert, Delete, CreateCollection, DropCollection and Tune need
``authorization: Bearer <token>``. With ``auth_reads`` every twostage call but GetInfo needs it
too. The HTTP surface asks :func:`requires_token` and :class:`TokenCheck` the same questions, so
both transports protect the same calls.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

PROTECTED_METHODS = frozenset(
    {
        "/twostage.v1.Collections/Upsert",
        "/twostage.v1.Collections/Delete",
        "/twostage.v1.Collections/CreateCollection",
        "/twostage.v1.Collections/DropCollection",
        "/twostage.v1.Collections/Tune",
    }
)


# Open even with auth_reads: what load balancers and clients probe before they authenticate.
OPEN_METHODS = frozenset({"/twostage.v1.Info/GetInfo"})

DENIED_MESSAGE = "authorization: a valid bearer token is required for this call"


def requires_token(method: str, auth_reads: bool) -> bool:
    """Whether the call ``/package.Service/Method`` needs the bearer token."""
    if method in PROTECTED_METHODS:
        return True
    return auth_reads and method.startswith("/twostage.v1.") and method not in OPEN_METHODS


class TokenCheck:
    """Constant-time comparison of an ``authorization`` header with the configured token."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def ok(self, given: str | bytes | None) -> bool:
        if not given:
            return False
        given_bytes = given.encode() if isinstance(given, str) else given
        return hmac.compare_digest(given_bytes, self._expected)


def _deny(message: str) -> grpc.RpcMethodHandler:
    async def abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str, *, auth_reads: bool = False) -> None:
        self._check = TokenCheck(token)
        self._auth_reads = auth_reads

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if requires_token(handler_call_details.method, self._auth_reads):
            metadata = dict(handler_call_details.invocation_metadata or ())
            if not self._check.ok(metadata.get("authorization")):
                return _deny(DENIED_MESSAGE)
        return await continuation(handler_call_details)
