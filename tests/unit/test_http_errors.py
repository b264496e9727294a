"""The HTTP error table and bodies, and which calls need a token (no server needed)."""

from __future__ import annotations

import json

import grpc
import pytest

from twostage.server.api.http.errors import error_response, family, validation_message
from twostage.server.api.interceptors import requires_token
from twostage.server.config import load_config
from twostage.server.errors import ConfigError


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    ],
)
def test_every_status_has_its_http_status_in_each_vendor_body(code, status) -> None:
    openai = error_response("/v1/embeddings", code, "texts: too many")
    assert openai.status_code == status
    body = json.loads(openai.body)["error"]
    assert body["code"] == code.name.lower() and body["param"] == "input"
    assert body["message"] == "input: too many"
    rpc = json.loads(error_response("/v1/Search/Search", code, "m").body)["error"]
    assert rpc == {"code": status, "status": code.name, "message": "m"}
    tei = error_response("/embed", code, "texts: none")
    assert json.loads(tei.body)["error"] == "inputs: none"
    assert ("retry-after" in tei.headers) == (status == 429)


def test_families() -> None:
    assert family("/v1/embeddings") == family("/v1/models") == "openai"
    assert family("/v1/Collections/Upsert") == "rpc"
    assert family("/v1/rerank") == family("/v2/rerank") == family("/rerank") == "tei"


def test_validation_message_names_the_field() -> None:
    errors = [{"loc": ("body", "documents", 2, "str"), "msg": "Input should be a valid string"}]
    assert validation_message(errors) == (
        "documents[2]",
        "documents[2]: Input should be a valid string",
    )


def test_which_calls_need_the_token() -> None:
    upsert = "/twostage.v1.Collections/Upsert"
    embed = "/twostage.v1.Inference/Embed"
    info = "/twostage.v1.Info/GetInfo"
    health = "/grpc.health.v1.Health/Check"
    assert requires_token(upsert, False) and requires_token(upsert, True)
    assert not requires_token(embed, False) and requires_token(embed, True)
    assert not requires_token(info, True) and not requires_token(health, True)


def test_http_listen_and_auth_reads_are_validated() -> None:
    assert load_config({"http_listen": "off"}, env={}).http_listen == "off"
    with pytest.raises(ConfigError):
        load_config({"http_listen": "8080"}, env={})
    with pytest.raises(ConfigError):
        load_config({"auth_reads": True}, env={})
