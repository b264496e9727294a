"""Bearer-token auth on both transports, with ``--auth-reads`` on (one server, embedder only)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import httpx
import pytest
from conftest import ServerProcess, start_server

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory, server_models) -> Iterator[ServerProcess]:
    # the token comes from the environment, as a deployment would pass it
    os.environ["TWOSTAGE_AUTH_TOKEN"] = TOKEN
    try:
        server = start_server(
            tmp_path_factory.mktemp("auth-server"),
            {"embedder": server_models["embedder"]},
            "--auth-reads",
        )
    finally:
        del os.environ["TWOSTAGE_AUTH_TOKEN"]
    yield server
    server.stop()
    assert TOKEN not in server.log_path.read_text(errors="replace")


def test_http_reads_and_writes_need_the_token(auth_server) -> None:
    good = {"authorization": f"Bearer {TOKEN}"}
    bad = {"authorization": "Bearer wrong"}
    embed = {"input": ["hello"], "model": "embedder"}
    with httpx.Client(base_url=auth_server.http_url, timeout=60) as http:
        for headers in ({}, bad):
            refused = http.post("/v1/embeddings", json=embed, headers=headers)
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["type"] == "authentication_error"
            assert refused.headers["www-authenticate"] == "Bearer"
            tei = http.post("/embed", json={"inputs": "hi"}, headers=headers)
            assert tei.status_code == 401 and tei.json()["error_type"] == "Unauthorized"
            write = http.post(
                "/v1/Collections/CreateCollection", json={"name": "c"}, headers=headers
            )
            assert write.status_code == 401 and write.json()["error"]["status"] == "UNAUTHENTICATED"
        assert http.post("/v1/embeddings", json=embed, headers=good).status_code == 200
        created = http.post("/v1/Collections/CreateCollection", json={"name": "c"}, headers=good)
        assert created.status_code == 200, created.text
        # health, info and the model list stay open
        assert http.get("/health").status_code == 200
        assert http.get("/info").status_code == 200
        assert http.get("/v1/models").status_code == 200
        assert http.post("/v1/Info/GetInfo", json={}).status_code == 200


def test_openai_client_sends_its_api_key_as_the_token(auth_server) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{auth_server.http_url}/v1", api_key=TOKEN, max_retries=0)
    assert len(client.embeddings.create(input="hi", model="embedder").data) == 1
    wrong = openai.OpenAI(base_url=f"{auth_server.http_url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.embeddings.create(input="hi", model="embedder")


def test_grpc_reads_need_the_token_with_auth_reads(auth_server) -> None:
    with grpc.insecure_channel(auth_server.address) as ch:
        stub = pb_grpc.InferenceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.Embed(pb.EmbedRequest(texts=["hi"]), timeout=30)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.Embed(
            pb.EmbedRequest(texts=["hi"]),
            timeout=30,
            metadata=(("authorization", f"Bearer {TOKEN}"),),
        )
        assert len(reply.embeddings) == 1
        info = pb_grpc.InfoStub(ch).GetInfo(pb.GetInfoRequest(), timeout=30)
        assert info.models
