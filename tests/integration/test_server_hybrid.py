"""Hybrid search through a live server on real SciFact documents: both channels, fusion, filters,
tuning, and the lexical channel's durability across SIGKILL."""

from __future__ import annotations

import itertools
import signal

import grpc
import numpy as np
import pytest
from conftest import start_server
from helpers import documents, upsert_all

from twostage.clients import TwostageClient
from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc
from twostage.server.fusion import fuse, rrf

N_DOCS = 400
N_TUNE = 30
NAME = "hybrid-scifact"


@pytest.fixture(scope="module")
def subset(scifact_corpus, scifact_queries, data_dir):
    """~400 documents holding every relevant document of 30 train queries."""
    qrels: dict[str, dict[str, int]] = {}
    with (data_dir / "scifact" / "qrels" / "train.tsv").open() as f:
        next(f)
        for line in f:
            q, d, g = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(g)
    queries = [q for q in scifact_queries if q["_id"] in qrels][:N_TUNE]
    wanted = {d for q in queries for d in qrels[q["_id"]]}
    chosen = [d for d in scifact_corpus if d["_id"] in wanted]
    chosen += [d for d in scifact_corpus if d["_id"] not in wanted][: N_DOCS - len(chosen)]
    return chosen, queries, qrels


@pytest.fixture(scope="module")
def indexed(live_server, subset):
    corpus, _, _ = subset
    with grpc.insecure_channel(live_server.address) as channel:
        stub = pb_grpc.CollectionsStub(channel)
        stub.CreateCollection(pb.CreateCollectionRequest(name=NAME), timeout=30)
        upsert_all(stub, NAME, documents(corpus, metadata_key="shard"))
    return corpus


@pytest.fixture()
def search(live_server):
    with grpc.insecure_channel(live_server.address) as channel:
        yield pb_grpc.SearchStub(channel).Search


def test_hybrid_hits_carry_both_channels_and_the_fused_score(search, indexed, subset) -> None:
    _, queries, _ = subset
    for q in queries[:5]:
        reply = search(
            pb.SearchRequest(
                collection=NAME,
                query=q["text"],
                top_k=40,
                candidates=40,
                dense_candidates=20,
                lexical_candidates=20,
                rerank=False,
                retrieval=pb.RETRIEVAL_HYBRID,
                fusion=pb.Fusion(method=pb.FUSION_METHOD_ZSCORE, dense_weight=0.5),
            ),
            timeout=30,
        )
        hits = list(reply.hits)
        assert reply.ranking == "hybrid:zscore(dense_weight=0.5)" and not reply.reranked
        # the union of two top-20 lists, each once
        assert 20 <= len(hits) <= 40 and len({h.id for h in hits}) == len(hits)
        dense_ranks = sorted(h.dense_rank for h in hits if h.dense_rank)
        lexical_ranks = sorted(h.lexical_rank for h in hits if h.lexical_rank)
        assert dense_ranks == list(range(1, 21)) and lexical_ranks == list(range(1, 21))
        # a score the channel did not return is filled, and no better than what it returned
        worst_dense = min(h.dense_score for h in hits if h.dense_rank)
        worst_lexical = min(h.lexical_score for h in hits if h.lexical_rank)
        for h in hits:
            assert h.dense_score != 0.0
            if not h.dense_rank:
                assert h.dense_score <= worst_dense + 1e-6
            if not h.lexical_rank:
                assert 0.0 <= h.lexical_score <= worst_lexical + 1e-6
        # the final score is the fusion of the returned channel scores, in order
        dense = np.array([h.dense_score for h in hits], dtype=np.float64)
        lexical = np.array([h.lexical_score for h in hits], dtype=np.float64)
        expected = fuse(dense, lexical, 0.5)
        assert np.allclose([h.score for h in hits], expected, atol=1e-4)
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert all(a.score >= b.score - 1e-6 for a, b in itertools.pairwise(hits))


