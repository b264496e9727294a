"""Per-collection document store: one SQLite file in WAL mode, the durable source of truth.

Each document row holds the external ``id``, ``text``, ``metadata`` (JSON object of strings), the
``embedding`` (float32 little-endian) and its ``label``: the integer the vector index knows it by,
stable for the id's whole life (AUTOINCREMENT: a label is never handed to another id). Every write
batch gets the next sequence number ``seq`` and stamps it on the rows it touched; deletes leave
tombstone rows (``deleted = 1``, content cleared) so a replay from any snapshot sees them too.

Durability: ``synchronous=FULL``. In WAL mode NORMAL already survives a killed process, but a
power cut may drop the last commits; with FULL a batch is acknowledged only once its commit is on
disk, and an index snapshot can never claim a sequence number the database has lost. The cost is
one fsync per write batch, small next to embedding the batch.

Concurrency: one writer connection behind a lock; reads use one connection per thread, so WAL lets
searches read while a write transaction is open.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from twostage.server.errors import InternalError, Unavailable

_CHUNK = 900  # bound on `IN (...)` parameters; portable across SQLite builds
_SCHEMA_VERSION = 2  # 2: the lexical (FTS5) table
_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    label     INTEGER PRIMARY KEY AUTOINCREMENT,
    id        TEXT    NOT NULL UNIQUE,
    text      TEXT    NOT NULL,
    metadata  TEXT    NOT NULL,
    embedding BLOB,
    seq       INTEGER NOT NULL,
    deleted   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS documents_seq ON documents (seq);
-- Partial index of live labels: count() and the rebuild scan read it instead of every blob.
CREATE INDEX IF NOT EXISTS documents_live ON documents (label) WHERE deleted = 0;
-- One row per (key, value) of a live document, so a metadata filter is an index lookup.
CREATE TABLE IF NOT EXISTS metadata (
    key   TEXT    NOT NULL,
    value TEXT    NOT NULL,
    label INTEGER NOT NULL,
    PRIMARY KEY (key, value, label)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metadata_label ON metadata (label);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO state (key, value) VALUES ('last_seq', 0);
-- The lexical channel: one row per live document (rowid = label) holding its analysed terms
-- (see lexical.py), written in the same transaction as the document row. FTS5 computes BM25.
-- `ascii` splits on ASCII punctuation and space only, so an analysed term (a run of word
-- characters, '_' made a token character) stays one token whatever its script.
CREATE VIRTUAL TABLE IF NOT EXISTS lexical USING fts5(terms, tokenize = "ascii tokenchars '_'");
"""
# state key naming the analyzer the lexical table was filled with (absent: not built yet)
_LEXICAL_KEY = "lexical_analyzer"
LEXICAL_CODES = {"english": 1, "simple": 2, "none": 3}


@dataclass(frozen=True, slots=True)
class Document:
    """A stored document; ``embedding`` is filled only where asked for."""

    id: str
    text: str
    metadata: dict[str, str]
    label: int
    seq: int
    embedding: np.ndarray | None = field(default=None, compare=False)


class Change(NamedTuple):
    """Latest state of one label written after some sequence number (for replay)."""

    label: int
    id: str
    seq: int
    deleted: bool
    embedding: np.ndarray | None


class LexicalHits(NamedTuple):
    labels: np.ndarray  # int64, best first
    scores: np.ndarray  # float64 BM25 (higher is better)


class Upserted(NamedTuple):
    seq: int
    labels: np.ndarray  # int64, in input order


class Deleted(NamedTuple):
    seq: int  # the batch's sequence number, or the current one when nothing was deleted
    labels: list[int]  # labels of the documents that were live and are now deleted
    missing: list[str]  # requested ids that were not live documents


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: BEGIN IMMEDIATE, COMMIT when the block ends, ROLLBACK when it
    raises (anything, KeyboardInterrupt included: no half-written batch is ever committed)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _lexical_query(match: str, filter: Mapping[str, str] | None) -> tuple[str, list[Any]]:
    """SQL of (label, BM25) for the live documents matching ``match`` and ``filter``."""
    sql = "SELECT rowid, -bm25(lexical) FROM lexical WHERE lexical MATCH ?"
    params: list[Any] = [match]
    if filter:
        fsql, fparams = _filter_query(filter)
        sql += f" AND rowid IN ({fsql})"
        params += fparams
    return sql, params


def _lexical_hits(rows: Sequence[tuple[int, float]]) -> LexicalHits:
    labels = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    scores = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
    return LexicalHits(labels, scores)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _filter_query(filter: Mapping[str, str]) -> tuple[str, list[str]]:
    """SQL selecting the labels whose metadata has every (key, value) of ``filter``."""
    parts = ["SELECT label FROM metadata WHERE key = ? AND value = ?"] * len(filter)
    params: list[str] = []
    for key, value in sorted(filter.items()):
        params += [key, value]
    return " INTERSECT ".join(parts), params


