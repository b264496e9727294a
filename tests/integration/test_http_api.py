"""The HTTP surface against a live server, checked with the vendors' own clients.

The OpenAI, Cohere and LangChain clients talk to the same ``twostage serve`` process as the gRPC
stubs; what they get back must equal what gRPC gives (fp32 server: batch-invariant to ~1e-6).
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from helpers import metric, vectors

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc

openai = pytest.importorskip("openai")
cohere = pytest.importorskip("cohere")


@pytest.fixture(scope="module")
def texts(scifact_corpus) -> list[str]:
    return [f"{d['title']} {d['text']}" for d in scifact_corpus[:12]]


@pytest.fixture(scope="module")
def fp32_grpc(fp32_server):
    with grpc.insecure_channel(fp32_server.address) as ch:
        yield pb_grpc.InferenceStub(ch)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def test_openai_client_embeddings_equal_grpc(fp32_server, fp32_grpc, texts) -> None:
    want = fp32_grpc.Embed(pb.EmbedRequest(texts=texts), timeout=60)
    client = openai.OpenAI(base_url=f"{fp32_server.http_url}/v1", api_key="unused")
    for encoding in ("float", "base64"):
        got = client.embeddings.create(input=texts, model="embedder", encoding_format=encoding)
        assert [d.index for d in got.data] == list(range(len(texts)))
        if encoding == "base64":  # the client hands base64 back undecoded when asked for it
            rows = [
                np.frombuffer(__import__("base64").b64decode(d.embedding), "<f4") for d in got.data
            ]
        else:
            rows = [np.asarray(d.embedding, dtype=np.float32) for d in got.data]
        cos = _cosines(np.stack(rows), vectors(want))
        assert cos.min() >= 0.99999, (encoding, cos.min())
        assert got.model == "embedder"
        assert got.usage.prompt_tokens == got.usage.total_tokens == want.metadata.tokens
    # the client's own default (it asks for base64 and decodes it) and a single string
    single = client.embeddings.create(input=texts[0], model="embedder")
    assert _cosines(np.asarray([single.data[0].embedding]), vectors(want)[:1])[0] >= 0.99999
    models = client.models.list()
    assert {m.id for m in models.data} == {"embedder", "reranker"}


def test_langchain_openai_embeddings(fp32_server, fp32_grpc, texts, monkeypatch) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    want = vectors(fp32_grpc.Embed(pb.EmbedRequest(texts=texts[:4]), timeout=60))
    kwargs = {"base_url": f"{fp32_server.http_url}/v1", "api_key": "unused", "model": "embedder"}
    emb = langchain_openai.OpenAIEmbeddings(check_embedding_ctx_length=False, **kwargs)
    got = np.asarray(emb.embed_documents(texts[:4]))
    assert _cosines(got, want).min() >= 0.99999
    assert _cosines(np.asarray([emb.embed_query(texts[0])]), want[:1])[0] >= 0.99999

    # LangChain's default tokenizes with tiktoken and sends token ids. tiktoken downloads its
    # table from the network, which tests never reach: stand in a table that maps characters to
    # ids, so the request LangChain sends has the default's shape (lists of ints).
    class CharTable:
        def encode(self, text: str, **_: Any) -> list[int]:
            return [ord(c) for c in text]

        encode_ordinary = encode

    tiktoken = pytest.importorskip("tiktoken")
    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda _name: CharTable())
    monkeypatch.setattr(tiktoken, "get_encoding", lambda _name: CharTable())
    default = langchain_openai.OpenAIEmbeddings(max_retries=0, **kwargs)
    with pytest.raises(openai.BadRequestError) as err:
        default.embed_documents(texts[:2])
    assert err.value.status_code == 400
    body = err.value.body
    assert body["param"] == "input" and body["type"] == "invalid_request_error"
    assert "check_embedding_ctx_length=False" in body["message"]


@pytest.fixture(scope="module")
def rerank_case(fp32_server, fp32_grpc, texts) -> tuple[str, list[str], pb.RerankResponse]:
    query = "What does the evidence say about cancer risk?"
    reply = fp32_grpc.Rerank(pb.RerankRequest(query=query, documents=texts), timeout=60)
    return query, texts, reply


def _same_ranking(got: list[tuple[int, float]], want: pb.RerankResponse) -> None:
    assert [i for i, _ in got] == [r.index for r in want.results]
    assert np.allclose([s for _, s in got], [r.score for r in want.results], atol=1e-5)


def test_cohere_client_v2_rerank_equals_grpc(fp32_server, rerank_case) -> None:
    query, docs, want = rerank_case
    client = cohere.ClientV2(api_key="unused", base_url=fp32_server.http_url)
    got = client.rerank(model="reranker", query=query, documents=docs, max_tokens_per_doc=512)
    _same_ranking([(r.index, r.relevance_score) for r in got.results], want)
    top = client.rerank(model="reranker", query=query, documents=docs, top_n=3)
    _same_ranking([(r.index, r.relevance_score) for r in top.results], _top(want, 3))


def _top(reply: pb.RerankResponse, n: int) -> pb.RerankResponse:
    return pb.RerankResponse(results=reply.results[:n])


def test_jina_and_tei_rerank_shapes_equal_grpc(fp32_server, rerank_case) -> None:
    query, docs, want = rerank_case
    with httpx.Client(base_url=fp32_server.http_url, timeout=60) as http:
        jina = http.post(
            "/v1/rerank",
            json={
                "model": "reranker",
                "query": query,
                "documents": [{"text": d} for d in docs[:6]] + docs[6:],
                "top_n": 5,
                "return_documents": True,
            },
        )
        assert jina.status_code == 200, jina.text
        results = jina.json()["results"]
        _same_ranking([(r["index"], r["relevance_score"]) for r in results], _top(want, 5))
        assert all(r["document"]["text"] == docs[r["index"]] for r in results)
        assert jina.json()["usage"]["total_tokens"] > 0

        tei = http.post("/rerank", json={"query": query, "texts": docs, "return_text": True})
        assert tei.status_code == 200, tei.text
        _same_ranking([(r["index"], r["score"]) for r in tei.json()], want)
        assert all(r["text"] == docs[r["index"]] for r in tei.json())
        raw = http.post("/rerank", json={"query": query, "texts": docs, "raw_scores": True})
        sigmoid = [1 / (1 + math.exp(-r["score"])) for r in raw.json()]
        assert np.allclose(sigmoid, [r.score for r in want.results], atol=1e-4)


def test_tei_embed_info_and_health(fp32_server, fp32_grpc, texts) -> None:
    want = vectors(fp32_grpc.Embed(pb.EmbedRequest(texts=texts[:3]), timeout=60))
    with httpx.Client(base_url=fp32_server.http_url, timeout=60) as http:
        got = http.post("/embed", json={"inputs": texts[:3], "truncate": True})
        assert got.status_code == 200, got.text
        assert _cosines(np.asarray(got.json()), want).min() >= 0.99999
        one = http.post("/embed", json={"inputs": texts[0]}).json()
        assert len(one) == 1 and len(one[0]) == want.shape[1]
        assert http.get("/health").status_code == 200
        info = http.get("/info").json()
        assert info["max_client_batch_size"] == info["limits"]["max_texts_per_request"] == 256
        assert info["limits"]["max_body_bytes"] == 64 * 1024 * 1024
        assert info["limits"]["max_text_chars"] == 100_000
        assert {m["name"] for m in info["models"]} == {"embedder", "reranker"}
        assert http.get("/openapi.json").json()["paths"].keys() >= {
            "/v1/embeddings",
            "/v2/rerank",
            "/v1/rerank",
            "/embed",
            "/rerank",
            "/v1/Search/Search",
            "/v1/Collections/Upsert",
        }


def test_search_over_json_equals_grpc(live_server, scifact_corpus) -> None:
    name = "http_json_search"
    docs = [{"id": d["_id"], "text": f"{d['title']} {d['text']}"} for d in scifact_corpus[:40]]
    with httpx.Client(base_url=live_server.http_url, timeout=120) as http:
        created = http.post("/v1/Collections/CreateCollection", json={"name": name})
        assert created.status_code == 200, created.text
        assert created.json()["collection"]["name"] == name
        upserted = http.post("/v1/Collections/Upsert", json={"collection": name, "documents": docs})
        assert upserted.status_code == 200, upserted.text
        assert upserted.json()["upserted"] == len(docs)
        request = {"collection": name, "query": "cancer risk of smoking", "top_k": 5}
        got = http.post("/v1/Search/Search", json=request)
        assert got.status_code == 200, got.text
        again = http.post("/v1/Collections/CreateCollection", json={"name": name})
        assert again.status_code == 409
        assert again.json()["error"]["status"] == "ALREADY_EXISTS"
    with grpc.insecure_channel(live_server.address) as ch:
        want = pb_grpc.SearchStub(ch).Search(
            pb.SearchRequest(collection=name, query=request["query"], top_k=5), timeout=60
        )
    hits = got.json()["hits"]
    assert [h["id"] for h in hits] == [h.id for h in want.hits]
    assert np.allclose([h.get("score", 0.0) for h in hits], [h.score for h in want.hits], atol=1e-5)
    assert got.json().get("ranking", "") == want.ranking


def _error(response: httpx.Response) -> dict[str, Any]:
    return response.json()["error"]


def test_error_classes_map_to_http(live_server) -> None:
    with httpx.Client(base_url=live_server.http_url, timeout=60) as http:
        # 400 from pydantic, naming the field, OpenAI's body
        bad = http.post("/v1/embeddings", json={"input": 3, "model": "embedder"})
        assert bad.status_code == 400
        assert _error(bad)["param"] == "input" and _error(bad)["message"].startswith("input:")
        # 400 from the servicer's limits, renamed to the vendor's field
        many = http.post("/v1/embeddings", json={"input": ["x"] * 257, "model": "embedder"})
        assert many.status_code == 400 and _error(many)["param"] == "input", many.text
        assert "256" in _error(many)["message"]
        dims = http.post(
            "/v1/embeddings", json={"input": "x", "model": "embedder", "dimensions": 8}
        )
        assert dims.status_code == 400 and _error(dims)["param"] == "dimensions"
        tei = http.post("/embed", json={"inputs": []})
        assert tei.status_code == 400 and tei.json()["error"].startswith("inputs:")
        assert tei.json()["error_type"] == "Validation"
        jina = http.post("/v1/rerank", json={"query": "q", "documents": [{"txt": "a"}]})
        assert jina.status_code == 400 and jina.json()["error"].startswith("documents[0]")
        rpc = http.post("/v1/Search/Search", json={"collection": "x", "no_such_field": 1})
        assert rpc.status_code == 400 and _error(rpc)["status"] == "INVALID_ARGUMENT"
        assert http.post("/v1/embeddings", content=b"{not json").status_code == 400
        # 404: unknown model, collection, route
        model = http.post("/v1/embeddings", json={"input": "x", "model": "text-embedding-3-small"})
        assert model.status_code == 404 and _error(model)["type"] == "not_found_error"
        missing = http.post("/v1/Search/Search", json={"collection": "nope", "query": "x"})
        assert missing.status_code == 404 and _error(missing)["status"] == "NOT_FOUND"
        assert http.get("/v1/nothing/here/at-all").status_code == 404
        # 504: the deadline passed before the model could run
        late = http.post(
            "/v1/embeddings",
            json={"input": "x", "model": "embedder"},
            headers={"x-timeout-ms": "0"},
        )
        assert late.status_code == 504 and _error(late)["code"] == "deadline_exceeded"
    # 413 at once from Content-Length, before the body is read
    host, port = live_server.http_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n{"
        )
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.decode().partition("\r\n\r\n")
    assert head.split("\r\n")[0].split()[1] == "413", head
    assert json.loads(body)["error"]["param"] == "body"


def test_overload_is_429_with_retry_after(overload_server, scifact_corpus) -> None:
    texts = [f"{d['title']} {d['text']}" for d in scifact_corpus[:32]]

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(
            base_url=overload_server.http_url, timeout=120, limits=limits
        ) as http:
            return await asyncio.gather(
                *(
                    http.post("/v1/embeddings", json={"input": texts, "model": "embedder"})
                    for _ in range(60)
                )
            )

    responses = asyncio.run(burst())
    codes = {r.status_code for r in responses}
    assert codes <= {200, 429} and 429 in codes and 200 in codes, codes
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert _error(refused)["type"] == "rate_limit_error"


def test_http_and_grpc_calls_share_batches(fp32_server, texts) -> None:
    """One HTTP and one gRPC caller, one request in flight each: fewer batches than requests
    means some batch held a request from each transport."""
    server = fp32_server
    rounds = 40

    def counts() -> tuple[float, float]:
        return (
            metric(server.metrics_port, "twostage_batches_total", model="embedder"),
            metric(server.metrics_port, "twostage_batch_items_total", model="embedder"),
        )

    batches0, items0 = counts()

    async def over_grpc() -> None:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.InferenceStub(ch)
            for i in range(rounds):
                await stub.Embed(pb.EmbedRequest(texts=[texts[i % len(texts)]]), timeout=60)

    async def over_http() -> None:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as http:
            for i in range(rounds):
                r = await http.post(
                    "/v1/embeddings",
                    json={"input": texts[-1 - i % len(texts)], "model": "embedder"},
                )
                assert r.status_code == 200

    async def both() -> None:
        await asyncio.gather(over_grpc(), over_http())

    asyncio.run(both())
    batches1, items1 = counts()
    assert items1 - items0 == 2 * rounds
    assert batches1 - batches0 < 2 * rounds, (batches1 - batches0, items1 - items0)
