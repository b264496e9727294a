"""The FastAPI app: vendor routes, twostage's RPCs as JSON, health and info.

Every route that does work goes through :class:`~.bridge.RpcBridge`, i.e. the gRPC servicer
method, and reshapes its reply. Errors leave through one exception handler per kind, rendered in
the path's vendor shape by :func:`~.errors.error_response`.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from typing import Any

import grpc
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from google.protobuf import json_format
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twostage import __version__
from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.server.api.http.bridge import TIMEOUT_HEADER, HttpCallError, RpcBridge
from twostage.server.api.http.errors import error_response, validation_message
from twostage.server.api.http.schemas import (
    CohereRerankRequest,
    OpenAIEmbeddingRequest,
    TEIEmbedRequest,
    TEIRerankRequest,
)
from twostage.server.api.servicers import ServingState

EMBED = "/twostage.v1.Inference/Embed"
RERANK = "/twostage.v1.Inference/Rerank"
GET_INFO = "/twostage.v1.Info/GetInfo"

TOKEN_IDS_MESSAGE = (
    "input: token-id arrays are not accepted; send the texts as strings (twostage tokenizes "
    "with the model's own tokenizer). LangChain: OpenAIEmbeddings(..., "
    "check_embedding_ctx_length=False)"
)


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")), status_code=status, media_type="application/json"
    )


def _vectors(reply: pb.EmbedResponse) -> list[np.ndarray]:
    return [np.frombuffer(e.vector, "<f4") for e in reply.embeddings]


class BodyLimit:
    """413 for a body over ``max_bytes``: at once from Content-Length, else while it streams.

    Also reads every body as JSON, whatever its Content-Type says: ``curl -d`` sends a form type.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"content-type"]
        scope = dict(scope, headers=[*headers, (b"content-type", b"application/json")])
        for key, value in headers:
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._too_large(scope["path"])(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413)
            return message

        await self.app(scope, counted, send)

    def _too_large(self, path: str) -> Response:
        return error_response(
            path,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"body: larger than the limit of {self.max_bytes} bytes",
            field="body",
            status=413,
        )