def test_rrf_over_the_channel_ranks(search, indexed, subset) -> None:
    _, queries, _ = subset
    reply = search(
        pb.SearchRequest(
            collection=NAME,
            query=queries[0]["text"],
            top_k=30,
            candidates=30,
            dense_candidates=15,
            lexical_candidates=15,
            rerank=False,
            retrieval=pb.RETRIEVAL_HYBRID,
            fusion=pb.Fusion(method=pb.FUSION_METHOD_RRF, rrf_k=10),
        ),
        timeout=30,
    )
    hits = list(reply.hits)
    assert reply.ranking == "hybrid:rrf(k=10)"
    expected = rrf(
        [np.array([h.dense_rank for h in hits]), np.array([h.lexical_rank for h in hits])], k=10
    )
    assert np.allclose([h.score for h in hits], expected, atol=1e-6)


def test_lexical_mode_and_plain_text_queries(search, indexed) -> None:
    doc = indexed[3]
    reply = search(
        pb.SearchRequest(
            collection=NAME, query=doc["title"], top_k=5, retrieval=pb.RETRIEVAL_LEXICAL
        ),
        timeout=30,
    )
    assert reply.ranking.startswith("lexical") and reply.hits[0].id == doc["_id"]
    assert [h.lexical_rank for h in reply.hits] == [1, 2, 3, 4, 5]
    assert all(h.dense_score == 0.0 and h.dense_rank == 0 for h in reply.hits)
    assert all(h.score == h.lexical_score for h in reply.hits)
    for query in ['"unbalanced', "cells AND NOT mice", "NEAR(a b)", "gene*", "title: x (", "^"]:
        reply = search(
            pb.SearchRequest(collection=NAME, query=query, retrieval=pb.RETRIEVAL_LEXICAL),
            timeout=30,
        )
        assert reply.ranking.startswith("lexical")


def test_filter_applies_to_both_channels(search, indexed, subset) -> None:
    _, queries, _ = subset
    for retrieval in (pb.RETRIEVAL_HYBRID, pb.RETRIEVAL_LEXICAL, pb.RETRIEVAL_DENSE):
        reply = search(
            pb.SearchRequest(
                collection=NAME,
                query=queries[1]["text"],
                top_k=20,
                candidates=50,
                retrieval=retrieval,
                filter={"shard": "2"},
            ),
            timeout=30,
        )
        assert reply.hits and all(h.metadata["shard"] == "2" for h in reply.hits), retrieval


def test_delete_removes_a_document_from_both_channels(live_server, indexed) -> None:
    doc = indexed[5]
    with TwostageClient(live_server.address) as client:
        client.create_collection("hybrid-delete")
        client.upsert(
            "hybrid-delete",
            [{"id": d["_id"], "text": f"{d['title']} {d['text']}"} for d in indexed[:40]],
        )
        found = client.search("hybrid-delete", doc["title"], top_k=5, retrieval="lexical")
        assert found[0].id == doc["_id"]
        client.delete("hybrid-delete", [doc["_id"]])
        for retrieval in ("lexical", "dense", "hybrid"):
            hits = client.search(
                "hybrid-delete", doc["title"], top_k=39, candidates=39, retrieval=retrieval
            )
            assert doc["_id"] not in {h.id for h in hits}, retrieval
        client.drop_collection("hybrid-delete")


def test_tune_stores_a_ranking_that_search_then_uses(live_server, indexed, subset) -> None:
    """Tuning fits the first stage and the rerank stage; the test reranker (a fixed-seed random
    head) gains nothing, so its fitted verdict is off and a default Search skips it."""
    _, queries, qrels = subset
    labelled = [(q["text"], {d: float(g) for d, g in qrels[q["_id"]].items()}) for q in queries]
    with TwostageClient(live_server.address) as client:
        before = client.describe_collection(NAME)
        assert not before.tuned and before.ranking.startswith("hybrid:adaptive(")
        result = client.tune(NAME, labelled, rerank=True)
        assert result.stored and result.queries == N_TUNE
        names = [m.ranking for m in result.modes]
        assert {"dense", "lexical", "hybrid:rrf(k=60)"} <= set(names)
        assert any(n.startswith("hybrid:zscore(dense_weight=") for n in names)
        assert any("+rerank:fused(" in n for n in names)
        chosen = [m for m in result.modes if m.chosen]
        assert len(chosen) == 1 and chosen[0].ranking == result.ranking
        best = max(m.ndcg10 for m in result.modes if m.queries == N_TUNE)
        assert chosen[0].ndcg10 == pytest.approx(best)
        dense = next(m for m in result.modes if m.ranking == "dense")
        assert dense.p_value == 1.0 and dense.delta_vs_dense == 0.0
        after = client.describe_collection(NAME)
        assert after.tuned and after.ranking.startswith(result.ranking.split("+")[0])
        reply = client.search_detailed(NAME, queries[0]["text"], top_k=10)
        assert reply.ranking == after.ranking
        assert not reply.reranked and reply.ranking.endswith("+rerank:off(tuned: no gain)")
        # an explicit request still wins over the tuned default
        forced = client.search_detailed(NAME, queries[0]["text"], top_k=10, retrieval="dense")
        assert forced.ranking.startswith("dense")


