"""The HTTP surface: OpenAI, Cohere, Jina and TEI request shapes, and every RPC as JSON.

Served by uvicorn inside the gRPC server's event loop. Every route builds the proto request and
calls the gRPC servicer method itself (:mod:`.bridge`), so readiness, admission, deadlines,
validation, batching and metrics are the ones gRPC calls go through: one request layer, two
transports.
"""

from __future__ import annotations

from twostage.server.api.http.routes import build_app
from twostage.server.api.http.server import HttpServer

__all__ = ["HttpServer", "build_app"]
