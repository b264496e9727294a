"""Bearer-token check for writes and admin calls (optional; off when no token is configured).

Reads (Embed, Rerank, ScorePairs, Search, Get, List/Describe, GetInfo, health, reflection) stay
open; Upsert, Delete, CreateCollection, DropCollection and Tune need
``authorization: Bearer <token>``.
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


def _deny(message: str) -> grpc.RpcMethodHandler:
    async def abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(abort)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if handler_call_details.method in PROTECTED_METHODS:
            metadata = dict(handler_call_details.invocation_metadata or ())
            given = metadata.get("authorization", "")
            given_bytes = given.encode() if isinstance(given, str) else given
            if not hmac.compare_digest(given_bytes, self._expected):
                return _deny("authorization: a valid bearer token is required for this call")
        return await continuation(handler_call_details)
