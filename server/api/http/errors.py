"""One more table: gRPC status -> HTTP status, and the error body each vendor's clients expect.

The status comes from the same taxonomy as gRPC (``server/api/status.py``); this module only
chooses the HTTP number and the body's shape:

- OpenAI routes: ``{"error": {"message", "type", "param", "code"}}``
- twostage's own JSON RPCs: ``{"error": {"code": <http>, "status": "INVALID_ARGUMENT", "message"}}``
- Cohere, Jina and TEI routes: ``{"error": message, "error_type": ..., "code": ...}``
"""

from __future__ import annotations

import json
import re
from typing import Any

import grpc
from starlette.responses import Response

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    # google.rpc's own mapping: the request cannot run in this server's configuration
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

#: Seconds a client is asked to wait after 429 (admission refuses at once, queues drain fast).
RETRY_AFTER_S = 1

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
}
_TEI_TYPES = {
    400: "Validation",
    401: "Unauthorized",
    403: "Unauthorized",
    404: "Validation",
    409: "Validation",
    413: "Validation",
    429: "Overloaded",
    503: "Unhealthy",
}

# Our messages start with the proto field at fault ("texts: 300 given, ..."); a vendor route
# names its own field instead.
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w.]*)(?=[:\[])")
_ALIASES: dict[str, dict[str, str]] = {
    "/v1/embeddings": {"texts": "input"},
    "/embed": {"texts": "inputs"},
    "/rerank": {"documents": "texts"},
}


def family(path: str) -> str:
    """Which vendor's error body a path answers with: openai, rpc or tei."""
    if path.startswith(("/v1/embeddings", "/v1/models")):
        return "openai"
    if path.count("/") == 3 and path.startswith("/v1/"):
        return "rpc"
    return "tei"


def error_response(
    path: str, code: grpc.StatusCode | str, message: str, field: str | None = None, status: int = 0
) -> Response:
    """The error body for ``path``'s vendor; ``status`` overrides the table (413, 422 -> 400)."""
    code_name = code if isinstance(code, str) else code.name
    status = status or (HTTP_STATUS.get(code, 500) if not isinstance(code, str) else 500)
    aliases = _ALIASES.get(path, {})
    match = _FIELD_PREFIX.match(message)
    if match:
        name = match.group(1)
        head = name.split(".", 1)[0]
        if head in aliases:
            renamed = aliases[head] + name[len(head) :]
            message = renamed + message[len(name) :]
            name = renamed
        field = field or name
    style = family(path)
    body: dict[str, Any]
    if style == "openai":
        body = {
            "error": {
                "message": message,
                "type": _OPENAI_TYPES.get(status, "server_error"),
                "param": field,
                "code": code_name.lower(),
            }
        }
    elif style == "rpc":
        body = {"error": {"code": status, "status": code_name, "message": message}}
    else:
        body = {
            "error": message,
            "error_type": _TEI_TYPES.get(status, "Backend"),
            "code": code_name,
        }
    headers = {}
    if status == 429:
        headers["retry-after"] = str(RETRY_AFTER_S)
    elif status == 401:
        headers["www-authenticate"] = "Bearer"
    return Response(
        json.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str]:
    """(field, message) of pydantic's first error, e.g. ("documents[2].text", "...")."""
    if not errors:
        return "body", "body: invalid request"
    first = errors[0]
    parts: list[str] = []
    for part in first.get("loc", ())[1:]:  # loc[0] is "body"
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif not any(c in str(part) for c in "[]-") and part not in ("str", "int", "dict"):
            parts.append(("." if parts else "") + str(part))
    name = "".join(parts) or "body"
    if first.get("type") == "json_invalid":
        name = "body"
    return name, f"{name}: {first.get('msg', 'invalid value')}"