def test_bad_hybrid_input(live_server, indexed) -> None:
    with TwostageClient(live_server.address) as client:
        client.create_collection("dense-only", analyzer="none")
        client.upsert("dense-only", [{"id": "a", "text": "alpha beta"}])
        assert (
            client.describe_collection("dense-only").ranking
            == "dense+rerank:off(untuned collection)"
        )
        assert client.search_detailed("dense-only", "alpha").ranking.startswith("dense")
    with grpc.insecure_channel(live_server.address) as channel:
        search = pb_grpc.SearchStub(channel).Search
        cases = [
            (
                pb.SearchRequest(collection=NAME, query="q", retrieval=9),
                "INVALID_ARGUMENT",
                "retrieval",
            ),
            (
                pb.SearchRequest(collection=NAME, query="q", fusion=pb.Fusion(dense_weight=1.5)),
                "INVALID_ARGUMENT",
                "fusion.dense_weight",
            ),
            (
                pb.SearchRequest(collection=NAME, query="q", fusion=pb.Fusion(method=7)),
                "INVALID_ARGUMENT",
                "fusion.method",
            ),
            (
                pb.SearchRequest(collection=NAME, query="q", candidates=10, rerank_depth=20),
                "INVALID_ARGUMENT",
                "rerank_depth",
            ),
            (
                pb.SearchRequest(collection=NAME, query="q", lexical_candidates=100_000),
                "INVALID_ARGUMENT",
                "lexical_candidates",
            ),
            (
                pb.SearchRequest(
                    collection="dense-only", query="q", retrieval=pb.RETRIEVAL_LEXICAL
                ),
                "FAILED_PRECONDITION",
                "no lexical channel",
            ),
        ]
        for request, code, text in cases:
            with pytest.raises(grpc.RpcError) as err:
                search(request, timeout=10)
            assert err.value.code().name == code and text in err.value.details(), text
        collections = pb_grpc.CollectionsStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            collections.Tune(
                pb.TuneRequest(
                    collection=NAME, queries=[pb.LabeledQuery(query="q", relevant={"a": 1})]
                ),
                timeout=10,
            )
        assert err.value.code().name == "INVALID_ARGUMENT" and "queries" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            collections.CreateCollection(pb.CreateCollectionRequest(name="x", analyzer=9))
        assert err.value.code().name == "INVALID_ARGUMENT" and "analyzer" in err.value.details()
        collections.DropCollection(pb.DropCollectionRequest(name="dense-only"), timeout=10)


def test_lexical_results_survive_sigkill(tmp_path, server_models) -> None:
    models = {"embedder": server_models["embedder"]}
    server = start_server(tmp_path / "a", models, data_dir=tmp_path / "data")
    try:
        with TwostageClient(server.address) as client:
            client.create_collection("durable")
            client.upsert(
                "durable",
                [
                    {"id": "quokka", "text": "Quokkas photographing themselves on Rottnest"},
                    {"id": "other", "text": "An unrelated abstract about kidney cells"},
                ],
            )
    finally:
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    server = start_server(tmp_path / "b", models, data_dir=tmp_path / "data")
    try:
        with TwostageClient(server.address) as client:
            hits = client.search("durable", "photographed quokka", top_k=1, retrieval="lexical")
            assert [h.id for h in hits] == ["quokka"] and hits[0].lexical_score > 0
    finally:
        server.stop()
