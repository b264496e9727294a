"""DocumentStore: SQLite in WAL mode, one transaction per batch, stable labels, tombstones that
replay, metadata filters, and reads from other threads while a write is open."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_store_corpus import Corpus, load_corpus

from twostage.server.errors import Unavailable
from twostage.server.store.documents import DocumentStore

WAIT_S = 10.0


@pytest.fixture(scope="module")
def corpus(request: pytest.FixtureRequest) -> Corpus:
    return load_corpus(request.config)


@pytest.fixture
def store(tmp_path: Path, corpus: Corpus) -> Iterator[DocumentStore]:
    s = DocumentStore(tmp_path / "documents.sqlite", corpus.dim)
    yield s
    s.close()


def put(store: DocumentStore, corpus: Corpus, rows: range | list[int]) -> tuple[int, np.ndarray]:
    rows = list(rows)
    result = store.upsert(
        [corpus.ids[i] for i in rows],
        [corpus.texts[i] for i in rows],
        [corpus.metadatas[i] for i in rows],
        corpus.embeddings[rows],
    )
    return result.seq, result.labels


def test_wal_mode_and_full_sync(store: DocumentStore) -> None:
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_upsert_then_get_in_request_order(store: DocumentStore, corpus: Corpus) -> None:
    seq, labels = put(store, corpus, range(50))
    assert seq == 1 and store.last_seq == 1 and store.count() == 50
    assert labels.dtype == np.int64 and len(set(labels.tolist())) == 50
    asked = [corpus.ids[7], "no-such-id", corpus.ids[3]]
    docs = store.get(asked, with_embeddings=True)
    assert docs[1] is None
    assert [d.id for d in (docs[0], docs[2])] == [corpus.ids[7], corpus.ids[3]]
    assert docs[0].text == corpus.texts[7] and docs[0].metadata == corpus.metadatas[7]
    np.testing.assert_array_equal(docs[0].embedding, corpus.embeddings[7])  # float32, lossless
    assert docs[0].label == int(labels[7]) and docs[0].seq == 1


def test_labels_are_stable_per_id_and_seq_grows(store: DocumentStore, corpus: Corpus) -> None:
    _, first = put(store, corpus, range(10))
    seq, again = put(store, corpus, [5, 6, 20])
    assert seq == 2
    assert again[:2].tolist() == first[5:7].tolist()  # re-upsert keeps the label
    assert again[2] not in first.tolist()
    deleted = store.delete([corpus.ids[5]])
    assert deleted.seq == 3 and deleted.labels == [int(first[5])]
    _, revived = put(store, corpus, [5])
    assert revived.tolist() == [int(first[5])]  # a deleted id comes back under its label
    assert store.last_seq == 4 and store.count() == 11


def test_delete_reports_missing_and_leaves_a_tombstone(
    store: DocumentStore, corpus: Corpus
) -> None:
    _, labels = put(store, corpus, range(20))
    result = store.delete([corpus.ids[2], "nope", corpus.ids[4], corpus.ids[2]])
    assert result.labels == [int(labels[2]), int(labels[4])]
    assert result.missing == ["nope"]
    assert store.get([corpus.ids[2]]) == [None] and store.count() == 18
    nothing = store.delete(["nope", corpus.ids[2]])  # nothing live: no new sequence number
    assert nothing.seq == result.seq and nothing.labels == []
    changes = list(store.changes_since(1))
    assert [(c.label, c.deleted, c.embedding) for c in changes] == [
        (int(labels[2]), True, None),
        (int(labels[4]), True, None),
    ]
    # The tombstone keeps no content.
    raw = store._writer.execute(
        "SELECT text, embedding FROM documents WHERE label = ?", (int(labels[2]),)
    ).fetchone()
    assert raw == ("", None)


def test_changes_since_gives_each_labels_latest_state_in_seq_order(
    store: DocumentStore, corpus: Corpus
) -> None:
    put(store, corpus, range(30))  # seq 1
    put(store, corpus, [3, 4])  # seq 2
    store.delete([corpus.ids[4], corpus.ids[9]])  # seq 3
    put(store, corpus, [40])  # seq 4
    changes = list(store.changes_since(1))
    assert [c.seq for c in changes] == sorted(c.seq for c in changes)
    latest = {c.id: (c.seq, c.deleted) for c in changes}
    assert latest == {
        corpus.ids[3]: (2, False),
        corpus.ids[4]: (3, True),
        corpus.ids[9]: (3, True),
        corpus.ids[40]: (4, False),
    }
    np.testing.assert_array_equal(
        next(c.embedding for c in changes if c.id == corpus.ids[3]), corpus.embeddings[3]
    )
    assert list(store.changes_since(4)) == []


def test_get_by_labels_returns_live_documents(store: DocumentStore, corpus: Corpus) -> None:
    _, labels = put(store, corpus, range(120))
    store.delete([corpus.ids[0]])
    wanted = [*labels[:100].tolist(), 10**9]
    found = store.get_by_labels(wanted)
    assert set(found) == set(labels[1:100].tolist())
    assert found[int(labels[42])].id == corpus.ids[42]
    assert found[int(labels[42])].text == corpus.texts[42]


def test_iter_all_streams_live_embeddings(store: DocumentStore, corpus: Corpus) -> None:
    _, labels = put(store, corpus, range(300))
    store.delete([corpus.ids[i] for i in range(0, 300, 10)])
    chunks = list(store.iter_all(batch_size=64))
    assert len(chunks) > 1
    got_labels = np.concatenate([c[0] for c in chunks])
    got = np.concatenate([c[1] for c in chunks])
    keep = [i for i in range(300) if i % 10]
    assert got_labels.tolist() == labels[keep].tolist()
    np.testing.assert_array_equal(got, corpus.embeddings[keep])


def test_metadata_filters(store: DocumentStore, corpus: Corpus) -> None:
    _, labels = put(store, corpus, range(400))
    meta = corpus.metadatas[:400]

    def expected(f: dict[str, str]) -> list[int]:
        return sorted(
            int(labels[i]) for i, m in enumerate(meta) if all(m[k] == v for k, v in f.items())
        )

    for f in ({"half": "1"}, {"week": "d3"}, {"half": "0", "week": "d2"}, {"rare": "yes"}):
        assert store.labels_matching(f).tolist() == expected(f)
        got_labels, vectors = store.embeddings_matching(f)
        order = np.argsort(got_labels)
        assert got_labels[order].tolist() == expected(f)
        rows = [int(np.flatnonzero(labels == x)[0]) for x in got_labels]
        np.testing.assert_array_equal(vectors, corpus.embeddings[rows])
    assert store.labels_matching({"half": "2"}).size == 0
    assert store.labels_matching({"nokey": "1"}).size == 0
    subset = labels[:50]
    kept = store.filter_labels(subset, {"week": "d3"})
    assert kept.tolist() == [
        int(x) for x, m in zip(subset, meta[:50], strict=True) if m["week"] == "d3"
    ]
    # Changed metadata and deletes are reflected at once.
    target = next(i for i, m in enumerate(meta) if m["week"] == "d3")
    store.upsert([corpus.ids[target]], ["x"], [{"week": "d9"}], corpus.embeddings[[target]])
    assert int(labels[target]) not in store.labels_matching({"week": "d3"}).tolist()
    assert store.labels_matching({"week": "d9"}).tolist() == [int(labels[target])]
    store.delete([corpus.ids[target]])
    assert store.labels_matching({"week": "d9"}).size == 0


def test_a_failed_batch_leaves_nothing_behind(store: DocumentStore, corpus: Corpus) -> None:
    put(store, corpus, range(5))
    with pytest.raises((sqlite3.Error, ValueError)):
        # The second row's text cannot be bound: the whole transaction rolls back.
        store.upsert(
            [corpus.ids[10], corpus.ids[11]],
            ["fine", ["not", "text"]],  # type: ignore[list-item]
            [{}, {}],
            corpus.embeddings[[10, 11]],
        )
    assert store.last_seq == 1 and store.count() == 5
    assert store.get([corpus.ids[10]]) == [None]
    seq, _ = put(store, corpus, [10])
    assert seq == 2


def test_reopen_restores_state(tmp_path: Path, corpus: Corpus) -> None:
    first = DocumentStore(tmp_path / "d.sqlite", corpus.dim)
    put(first, corpus, range(40))
    first.delete([corpus.ids[1]])
    first.close()
    with pytest.raises(Unavailable):
        first.get([corpus.ids[0]])
    second = DocumentStore(tmp_path / "d.sqlite", corpus.dim)
    try:
        assert second.last_seq == 2 and second.count() == 39
        seq, _ = put(second, corpus, [41])
        assert seq == 3
    finally:
        second.close()


def test_purge_tombstones(store: DocumentStore, corpus: Corpus) -> None:
    put(store, corpus, range(10))
    store.delete([corpus.ids[0], corpus.ids[1]])  # seq 2
    store.delete([corpus.ids[2]])  # seq 3
    assert store.purge_tombstones(2) == 2
    assert [c.id for c in store.changes_since(0) if c.deleted] == [corpus.ids[2]]
    assert store.count() == 7


def test_readers_are_not_blocked_by_an_open_write(store: DocumentStore, corpus: Corpus) -> None:
    put(store, corpus, range(10))
    # Hold the write transaction open the way a long batch would, then read from another thread.
    with store._write_lock:
        store._writer.execute("BEGIN IMMEDIATE")
        store._writer.execute("UPDATE documents SET text = 'uncommitted' WHERE label = 1")
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.append(store.get([corpus.ids[0]])[0].text))
        reader.start()
        reader.join(WAIT_S)
        store._writer.execute("ROLLBACK")
    assert seen == [corpus.texts[0]]  # the reader saw the committed row, without waiting
