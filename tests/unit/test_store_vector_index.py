"""HnswIndex against exact search on real SciFact embeddings: recall, scores, persistence, deletes,
slot reuse, growth, filters, corrupt files and the readers-writer lock."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest
from test_store_corpus import Corpus, exact_top_k, load_corpus

from twostage.server.store.vector_index import (
    DEFAULT_EF,
    CorruptIndex,
    ExactIndex,
    HnswIndex,
    ReadWriteLock,
    VectorIndex,
)

K = 10
WAIT_S = 10.0


@pytest.fixture(scope="module")
def corpus(request: pytest.FixtureRequest) -> Corpus:
    return load_corpus(request.config)


@pytest.fixture(scope="module")
def built(corpus: Corpus) -> HnswIndex:
    """Default parameters, labels = row numbers + 1000 (labels are not positions)."""
    index = HnswIndex(corpus.dim, "cosine")
    index.add(np.arange(len(corpus.ids)) + 1000, corpus.embeddings)
    return index


def recall(index: VectorIndex, corpus: Corpus, truth: list[set[int]], k: int = K, **kw) -> float:
    hits = 0
    for query, expected in zip(corpus.queries, truth, strict=True):
        labels, _ = index.search(query, k, **kw)
        hits += len(set(labels.tolist()) & expected)
    return hits / (k * len(truth))


def test_both_indexes_implement_the_interface(corpus: Corpus) -> None:
    assert isinstance(HnswIndex(corpus.dim), VectorIndex)
    assert isinstance(ExactIndex(corpus.dim), VectorIndex)


def test_exact_index_is_exact(corpus: Corpus) -> None:
    exact = ExactIndex(corpus.dim, "cosine")
    exact.add(np.arange(len(corpus.ids)), corpus.embeddings)
    truth = exact_top_k(corpus, K)
    assert recall(exact, corpus, truth) == 1.0
    labels, scores = exact.search(corpus.queries[0], K)
    np.testing.assert_allclose(scores, corpus.embeddings[labels] @ corpus.queries[0], atol=1e-5)
    assert np.all(np.diff(scores) <= 0)


@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_hnsw_recall_at_default_ef(corpus: Corpus, space: str) -> None:
    index = HnswIndex(corpus.dim, space)
    index.add(np.arange(len(corpus.ids)), corpus.embeddings)
    exact = ExactIndex(corpus.dim, space)
    exact.add(np.arange(len(corpus.ids)), corpus.embeddings)
    truth = [set(exact.search(q, K)[0].tolist()) for q in corpus.queries]
    assert index.ef == DEFAULT_EF
    assert recall(index, corpus, truth) >= 0.99


@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_scores_are_similarities_higher_is_better(corpus: Corpus, space: str) -> None:
    index = HnswIndex(corpus.dim, space)
    index.add(np.arange(200), corpus.embeddings[:200])
    query = corpus.queries[3]
    labels, scores = index.search(query, 5)
    assert labels.dtype == np.int64 and scores.dtype == np.float32
    docs = corpus.embeddings[labels]
    expected = -((docs - query) ** 2).sum(axis=1) if space == "l2" else docs @ query
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    assert np.all(np.diff(scores) <= 1e-6)


def test_per_request_ef_and_ef_at_least_k(corpus: Corpus, built: HnswIndex) -> None:
    truth = exact_top_k(corpus, 50, labels=np.arange(len(corpus.ids)) + 1000)
    # k near the default ef: hnswlib searches with max(ef, k), so all 50 come back. Recall at a
    # breadth barely above k is good but not exact (a multi-threaded build is not deterministic:
    # 0.990 and 0.9898 were both seen), and a wider per-request ef closes the gap.
    assert all(built.search(q, 50)[0].shape == (50,) for q in corpus.queries[:5])
    assert recall(built, corpus, truth, k=50) >= 0.98
    assert recall(built, corpus, truth, k=50, ef=200) >= 0.995
    low = HnswIndex(corpus.dim, ef=1)
    low.add(np.arange(len(corpus.ids)) + 1000, corpus.embeddings)
    truth10 = exact_top_k(corpus, K, labels=np.arange(len(corpus.ids)) + 1000)
    assert recall(low, corpus, truth10, ef=200) >= 0.99  # a wider search per request
    assert low.ef == 1  # ...without changing the shared default


def test_k_beyond_count_and_empty_index(corpus: Corpus) -> None:
    empty = HnswIndex(corpus.dim)
    labels, scores = empty.search(corpus.queries[0], 10)
    assert labels.shape == (0,) and scores.shape == (0,)
    small = HnswIndex(corpus.dim)
    small.add([7, 8, 9], corpus.embeddings[:3])
    labels, _ = small.search(corpus.queries[0], 10)
    assert sorted(labels.tolist()) == [7, 8, 9]
    small.delete([8])
    assert sorted(small.search(corpus.queries[0], 10)[0].tolist()) == [7, 9]


def test_save_load_round_trip_sets_ef_after_load(
    corpus: Corpus, built: HnswIndex, tmp_path: Path
) -> None:
    info = built.save(tmp_path / "index.bin")
    assert info["count"] == len(corpus.ids) and len(info["sha256"]) == 64
    assert not list(tmp_path.glob(".*.tmp"))
    wide = HnswIndex.load(tmp_path / "index.bin", corpus.dim, "cosine", ef=77, info=info)
    assert wide.ef == 77 and wide._index.ef == 77  # hnswlib does not save ef: set after load
    loaded = HnswIndex.load(tmp_path / "index.bin", corpus.dim, "cosine", ef=built.ef, info=info)
    assert loaded.count() == built.count() and loaded.M == built.M
    for query in corpus.queries[:30]:
        a_labels, a_scores = built.search(query, K)
        b_labels, b_scores = loaded.search(query, K)
        np.testing.assert_array_equal(a_labels, b_labels)
        np.testing.assert_allclose(a_scores, b_scores, atol=1e-6)


def test_load_without_info_counts_live_labels(corpus: Corpus, tmp_path: Path) -> None:
    index = HnswIndex(corpus.dim)
    index.add(np.arange(300), corpus.embeddings[:300])
    index.delete(np.arange(0, 300, 3))
    index.save(tmp_path / "i.bin")
    loaded = HnswIndex.load(tmp_path / "i.bin", corpus.dim, "cosine")
    assert loaded.count() == 200


def test_delete_removes_and_readd_reuses_slots(corpus: Corpus) -> None:
    n = len(corpus.ids)
    index = HnswIndex(corpus.dim)
    index.add(np.arange(n), corpus.embeddings)
    slots, capacity = index.slots, index.capacity
    gone = np.arange(0, n, 4)
    assert index.delete(gone) == gone.size
    assert index.delete(gone[:10]) == 0  # idempotent
    assert index.count() == n - gone.size
    live = np.setdiff1d(np.arange(n), gone)
    for query in corpus.queries:
        labels, _ = index.search(query, K)
        assert not set(labels.tolist()) & set(gone.tolist())
    truth = [
        set(live[np.argsort(-(corpus.embeddings[live] @ q))[:K]].tolist()) for q in corpus.queries
    ]
    assert recall(index, corpus, truth) >= 0.98
    # Deleted labels come back (their vectors re-upserted) without growing the index...
    index.add(gone[: gone.size // 2], corpus.embeddings[gone[: gone.size // 2]])
    # ...and new labels take the remaining deleted slots.
    fresh = np.arange(n, n + gone.size - gone.size // 2)
    index.add(fresh, corpus.embeddings[gone[gone.size // 2 :]])
    assert index.count() == n and index.slots == slots and index.capacity == capacity
    relabel = dict(zip(gone[gone.size // 2 :].tolist(), fresh.tolist(), strict=True))
    truth = [{relabel.get(x, x) for x in t} for t in exact_top_k(corpus, K)]
    assert recall(index, corpus, truth) >= 0.98


def test_upsert_of_present_label_replaces_its_vector(corpus: Corpus) -> None:
    index = HnswIndex(corpus.dim)
    index.add(np.arange(500), corpus.embeddings[:500])
    target = corpus.embeddings[900]
    assert 5 not in index.search(target, 3)[0].tolist()
    index.add([5], target[None, :])
    labels, scores = index.search(target, 1)
    assert labels.tolist() == [5] and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert index.count() == 500


def test_grows_geometrically_when_full(corpus: Corpus) -> None:
    index = HnswIndex(corpus.dim, capacity=1)
    start = index.capacity
    capacities = []
    for lo in range(0, len(corpus.ids), 100):
        index.add(np.arange(lo, lo + 100), corpus.embeddings[lo : lo + 100])
        capacities.append(index.capacity)
    assert index.count() == len(corpus.ids) and start < len(corpus.ids)
    grown = sorted(set(capacities))
    assert all(b >= 2 * a for a, b in itertools.pairwise(grown))
    assert recall(index, corpus, exact_top_k(corpus, K)) >= 0.99


def test_label_filter(corpus: Corpus, built: HnswIndex) -> None:
    labels = np.arange(len(corpus.ids)) + 1000
    keep = np.array([m["half"] == "0" for m in corpus.metadatas])
    allowed = set(labels[keep].tolist())
    sub = np.flatnonzero(keep)
    truth = [
        set(labels[sub[np.argsort(-(corpus.embeddings[sub] @ q))[:K]]].tolist())
        for q in corpus.queries
    ]
    got = recall(built, corpus, truth, filter=allowed.__contains__, max_matches=len(allowed))
    assert got >= 0.98
    few = {1003, 1500, 1999}
    found, _ = built.search(corpus.queries[0], K, filter=few.__contains__, max_matches=len(few))
    assert set(found.tolist()) <= few and found.size >= 1
    # Without the match count hnswlib cannot return k=10; the index finds the most it can give.
    found, scores = built.search(corpus.queries[0], K, filter=few.__contains__)
    assert set(found.tolist()) == few and np.all(np.diff(scores) <= 0)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip", "wrong_dim"])
def test_corrupt_files_are_refused(
    corpus: Corpus, built: HnswIndex, tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "index.bin"
    info = built.save(path)
    data = path.read_bytes()
    dim = corpus.dim
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(1).bytes(len(data)))
    elif damage == "flip":
        path.write_bytes(data[:5000] + bytes([data[5000] ^ 0xFF]) + data[5001:])
    else:
        dim = corpus.dim // 2
    with pytest.raises(CorruptIndex):
        HnswIndex.load(path, dim, "cosine", info=info)
    if damage in ("truncate", "garbage", "wrong_dim"):
        with pytest.raises(CorruptIndex):  # the header check catches these without metadata
            HnswIndex.load(path, dim, "cosine")


def test_exact_index_save_load(corpus: Corpus, tmp_path: Path) -> None:
    exact = ExactIndex(corpus.dim, "ip")
    exact.add(np.arange(100) * 3, corpus.embeddings[:100])
    exact.delete([3, 6])
    info = exact.save(tmp_path / "e.npz")
    loaded = ExactIndex.load(tmp_path / "e.npz", corpus.dim, "ip", info=info)
    assert loaded.count() == 98
    for query in corpus.queries[:5]:
        np.testing.assert_array_equal(exact.search(query, 7)[0], loaded.search(query, 7)[0])


def test_searches_run_while_writes_happen(corpus: Corpus) -> None:
    n = len(corpus.ids)
    index = HnswIndex(corpus.dim, capacity=1)
    index.add(np.arange(200), corpus.embeddings[:200])
    errors: list[BaseException] = []
    done = threading.Event()

    def searcher() -> None:
        try:
            while not done.is_set():
                for query in corpus.queries[:20]:
                    labels, _ = index.search(query, K)
                    assert labels.min() >= 0 and labels.max() < n
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for lo in range(200, n, 50):  # adds force resizes while searches run
            index.add(np.arange(lo, lo + 50), corpus.embeddings[lo : lo + 50])
            index.delete([lo - 100])
    finally:
        done.set()
        for t in threads:
            t.join(WAIT_S)
    assert not errors
    assert index.count() == n - len(range(200, n, 50))


def test_read_write_lock_excludes_writers_from_readers() -> None:
    lock = ReadWriteLock()
    entered = threading.Event()

    def writer() -> None:
        with lock.write():
            entered.set()

    with lock.read(), lock.read():  # readers share
        thread = threading.Thread(target=writer)
        thread.start()
        assert not entered.wait(0.2)  # the writer waits while readers hold the lock
    assert entered.wait(WAIT_S)
    thread.join(WAIT_S)