class DocumentStore:
    """SQLite document table of one collection (see module doc). Thread-safe."""

    def __init__(self, path: str | Path, dim: int) -> None:
        self.path = Path(path)
        self.dim = int(dim)
        self._closed = False
        self._write_lock = threading.Lock()
        self._readers_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._writer = self._connect()
        mode = self._writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise InternalError(f"{self.path.name}: SQLite refused WAL mode ({mode})")
        version = self._writer.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, _SCHEMA_VERSION):  # 1 gains the lexical table below
            raise InternalError(f"{self.path.name}: unknown schema version {version}")
        self._writer.executescript(_SCHEMA)
        self._writer.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        self._last_seq = int(
            self._writer.execute("SELECT value FROM state WHERE key = 'last_seq'").fetchone()[0]
        )

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise Unavailable(f"document store {self.path.parent.name} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=1")
            with self._readers_lock:
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    # -- properties ---------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """Sequence number of the last committed write batch (0 before any)."""
        return self._last_seq

    def count(self) -> int:
        """Live documents."""
        row = self._reader().execute("SELECT COUNT(*) FROM documents WHERE deleted = 0").fetchone()
        return int(row[0])

    # -- writes -------------------------------------------------------------------------------

    def _blob(self, vector: np.ndarray) -> bytes:
        return np.ascontiguousarray(vector, dtype="<f4").tobytes()

    def _vector(self, blob: bytes | None, label: int) -> np.ndarray:
        if blob is None or len(blob) != 4 * self.dim:
            raise InternalError(
                f"{self.path.name}: embedding of label {label} is not {self.dim} float32 values"
            )
        return np.frombuffer(blob, dtype="<f4").astype(np.float32)

    def upsert(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, str]],
        embeddings: np.ndarray,
        lexical: Sequence[str] | None = None,
    ) -> Upserted:
        """Insert or replace documents in one transaction; returns once it has committed.

        ``lexical`` holds each document's analysed terms for the lexical table (``None``: the
        collection has no lexical channel). An existing id (live or deleted) keeps its label.
        Inputs are assumed validated by the collection; a shape mismatch here is a bug and
        raises ValueError.
        """
        n = len(ids)
        emb = np.asarray(embeddings, dtype=np.float32)
        if len(texts) != n or len(metadatas) != n or emb.shape != (n, self.dim):
            raise ValueError("ids, texts, metadatas and embeddings must align")
        if lexical is not None and len(lexical) != n:
            raise ValueError("lexical rows must align with ids")
        if len(set(ids)) != n:
            raise ValueError("duplicate ids in one batch")
        if n == 0:
            return Upserted(self._last_seq, np.empty(0, dtype=np.int64))
        metas = [dict(m) for m in metadatas]
        with self._write_lock:
            conn = self._writer_conn()
            seq = self._last_seq + 1
            rows = [
                (
                    ids[i],
                    texts[i],
                    json.dumps(metas[i], ensure_ascii=False, sort_keys=True),
                    self._blob(emb[i]),
                    seq,
                )
                for i in range(n)
            ]
            with _transaction(conn):
                conn.executemany(
                    "INSERT INTO documents (id, text, metadata, embedding, seq, deleted) "
                    "VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (id) DO UPDATE SET "
                    "text = excluded.text, metadata = excluded.metadata, "
                    "embedding = excluded.embedding, seq = excluded.seq, deleted = 0",
                    rows,
                )
                label_of = dict(
                    conn.execute("SELECT id, label FROM documents WHERE seq = ?", (seq,))
                )
                labels = [int(label_of[i]) for i in ids]
                conn.executemany("DELETE FROM metadata WHERE label = ?", [(x,) for x in labels])
                conn.executemany(
                    "INSERT INTO metadata (key, value, label) VALUES (?, ?, ?)",
                    [(k, v, labels[i]) for i in range(n) for k, v in metas[i].items()],
                )
                conn.executemany("DELETE FROM lexical WHERE rowid = ?", [(x,) for x in labels])
                if lexical is not None:
                    conn.executemany(
                        "INSERT INTO lexical (rowid, terms) VALUES (?, ?)",
                        [(labels[i], lexical[i]) for i in range(n) if lexical[i]],
                    )
                conn.execute("UPDATE state SET value = ? WHERE key = 'last_seq'", (seq,))
            self._last_seq = seq
        return Upserted(seq, np.asarray(labels, dtype=np.int64))

    def delete(self, ids: Sequence[str]) -> Deleted:
        """Tombstone the live documents among ``ids`` in one transaction."""
        wanted = list(dict.fromkeys(ids))
        with self._write_lock:
            conn = self._writer_conn()
            with _transaction(conn):
                found: dict[str, int] = {}
                for part in _chunks(wanted):
                    found.update(
                        conn.execute(
                            f"SELECT id, label FROM documents WHERE deleted = 0 AND id IN "
                            f"({_marks(len(part))})",
                            list(part),
                        ).fetchall()
                    )
                if not found:  # nothing written: the empty transaction commits
                    return Deleted(self._last_seq, [], wanted)
                seq = self._last_seq + 1
                labels = [int(found[i]) for i in wanted if i in found]
                conn.executemany(
                    "UPDATE documents SET deleted = 1, text = '', metadata = '{}', "
                    "embedding = NULL, seq = ? WHERE label = ?",
                    [(seq, x) for x in labels],
                )
                conn.executemany("DELETE FROM metadata WHERE label = ?", [(x,) for x in labels])
                conn.executemany("DELETE FROM lexical WHERE rowid = ?", [(x,) for x in labels])
                conn.execute("UPDATE state SET value = ? WHERE key = 'last_seq'", (seq,))
            self._last_seq = seq
        return Deleted(seq, labels, [i for i in wanted if i not in found])

    def purge_tombstones(self, upto_seq: int) -> int:
        """Drop tombstones no replay needs any more (their delete is in a snapshot)."""
        with self._write_lock:
            conn = self._writer_conn()
            cur = conn.execute(
                "DELETE FROM documents WHERE deleted = 1 AND seq <= ?", (int(upto_seq),)
            )
            return int(cur.rowcount)

    def _writer_conn(self) -> sqlite3.Connection:
        if self._closed:
            raise Unavailable(f"document store {self.path.parent.name} is closed")
        return self._writer

    # -- reads --------------------------------------------------------------------------------

    def _document(self, row: tuple[Any, ...], with_embedding: bool) -> Document:
        label, doc_id, text, metadata, seq = row[:5]
        embedding = self._vector(row[5], label) if with_embedding else None
        return Document(doc_id, text, json.loads(metadata), int(label), int(seq), embedding)

    def get(self, ids: Sequence[str], *, with_embeddings: bool = False) -> list[Document | None]:
        """Live documents in request order; ``None`` where an id is unknown or deleted."""
        conn = self._reader()
        cols = "label, id, text, metadata, seq" + (", embedding" if with_embeddings else "")
        by_id: dict[str, Document] = {}
        unique = list(dict.fromkeys(ids))
        for part in _chunks(unique):
            for row in conn.execute(
                f"SELECT {cols} FROM documents WHERE deleted = 0 AND id IN ({_marks(len(part))})",
                list(part),
            ):
                by_id[row[1]] = self._document(row, with_embeddings)
        return [by_id.get(i) for i in ids]

    def get_by_labels(self, labels: Iterable[int]) -> dict[int, Document]:
        """Live documents by label (search hot path: one ``IN`` query for ~100 candidates)."""
        conn = self._reader()
        wanted = [int(x) for x in labels]
        out: dict[int, Document] = {}
        for part in _chunks(wanted):
            for row in conn.execute(
                "SELECT label, id, text, metadata, seq FROM documents "
                f"WHERE deleted = 0 AND label IN ({_marks(len(part))})",
                list(part),
            ):
                out[int(row[0])] = self._document(row, False)
        return out

    def changes_since(self, seq: int, batch_size: int = 1024) -> Iterator[Change]:
        """Rows written after ``seq`` (each label's latest state), in sequence order."""
        cur = self._reader().execute(
            "SELECT label, id, seq, deleted, embedding FROM documents WHERE seq > ? "
            "ORDER BY seq, label",
            (int(seq),),
        )
        while rows := cur.fetchmany(batch_size):
            for label, doc_id, row_seq, deleted, blob in rows:
                vector = None if deleted else self._vector(blob, label)
                yield Change(int(label), doc_id, int(row_seq), bool(deleted), vector)

    def iter_all(self, batch_size: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All live (labels int64, embeddings float32 (n, dim)) in label order, chunked."""
        cur = self._reader().execute(
            "SELECT label, embedding FROM documents WHERE deleted = 0 ORDER BY label"
        )
        while rows := cur.fetchmany(batch_size):
            yield self._matrix(rows)

    def _matrix(self, rows: Sequence[tuple[int, bytes]]) -> tuple[np.ndarray, np.ndarray]:
        labels = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        size = 4 * self.dim
        for label, blob in rows:
            if blob is None or len(blob) != size:
                self._vector(blob, label)  # raises, naming the label
        joined = b"".join(r[1] for r in rows)
        vectors = np.frombuffer(joined, dtype="<f4").reshape(len(rows), self.dim)
        return labels, vectors.astype(np.float32)

    def labels_matching(self, filter: Mapping[str, str]) -> np.ndarray:
        """Sorted labels of live documents whose metadata equals every (key, value) of
        ``filter`` (an empty filter matches nothing: callers skip filtering instead)."""
        if not filter:
            return np.empty(0, dtype=np.int64)
        sql, params = _filter_query(filter)
        rows = self._reader().execute(sql + " ORDER BY label", params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def embeddings_matching(self, filter: Mapping[str, str]) -> tuple[np.ndarray, np.ndarray]:
        """(labels, embeddings) of the live documents matching ``filter``, for exact search."""
        if not filter:
            return np.empty(0, dtype=np.int64), np.empty((0, self.dim), dtype=np.float32)
        sql, params = _filter_query(filter)
        rows = (
            self._reader()
            .execute(
                f"SELECT d.label, d.embedding FROM ({sql}) AS m JOIN documents AS d "
                "ON d.label = m.label WHERE d.deleted = 0",
                params,
            )
            .fetchall()
        )
        return self._matrix(rows)

    def filter_labels(self, labels: Iterable[int], filter: Mapping[str, str]) -> np.ndarray:
        """The subset of ``labels`` (order kept) whose metadata matches ``filter``."""
        wanted = [int(x) for x in labels]
        if not filter:
            return np.asarray(wanted, dtype=np.int64)
        sql, params = _filter_query(filter)
        conn = self._reader()
        keep: set[int] = set()
        for part in _chunks(wanted):
            keep.update(
                r[0]
                for r in conn.execute(
                    f"SELECT label FROM ({sql}) WHERE label IN ({_marks(len(part))})",
                    params + list(part),
                )
            )
        return np.asarray([x for x in wanted if x in keep], dtype=np.int64)

    # -- lexical channel ----------------------------------------------------------------------

    def lexical_analyzer(self) -> str | None:
        """The analyzer the lexical table was filled with; ``None`` if it was never built."""
        row = (
            self._reader()
            .execute("SELECT value FROM state WHERE key = ?", (_LEXICAL_KEY,))
            .fetchone()
        )
        if row is None:
            return None
        names = {code: name for name, code in LEXICAL_CODES.items()}
        return names.get(int(row[0]))

    def build_lexical(
        self,
        analyzer: str,
        analyze: Callable[[Sequence[str]], list[str]],
        progress: Callable[[int, int], None] | None = None,
        batch_size: int = 2000,
    ) -> int:
        """(Re)fill the lexical table from every live document, in one transaction: a crash
        part-way leaves the table as it was and the next open builds it again. Returns the
        documents indexed. ``progress(done, total)`` is called after every batch."""
        if analyzer not in LEXICAL_CODES:
            raise ValueError(f"unknown analyzer {analyzer!r}")
        with self._write_lock:
            conn = self._writer_conn()
            live = conn.execute("SELECT COUNT(*) FROM documents WHERE deleted = 0").fetchone()
            total = int(live[0])
            with _transaction(conn):
                conn.execute("DELETE FROM lexical")
                done = 0
                if analyzer != "none":
                    cur = self._connect().execute(
                        "SELECT label, text FROM documents WHERE deleted = 0 ORDER BY label"
                    )
                    while rows := cur.fetchmany(batch_size):
                        terms = analyze([r[1] for r in rows])
                        conn.executemany(
                            "INSERT INTO lexical (rowid, terms) VALUES (?, ?)",
                            [(r[0], t) for r, t in zip(rows, terms, strict=True) if t],
                        )
                        done += len(rows)
                        if progress is not None:
                            progress(done, total)
                    cur.connection.close()
                conn.execute(
                    "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)",
                    (_LEXICAL_KEY, LEXICAL_CODES[analyzer]),
                )
        return done

    def lexical_matches(self, match: str, filter: Mapping[str, str] | None = None) -> LexicalHits:
        """Every live document matching a term with its BM25, in no order. FTS5 scores every
        match to rank a top-k anyway; returning them all unsorted costs about the same as the
        top 100 sorted (measured on SciFact) and answers "what is this candidate's BM25" for the
        other channel's candidates at once. Its cost grows with the matches (bench/)."""
        sql, params = _lexical_query(match, filter)
        return _lexical_hits(self._reader().execute(sql, params).fetchall())

    def embeddings_of(self, labels: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored embeddings of live ``labels`` (exact dense scores for lexical candidates)."""
        conn = self._reader()
        out: dict[int, np.ndarray] = {}
        wanted = [int(x) for x in labels]
        for part in _chunks(wanted):
            for label, blob in conn.execute(
                "SELECT label, embedding FROM documents WHERE deleted = 0 AND label IN "
                f"({_marks(len(part))})",
                list(part),
            ):
                out[int(label)] = self._vector(blob, label)
        return out

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Checkpoint the WAL and close every connection; later calls raise Unavailable."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            with self._readers_lock:
                for conn in self._readers:
                    conn.close()
                self._readers.clear()
            try:
                self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._writer.close()
