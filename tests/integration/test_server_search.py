"""Collections and Search on a real SciFact subset, checked against exact numpy search.

This server runs the fp32 variants: they are batch-invariant (to ~1e-6), so "the server's
answer" and "exact search + the same rerank, computed outside the server" can be compared
hit by hit.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from helpers import documents, upsert_all, vectors

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc

N_DOCS = 1000
N_QUERIES = 20
# rerank depth of the equality check (fp32 cross-encoder on 2 cores: keep CI short)
CANDIDATES = 30


@pytest.fixture(scope="module")
def subset(scifact_corpus, scifact_queries, scifact_qrels):
    """~1,000 documents that include every relevant document of the first 20 test queries."""
    queries = [q for q in scifact_queries if q["_id"] in scifact_qrels][:N_QUERIES]
    wanted = {doc for q in queries for doc in scifact_qrels[q["_id"]]}
    chosen = [d for d in scifact_corpus if d["_id"] in wanted]
    for d in scifact_corpus:
        if len(chosen) >= N_DOCS:
            break
        if d["_id"] not in wanted:
            chosen.append(d)
    return chosen, queries


@pytest.fixture(scope="module")
def indexed(fp32_server, subset):
    corpus, queries = subset
    with grpc.insecure_channel(fp32_server.address) as channel:
        stub = pb_grpc.CollectionsStub(channel)
        stub.CreateCollection(pb.CreateCollectionRequest(name="scifact"), timeout=30)
        docs = documents(corpus, metadata_key="shard")
        upsert_all(stub, "scifact", docs)
        inference = pb_grpc.InferenceStub(channel)
        doc_vectors = np.concatenate(
            [
                vectors(
                    inference.Embed(
                        pb.EmbedRequest(
                            texts=[d.text for d in docs[i : i + 100]],
                            input_type=pb.INPUT_TYPE_DOCUMENT,
                        ),
                        timeout=300,
                    )
                )
                for i in range(0, len(docs), 100)
            ]
        )
        query_vectors = vectors(
            inference.Embed(
                pb.EmbedRequest(texts=[q["text"] for q in queries], input_type=pb.INPUT_TYPE_QUERY),
                timeout=60,
            )
        )
    return docs, doc_vectors, queries, query_vectors


@pytest.fixture()
def channel(fp32_server):
    with grpc.insecure_channel(fp32_server.address) as ch:
        yield ch


def test_describe_and_list(channel, indexed) -> None:
    stub = pb_grpc.CollectionsStub(channel)
    info = stub.DescribeCollection(pb.DescribeCollectionRequest(name="scifact"), timeout=10)
    c = info.collection
    assert (c.count, c.dim, c.space) == (N_DOCS, 384, pb.SPACE_COSINE)
    assert (c.M, c.ef_construction) == (16, 200)
    assert c.embedder == "embedder" and c.embedder_source
    listed = stub.ListCollections(pb.ListCollectionsRequest(), timeout=10)
    names = [x.name for x in listed.collections]
    assert "scifact" in names


def test_hnsw_recall_at_10_against_exact(channel, indexed) -> None:
    docs, doc_vectors, queries, query_vectors = indexed
    search = pb_grpc.SearchStub(channel)
    recalls = []
    for q, qv in zip(queries, query_vectors, strict=True):
        exact = {docs[i].id for i in np.argsort(-(doc_vectors @ qv))[:10]}
        reply = search.Search(
            pb.SearchRequest(
                collection="scifact",
                query=q["text"],
                top_k=10,
                candidates=10,
                rerank=False,
                retrieval=pb.RETRIEVAL_DENSE,
            ),
            timeout=30,
        )
        assert not reply.reranked and reply.ranking == "dense"
        recalls.append(len(exact & {h.id for h in reply.hits}) / 10)
    assert np.mean(recalls) >= 0.99, recalls


def test_search_equals_exact_search_plus_rerank(channel, indexed) -> None:
    docs, doc_vectors, queries, query_vectors = indexed
    search = pb_grpc.SearchStub(channel)
    inference = pb_grpc.InferenceStub(channel)
    for q, qv in zip(queries, query_vectors, strict=True):
        sims = doc_vectors @ qv
        exact = np.argsort(-sims, kind="stable")[:CANDIDATES]
        # ef well above the candidate depth makes HNSW exact on 1k documents
        reply = search.Search(
            pb.SearchRequest(
                collection="scifact",
                query=q["text"],
                top_k=10,
                candidates=CANDIDATES,
                ef=400,
                rerank=True,
                retrieval=pb.RETRIEVAL_DENSE,
            ),
            timeout=60,
        )
        assert reply.reranked and len(reply.hits) == 10
        assert [h.rank for h in reply.hits] == list(range(1, 11))
        got_dense = {h.id: h.dense_score for h in reply.hits}
        for i in exact:
            if docs[i].id in got_dense:
                assert abs(got_dense[docs[i].id] - sims[i]) < 1e-4
        rerank = inference.Rerank(
            pb.RerankRequest(query=q["text"], documents=[docs[i].text for i in exact], top_n=10),
            timeout=60,
        )
        expected = [docs[exact[r.index]].id for r in rerank.results]
        assert [h.id for h in reply.hits] == expected, q["_id"]
        assert np.allclose(
            [h.rerank_score for h in reply.hits], [r.score for r in rerank.results], atol=1e-4
        )
        dense_rank = {docs[i].id: rank + 1 for rank, i in enumerate(exact)}
        assert all(h.dense_rank == dense_rank[h.id] for h in reply.hits)


def test_filter_keeps_only_matching_metadata(channel, indexed) -> None:
    _docs, _dv, queries, _qv = indexed
    reply = pb_grpc.SearchStub(channel).Search(
        pb.SearchRequest(
            collection="scifact",
            query=queries[0]["text"],
            top_k=5,
            rerank=False,
            filter={"shard": "1"},
        ),
        timeout=30,
    )
    assert len(reply.hits) == 5 and all(h.metadata["shard"] == "1" for h in reply.hits)


def test_get_delete_and_replace(channel, indexed) -> None:
    docs, _dv, _q, _qv = indexed
    stub = pb_grpc.CollectionsStub(channel)
    got = stub.Get(pb.GetRequest(collection="scifact", ids=[docs[0].id, "missing"]), timeout=10)
    assert [d.id for d in got.documents] == [docs[0].id] and list(got.not_found) == ["missing"]
    assert got.documents[0].text == docs[0].text
    stub.CreateCollection(pb.CreateCollectionRequest(name="scratch"), timeout=10)
    try:
        upsert_all(stub, "scratch", docs[:5])
        stub.Upsert(
            pb.UpsertRequest(
                collection="scratch",
                documents=[pb.Document(id=docs[0].id, text="replaced text about zebras")],
            ),
            timeout=30,
        )
        assert (
            stub.Get(pb.GetRequest(collection="scratch", ids=[docs[0].id]), timeout=10)
            .documents[0]
            .text
            == "replaced text about zebras"
        )
        deleted = stub.Delete(
            pb.DeleteRequest(collection="scratch", ids=[docs[1].id, "x"]), timeout=10
        )
        assert deleted.deleted == 1 and list(deleted.not_found) == ["x"]
        hits = (
            pb_grpc.SearchStub(channel)
            .Search(
                pb.SearchRequest(collection="scratch", query="zebras", top_k=4, rerank=False),
                timeout=30,
            )
            .hits
        )
        assert hits[0].id == docs[0].id and docs[1].id not in {h.id for h in hits}
        assert (
            stub.DescribeCollection(
                pb.DescribeCollectionRequest(name="scratch"), timeout=10
            ).collection.count
            == 4
        )
    finally:
        stub.DropCollection(pb.DropCollectionRequest(name="scratch"), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        stub.DescribeCollection(pb.DescribeCollectionRequest(name="scratch"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (pb.SearchRequest(collection="scifact", query=""), "INVALID_ARGUMENT", "query"),
        (pb.SearchRequest(collection="", query="q"), "INVALID_ARGUMENT", "collection"),
        (pb.SearchRequest(collection="bad name!", query="q"), "INVALID_ARGUMENT", "collection"),
        (pb.SearchRequest(collection="nope", query="q"), "NOT_FOUND", "nope"),
        (
            pb.SearchRequest(collection="scifact", query="q", top_k=50, candidates=20),
            "INVALID_ARGUMENT",
            "top_k",
        ),
        (
            pb.SearchRequest(collection="scifact", query="q", candidates=100_000),
            "INVALID_ARGUMENT",
            "candidates",
        ),
    ],
)
def test_bad_search_input(channel, indexed, request_, code, field) -> None:
    with pytest.raises(grpc.RpcError) as err:
        pb_grpc.SearchStub(channel).Search(request_, timeout=10)
    assert err.value.code().name == code and field in err.value.details()


def test_bad_collection_input(channel, indexed) -> None:
    stub = pb_grpc.CollectionsStub(channel)
    cases = [
        (
            lambda: stub.CreateCollection(pb.CreateCollectionRequest(name="scifact")),
            "ALREADY_EXISTS",
            "scifact",
        ),
        (
            lambda: stub.CreateCollection(pb.CreateCollectionRequest(name="-x")),
            "INVALID_ARGUMENT",
            "name",
        ),
        (
            lambda: stub.CreateCollection(pb.CreateCollectionRequest(name="m", M=1)),
            "INVALID_ARGUMENT",
            "M",
        ),
        (
            lambda: stub.Upsert(pb.UpsertRequest(collection="scifact")),
            "INVALID_ARGUMENT",
            "documents",
        ),
        (
            lambda: stub.Upsert(
                pb.UpsertRequest(
                    collection="scifact",
                    documents=[pb.Document(id="a", text="x"), pb.Document(id="a", text="y")],
                )
            ),
            "INVALID_ARGUMENT",
            "twice",
        ),
        (
            lambda: stub.Upsert(
                pb.UpsertRequest(collection="scifact", documents=[pb.Document(id="", text="x")])
            ),
            "INVALID_ARGUMENT",
            "id",
        ),
        (
            lambda: stub.Upsert(
                pb.UpsertRequest(collection="nope", documents=[pb.Document(id="a", text="x")])
            ),
            "NOT_FOUND",
            "nope",
        ),
        (lambda: stub.Delete(pb.DeleteRequest(collection="scifact")), "INVALID_ARGUMENT", "ids"),
        (lambda: stub.DropCollection(pb.DropCollectionRequest(name="nope")), "NOT_FOUND", "nope"),
    ]
    for call, code, field in cases:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code().name == code, (code, err.value.details())
        assert field in err.value.details()
