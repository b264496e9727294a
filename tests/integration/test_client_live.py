"""The Python clients against a real server on 127.0.0.1 (the session's ``live_server``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from twostage.clients import AsyncTwostageClient, TwostageClient
from twostage.clients.beir import corpus_path, document_text
from twostage.clients.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
)
from twostage.clients.results import Document

SCIFACT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "scifact"


def scifact_documents(n: int, chars: int = 600) -> list[Document]:
    """The first n SciFact abstracts (title + text, cut at ``chars`` to keep the tests quick)."""
    docs = []
    with corpus_path(SCIFACT).open(encoding="utf-8") as handle:
        for line in handle:
            rec = json.loads(line)
            text = document_text(rec["title"], rec["text"])[:chars]
            docs.append(Document(rec["_id"], text, {"title": rec["title"][:40]}))
            if len(docs) == n:
                break
    return docs


@pytest.fixture(scope="module")
def client(live_server):
    with TwostageClient(live_server.address, timeout=120) as c:
        yield c


def test_info_and_health(client) -> None:
    info = client.info()
    kinds = {m.kind for m in info.models}
    assert {"embedder", "reranker", "classifier"} <= kinds
    embedder = next(m for m in info.models if m.kind == "embedder" and m.is_default)
    assert embedder.dim == 384 and embedder.provider
    assert info.limits.max_texts_per_request > 0
    client.wait_until_serving(timeout=30)
    assert client.health() == "SERVING"
    assert client.health("twostage.v1.Search") == "SERVING"


def test_encode_gives_normalized_rows_and_async_agrees(client, live_server) -> None:
    texts = [d.text for d in scifact_documents(12)]
    vectors = client.encode(texts, batch_size=5)
    assert vectors.dtype == np.float32 and vectors.shape == (12, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    query = client.encode("what lowers fracture risk?", input_type="query")
    assert query.shape == (1, 384)

    async def via_async() -> np.ndarray:
        async with AsyncTwostageClient(live_server.address, timeout=120) as aclient:
            await aclient.wait_until_serving(timeout=30)
            return await aclient.encode(texts)

    import asyncio

    other = asyncio.run(via_async())
    # int8 activations are quantized per batch: different batching moves the last digits only
    assert np.min(np.sum(vectors * other, axis=1)) > 0.99


def test_rank_and_score_pairs_agree(client) -> None:
    docs = [d.text for d in scifact_documents(6, chars=300)]
    query = "cerebral white matter development in newborns"
    ranked = client.rank(query, docs)
    assert sorted(r.index for r in ranked) == list(range(6))
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True)
    pair_scores = client.score_pairs([(query, d) for d in docs])
    assert pair_scores.shape == (6,) and pair_scores.dtype == np.float32
    by_index = {r.index: r.score for r in ranked}
    np.testing.assert_allclose([by_index[i] for i in range(6)], pair_scores, atol=0.02)
    # Sent in two batches and merged: the best 3 overall, best first, texts echoed. int8
    # activations are quantized per batch, so near-ties may swap: compare with a tolerance.
    top = client.rank(query, docs, top_k=3, return_documents=True, batch_size=3)
    assert len(top) == 3 and [r.score for r in top] == sorted((r.score for r in top), reverse=True)
    assert all(r.document == docs[r.index] for r in top)
    for r in top:
        assert r.score == pytest.approx(by_index[r.index], abs=0.02)
    left_out = [by_index[i] for i in range(6) if i not in {r.index for r in top}]
    assert min(r.score for r in top) >= max(left_out) - 0.02


def test_classify_returns_probabilities(client) -> None:
    info = client.info()
    classifier = next(m for m in info.models if m.kind == "classifier")
    pairs = [("A man plays a guitar.", "A person makes music."), ("A dog runs.", "A cat sleeps.")]
    out = client.classify(pairs, model=classifier.name)
    assert len(out) == 2
    for c in out:
        assert set(c.probabilities) == set(classifier.labels)
        assert sum(c.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert c.label == max(c.probabilities, key=c.probabilities.get)
        assert c.score == pytest.approx(c.probabilities[c.label], abs=1e-6)


def test_collection_lifecycle_and_search(client) -> None:
    name = "client-lifecycle"
    docs = scifact_documents(30)
    created = client.create_collection(name)
    assert created.name == name and created.count == 0 and created.dim == 384
    with pytest.raises(AlreadyExistsError):
        client.create_collection(name)
    assert client.upsert(name, docs, batch_size=16).upserted == 30
    assert client.describe_collection(name).count == 30
    assert name in {c.name for c in client.list_collections()}

    got = client.get(name, [docs[3].id, "no-such-id", docs[1].id])
    assert [d.id for d in got.documents] == [docs[3].id, docs[1].id]
    assert got.documents[0].text == docs[3].text and got.not_found == ("no-such-id",)

    query = docs[5].text[:200]
    hits = client.search(name, query, top_k=5, candidates=10, rerank=True, retrieval="dense")
    assert len(hits) == 5 and [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(h.rerank_score is not None for h in hits)
    dense = client.search_detailed(
        name, query, top_k=5, candidates=10, rerank=False, retrieval="dense"
    )
    assert not dense.reranked and dense.hits[0].id == docs[5].id
    assert all(h.rerank_score is None for h in dense.hits)
    assert [h.dense_rank for h in dense.hits] == [1, 2, 3, 4, 5]
    assert dense.timings.total_ns > 0
    # the reranked hits are a reordering of the same candidates
    assert {h.id for h in hits} <= {
        h.id
        for h in client.search(
            name, query, top_k=10, candidates=10, rerank=False, retrieval="dense"
        )
    }
    # the default on an untuned collection: the hybrid first stage, no rerank
    default = client.search_detailed(name, query, top_k=5, candidates=10)
    assert not default.reranked and default.ranking.startswith("hybrid:adaptive(")
    assert "rerank:off(untuned collection)" in default.ranking
    assert default.hits[0].id == docs[5].id and default.hits[0].lexical_rank >= 1

    deleted = client.delete(name, [docs[0].id, "no-such-id"])
    assert deleted.deleted == 1 and deleted.not_found == ("no-such-id",)
    assert client.describe_collection(name).count == 29
    with pytest.raises(InvalidArgumentError) as err:
        client.search(name, query, top_k=30, candidates=10)
    assert "top_k" in err.value.message
    client.drop_collection(name)
    with pytest.raises(NotFoundError) as missing:
        client.search(name, query)
    assert name in missing.value.message