def build_app(state: ServingState, *, max_body_bytes: int) -> FastAPI:
    """The HTTP app over ``state`` (the same object the gRPC servicers share)."""
    bridge = RpcBridge(state)
    app = FastAPI(
        title="twostage",
        version=__version__,
        description=(
            "Embeddings, reranking and search over HTTP: OpenAI, Cohere, Jina and TEI request "
            "shapes, and every twostage RPC as JSON at /v1/<Service>/<Method> (proto3 JSON "
            f"mapping). Optional header `{TIMEOUT_HEADER}` sets the call's deadline."
        ),
    )
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(HttpCallError)
    async def _call_error(request: Request, exc: HttpCallError) -> Response:
        return error_response(request.url.path, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        field, message = validation_message(list(exc.errors()))
        return error_response(request.url.path, grpc.StatusCode.INVALID_ARGUMENT, message, field)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 413:
            message = f"body: larger than the limit of {max_body_bytes} bytes"
        elif exc.status_code == 404:
            message = f"path: no route {request.url.path}"
        elif exc.status_code == 405:
            message = f"method: {request.method} is not allowed on {request.url.path}"
        else:
            message = f"request: {exc.detail}"
        code = grpc.StatusCode.NOT_FOUND if exc.status_code == 404 else "INVALID_ARGUMENT"
        return error_response(request.url.path, code, message, field=None, status=exc.status_code)

    def headers(request: Request) -> dict[str, str]:
        return dict(request.headers)

    # -- OpenAI ----------------------------------------------------------------------------

    @app.post("/v1/embeddings", tags=["OpenAI"])
    async def openai_embeddings(body: OpenAIEmbeddingRequest, request: Request) -> Response:
        """OpenAI embeddings: ``input`` (string or list of strings), ``encoding_format``."""
        raw = body.input
        texts = [raw] if isinstance(raw, str) else raw
        if any(not isinstance(t, str) for t in texts):
            raise HttpCallError(grpc.StatusCode.INVALID_ARGUMENT, TOKEN_IDS_MESSAGE, "input")
        reply = await bridge.call(
            EMBED, pb.EmbedRequest(texts=texts, model=body.model), headers(request)
        )
        if body.dimensions is not None and body.dimensions != reply.dim:
            raise HttpCallError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"dimensions: {reply.model} returns {reply.dim} dimensions; "
                f"{body.dimensions} is not available (omit the field)",
                "dimensions",
            )
        if body.encoding_format == "base64":
            data = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": base64.b64encode(e.vector).decode("ascii"),
                }
                for i, e in enumerate(reply.embeddings)
            ]
        else:
            data = [
                {"object": "embedding", "index": i, "embedding": v.tolist()}
                for i, v in enumerate(_vectors(reply))
            ]
        tokens = reply.metadata.tokens
        return _json(
            {
                "object": "list",
                "data": data,
                "model": reply.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    @app.get("/v1/models", tags=["OpenAI"])
    async def openai_models(request: Request) -> Response:
        """The loaded models, in OpenAI's list shape."""
        info = await bridge.call(GET_INFO, pb.GetInfoRequest(), headers(request))
        return _json(
            {
                "object": "list",
                "data": [
                    {
                        "id": m.name,
                        "object": "model",
                        "created": 0,
                        "owned_by": "twostage",
                        "kind": pb.ModelKind.Name(m.kind),
                    }
                    for m in info.models
                ],
            }
        )

    # -- Cohere / Jina ---------------------------------------------------------------------

    async def rerank(
        body: CohereRerankRequest, request: Request
    ) -> tuple[pb.RerankResponse, list[str]]:
        docs = [d if isinstance(d, str) else d.text for d in body.documents]
        reply = await bridge.call(
            RERANK,
            pb.RerankRequest(
                query=body.query, documents=docs, top_n=body.top_n or 0, model=body.model
            ),
            headers(request),
        )
        return reply, docs

    @app.post("/v2/rerank", tags=["Cohere"])
    async def cohere_rerank_v2(body: CohereRerankRequest, request: Request) -> Response:
        """Cohere v2 rerank: ``results[].index`` and ``relevance_score``, best first."""
        reply, _ = await rerank(body, request)
        return _json(
            {
                "id": uuid.uuid4().hex,
                "results": [{"index": r.index, "relevance_score": r.score} for r in reply.results],
                "meta": {
                    "api_version": {"version": "2"},
                    "billed_units": {"search_units": 1},
                    "tokens": {"input_tokens": reply.metadata.tokens},
                },
            }
        )

    @app.post("/v1/rerank", tags=["Cohere", "Jina"])
    async def jina_rerank(body: CohereRerankRequest, request: Request) -> Response:
        """Jina / Cohere v1 rerank: documents as strings or ``{"text"}``; ``return_documents``."""
        reply, docs = await rerank(body, request)
        results = []
        for r in reply.results:
            item: dict[str, Any] = {"index": r.index, "relevance_score": r.score}
            if body.return_documents:
                item["document"] = {"text": docs[r.index]}
            results.append(item)
        return _json(
            {
                "id": uuid.uuid4().hex,
                "model": reply.model,
                "results": results,
                "usage": {"total_tokens": reply.metadata.tokens},
                "meta": {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}},
            }
        )

    # -- TEI -------------------------------------------------------------------------------

    @app.post("/embed", tags=["TEI"])
    async def tei_embed(body: TEIEmbedRequest, request: Request) -> Response:
        """TEI embed: a list of vectors, in input order."""
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        reply = await bridge.call(
            EMBED, pb.EmbedRequest(texts=texts, model=body.model), headers(request)
        )
        out = []
        for v in _vectors(reply):
            if body.normalize:
                norm = float(np.linalg.norm(v))
                v = v / norm if norm > 0 else v
            out.append(v.tolist())
        return _json(out)

    @app.post("/rerank", tags=["TEI"])
    async def tei_rerank(body: TEIRerankRequest, request: Request) -> Response:
        """TEI rerank: ``[{"index", "score"[, "text"]}]``, best first."""
        reply = await bridge.call(
            RERANK,
            pb.RerankRequest(query=body.query, documents=body.texts, model=body.model),
            headers(request),
        )
        out = []
        for r in reply.results:
            score = r.score
            if body.raw_scores:  # the logit behind the sigmoid score
                p = min(max(score, 1e-7), 1 - 1e-7)
                score = math.log(p) - math.log1p(-p)
            item: dict[str, Any] = {"index": r.index, "score": score}
            if body.return_text:
                item["text"] = body.texts[r.index]
            out.append(item)
        return _json(out)

    @app.get("/info", tags=["TEI"])
    async def info(request: Request) -> Response:
        """TEI's info fields, the loaded models and the request limits of both transports."""
        reply = await bridge.call(GET_INFO, pb.GetInfoRequest(), headers(request))
        default = next(
            (m for m in reply.models if m.is_default and m.kind == pb.MODEL_KIND_EMBEDDER),
            reply.models[0] if reply.models else None,
        )
        limits = json_format.MessageToDict(
            reply.limits,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        limits["max_body_bytes"] = max_body_bytes
        return _json(
            {
                "model_id": default.source if default else "",
                "model_sha": default.revision if default else "",
                "model_dtype": default.variant if default else "",
                "model_type": {"embedding": {"pooling": default.pooling}} if default else {},
                "max_concurrent_requests": reply.limits.max_inflight_requests,
                "max_input_length": default.max_length if default else 0,
                "max_batch_tokens": reply.limits.max_batch_tokens,
                "max_batch_requests": reply.limits.max_batch_size,
                "max_client_batch_size": reply.limits.max_texts_per_request,
                "version": reply.version,
                "device": reply.device,
                "limits": limits,
                "models": [
                    json_format.MessageToDict(m, preserving_proto_field_name=True)
                    for m in reply.models
                ],
            }
        )

    @app.get("/health", tags=["TEI"])
    async def health(request: Request) -> Response:
        """200 once models are warm; 503 while starting or draining."""
        try:
            state.require_ready()
        except Exception as exc:  # Unavailable
            raise HttpCallError(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        return _json({"status": "ok"})

    # -- twostage's own RPCs as JSON -------------------------------------------------------

    for full_name, (service, method) in bridge.methods.items():
        app.add_api_route(
            f"/v1/{service}/{method.name}",
            _rpc_endpoint(bridge, full_name, method),
            methods=["POST"],
            tags=[f"twostage.v1.{service}"],
            summary=f"{service}.{method.name}: {method.input_type.name} -> "
            f"{method.output_type.name} (proto3 JSON)",
        )
    return app


def _rpc_endpoint(bridge: RpcBridge, full_name: str, method: Any) -> Any:
    request_class = getattr(pb, method.input_type.name)

    async def endpoint(request: Request) -> Response:
        raw = await request.body()
        message = request_class()
        try:
            json_format.Parse(raw or b"{}", message)
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            raise HttpCallError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"body: not a valid {method.input_type.name}: {exc}",
            ) from None
        reply = await bridge.call(full_name, message, dict(request.headers))
        return _json(json_format.MessageToDict(reply))

    endpoint.__name__ = f"{method.containing_service.name}_{method.name}"
    return endpoint
