"""Inference and Info RPCs end to end through a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
from helpers import metric, vectors

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc
from twostage.server import limits
from twostage.server.runtime import load_runtime
from twostage.server.runtime.tokenizer import CHARS_PER_TOKEN


@pytest.fixture(scope="module")
def channel(live_server):
    with grpc.insecure_channel(live_server.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def inference(channel):
    return pb_grpc.InferenceStub(channel)


@pytest.fixture(scope="module")
def passages(scifact_corpus) -> list[str]:
    return [f"{d['title']} {d['text']}" for d in scifact_corpus[:64]]


def test_embed_matches_the_runtime(inference, embedder_bundle: Path, passages) -> None:
    reply = inference.Embed(pb.EmbedRequest(texts=passages[:16]), timeout=60)
    got = vectors(reply)
    runtime = load_runtime(embedder_bundle)
    want = runtime.embed(passages[:16])
    assert got.shape == want.shape == (16, reply.dim)
    assert reply.model == "embedder"
    # int8 activations are quantized with one scale per batch, so how the batcher splits the
    # texts moves the vectors slightly: hold them to the export's int8 thresholds
    cos = np.sum(got * want, axis=1)
    assert cos.mean() > 0.99 and cos.min() > 0.97, (cos.mean(), cos.min())
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)
    md = reply.metadata
    assert md.total_ns >= md.inference_ns > 0 and md.tokenize_ns > 0 and md.tokens > 16


def test_concurrent_single_embeds_are_batched(fp32_server, passages) -> None:
    server = fp32_server

    def batches_run() -> float:
        return metric(server.metrics_port, "twostage_batches_total", model="embedder")

    batches_before = batches_run()

    async def run() -> tuple[list[np.ndarray], np.ndarray]:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.InferenceStub(ch)
            singles = await asyncio.gather(
                *(stub.Embed(pb.EmbedRequest(texts=[t]), timeout=60) for t in passages)
            )
            together = await stub.Embed(pb.EmbedRequest(texts=passages), timeout=60)
        return [vectors(r)[0] for r in singles], vectors(together)

    singles, together = asyncio.run(run())
    batches = batches_run() - batches_before
    assert np.allclose(np.stack(singles), together, atol=1e-5)
    # 64 calls of one text + 1 call of 64 texts ran in fewer model batches than calls
    assert 2 <= batches < 64, batches


def test_rerank_order_equals_sorted_scorepairs(inference, scifact_queries, passages) -> None:
    query = scifact_queries[0]["text"]
    docs = passages[:20]
    reply = inference.Rerank(
        pb.RerankRequest(query=query, documents=docs, return_documents=True), timeout=60
    )
    assert [r.document for r in reply.results] == [docs[r.index] for r in reply.results]
    scores = [r.score for r in reply.results]
    assert scores == sorted(scores, reverse=True)
    assert sorted(r.index for r in reply.results) == list(range(20))
    pairs = inference.ScorePairs(
        pb.ScorePairsRequest(
            pairs=[pb.TextPair(text_a=query, text_b=d) for d in docs], model="reranker"
        ),
        timeout=60,
    )
    pair_scores = np.array([s.score for s in pairs.scores])
    assert np.all((pair_scores > 0) & (pair_scores < 1)), "sigmoid scores lie in (0, 1)"
    order = [r.index for r in reply.results]
    assert np.all(np.diff(pair_scores[order]) <= 1e-3)
    top = inference.Rerank(pb.RerankRequest(query=query, documents=docs, top_n=3), timeout=60)
    assert [r.index for r in top.results] == order[:3]
    assert all(r.document == "" for r in top.results)


def test_classifier_returns_a_distribution(inference) -> None:
    pairs = [
        pb.TextPair(text_a="A man is playing a guitar.", text_b="A man plays an instrument."),
        pb.TextPair(text_a="A woman is slicing onions.", text_b="Nobody is cooking."),
    ]
    reply = inference.ScorePairs(pb.ScorePairsRequest(pairs=pairs, model="classifier"), timeout=60)
    assert list(reply.label_names) == ["contradiction", "entailment", "neutral"]
    for score in reply.scores:
        probs = np.array(score.probabilities)
        assert probs.shape == (3,) and abs(probs.sum() - 1.0) < 1e-5
        assert score.label == reply.label_names[int(np.argmax(probs))]
        assert score.label_index == int(np.argmax(probs))
        assert abs(score.score - probs.max()) < 1e-6


def test_get_info_lists_models_and_limits(channel) -> None:
    info = pb_grpc.InfoStub(channel).GetInfo(pb.GetInfoRequest(), timeout=10)
    kinds = {m.name: m for m in info.models}
    assert kinds["embedder"].kind == pb.MODEL_KIND_EMBEDDER and kinds["embedder"].dim == 384
    assert kinds["embedder"].variant == "int8" and kinds["embedder"].max_length == 256
    assert kinds["embedder"].provider == "CPUExecutionProvider"
    assert kinds["reranker"].kind == pb.MODEL_KIND_RERANKER
    assert kinds["classifier"].kind == pb.MODEL_KIND_CLASSIFIER
    assert list(kinds["classifier"].labels) == ["contradiction", "entailment", "neutral"]
    assert info.limits.max_texts_per_request > 0 and info.device == "cpu"
    assert info.limits.max_filter_keys == limits.MAX_FILTER_KEYS
    assert info.limits.max_metadata_value_bytes == limits.MAX_METADATA_VALUE_BYTES
    longest = max(m.max_length for m in info.models)
    assert info.limits.max_tokenized_chars == longest * CHARS_PER_TOKEN


@pytest.mark.parametrize(
    ("call", "code", "field"),
    [
        (lambda s: s.Embed(pb.EmbedRequest(texts=[])), grpc.StatusCode.INVALID_ARGUMENT, "texts"),
        (
            lambda s: s.Embed(pb.EmbedRequest(texts=["x"] * 10_000)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "texts",
        ),
        (
            lambda s: s.Embed(pb.EmbedRequest(texts=["x"], model="nope")),
            grpc.StatusCode.NOT_FOUND,
            "nope",
        ),
        (
            lambda s: s.Embed(pb.EmbedRequest(texts=["x"], model="reranker")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not an embedder",
        ),
        (
            lambda s: s.Rerank(pb.RerankRequest(query=" ", documents=["a"])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "query",
        ),
        (
            lambda s: s.Rerank(pb.RerankRequest(query="q", documents=[])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "documents",
        ),
        (
            lambda s: s.Rerank(pb.RerankRequest(query="q", documents=["a"], model="classifier")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not a reranker",
        ),
        (
            lambda s: s.ScorePairs(pb.ScorePairsRequest()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "pairs",
        ),
    ],
)
def test_bad_inference_input(inference, call, code, field) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call(inference)
    assert err.value.code() == code
    assert field in err.value.details()
    assert "Traceback" not in err.value.details()
