"""Collections: a named folder holding a document store and its vector index, and their manager.

Layout of ``<data_dir>/collections/<name>/``: ``collection.json`` (name, dim, space, index params,
embedder, created time), ``documents.sqlite`` (+ WAL files), ``index.<generation>.bin`` and
``index.json`` (the snapshot record, see :mod:`recovery`).

A write commits to SQLite first (that commit is the acknowledgement), then updates the index. One
lock per collection serialises writes, so the index applies them in sequence order and a snapshot
sees a consistent (index, sequence number) pair; searches never take it.

Filtered search: the metadata filter is resolved in SQLite (an indexed key/value table) to the
matching labels. Up to ``exact_filter_limit`` matches (default 2048) are scored exactly from their
stored embeddings: exact, and cheap at that size (measured ~10 us per matching row, dominated by
reading the blobs). Above it, hnswlib searches with the match set as its label filter; its cost
grows like ef / selectivity (it walks rejected nodes too), which stays small once a filter keeps
thousands of documents.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from twostage.server.errors import (
    AlreadyExists,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from twostage.server.fusion import GAP_DEPTH, ChannelStats, channel_gap
from twostage.server.limits import (
    INDEX_PARAM_RANGES,
    NAME_RULE,
    filter_problem,
    metadata_problem,
    valid_name,
)
from twostage.server.store.documents import Document, DocumentStore
from twostage.server.store.lexical import ANALYZERS, DEFAULT_ANALYZER, Analyzer
from twostage.server.store.recovery import (
    read_snapshot_meta,
    recover,
    replay,
    write_json_atomic,
    write_snapshot,
)
from twostage.server.store.vector_index import (
    DEFAULT_EF,
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_M,
    INDEX_KINDS,
    SPACES,
    CorruptIndex,
    ExactIndex,
    HnswIndex,
    IndexParams,
    exact_scores,
    normalized,
    top_k,
)

log = logging.getLogger(__name__)

CONFIG_FILE = "collection.json"
STATS_FILE = "channel_stats.json"
DOCUMENTS_FILE = "documents.sqlite"
MAX_DIM = 65536
DEFAULT_EXACT_FILTER_LIMIT = 2048


class SearchHit(NamedTuple):
    id: str
    text: str
    metadata: dict[str, str]
    score: float
    label: int


class LexicalChannel(NamedTuple):
    """One query's lexical channel: its top hits, and BM25 of any other document."""

    hits: list[SearchHit]
    labels: np.ndarray  # every matching label, sorted by label
    scores: np.ndarray  # their BM25, aligned with ``labels``

    def scores_of(self, labels: Sequence[int]) -> dict[int, float]:
        """BM25 of ``labels``; 0 for a document matching no query term."""
        wanted = np.asarray(labels, dtype=np.int64)
        if not self.labels.size or not wanted.size:
            return {int(x): 0.0 for x in wanted}
        pos = np.minimum(np.searchsorted(self.labels, wanted), self.labels.size - 1)
        found = self.labels[pos] == wanted
        values = np.where(found, self.scores[pos], 0.0)
        return dict(zip(wanted.tolist(), values.tolist(), strict=True))


class DeleteResult(NamedTuple):
    seq: int  # sequence number of the delete (the current one when nothing was deleted)
    deleted: int  # live documents deleted
    missing: list[str]  # requested ids that were not live documents


@dataclass(frozen=True)
class CollectionConfig:
    """What ``collection.json`` holds; fixed at creation."""

    name: str
    dim: int
    space: str = "cosine"
    index: str = "hnsw"
    M: int = DEFAULT_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    ef: int = DEFAULT_EF
    embedder: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    format: int = 1
    # the lexical channel's text analysis (lexical.ANALYZERS); "none": no lexical channel
    analyzer: str = DEFAULT_ANALYZER
    # how Search ranks this collection by default, written by `twostage tune` (empty: untuned,
    # the server's robust default); an explicit request field still wins
    tuning: dict[str, Any] = field(default_factory=dict)

    def index_params(self, num_threads: int | None = None) -> IndexParams:
        return IndexParams(
            dim=self.dim,
            space=self.space,
            kind=self.index,
            M=self.M,
            ef_construction=self.ef_construction,
            ef=self.ef,
            num_threads=num_threads,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CollectionConfig:
        known = {f for f in cls.__dataclass_fields__}
        config = cls(**{k: v for k, v in data.items() if k in known})
        validate_config(config)
        return config


def validate_name(name: object) -> str:
    if not isinstance(name, str) or not valid_name(name):
        raise InvalidArgument(
            f"collection name {str(name)[:80]!r} is not valid ({NAME_RULE})", field="name"
        )
    return name


def validate_config(config: CollectionConfig) -> None:
    """Raise InvalidArgument naming the first bad field."""
    validate_name(config.name)
    if not isinstance(config.dim, int) or not 1 <= config.dim <= MAX_DIM:
        raise InvalidArgument(
            f"dim must be an integer in [1, {MAX_DIM}]; got {config.dim!r}", field="dim"
        )
    if config.space not in SPACES:
        raise InvalidArgument(
            f"space must be one of {', '.join(SPACES)}; got {config.space!r}", field="space"
        )
    if config.index not in INDEX_KINDS:
        raise InvalidArgument(
            f"index must be one of {', '.join(INDEX_KINDS)}; got {config.index!r}", field="index"
        )
    for name, (low, high) in INDEX_PARAM_RANGES.items():
        value = getattr(config, name)
        if not isinstance(value, int) or not low <= value <= high:
            raise InvalidArgument(
                f"{name} must be an integer in [{low}, {high}]; got {value!r}", field=name
            )
    if not isinstance(config.embedder, dict):
        raise InvalidArgument("embedder must be a mapping", field="embedder")
    if config.analyzer not in ANALYZERS:
        raise InvalidArgument(
            f"analyzer must be one of {', '.join(ANALYZERS)}; got {config.analyzer!r}",
            field="analyzer",
        )
    if not isinstance(config.tuning, dict):
        raise InvalidArgument("tuning must be a mapping", field="tuning")


def _check_metadata(metadata: object, where: str, field_name: str) -> dict[str, str]:
    """A document's metadata or a filter as a dict, within the limits of ``limits.py``."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgument(f"{where} must be a map of strings to strings", field=field_name)
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise InvalidArgument(
                f"{where} must map non-empty strings to strings; got {key!r:.60}: {value!r:.60}",
                field=field_name,
            )
    out = dict(metadata)
    problem = filter_problem(out) if field_name == "filter" else metadata_problem(out)
    if problem is not None:
        raise InvalidArgument(f"{where}: {problem}", field=field_name)
    return out


class Collection:
    """One collection: documents in SQLite, vectors in the index (see module doc). Thread-safe;
    every method is blocking (the engine runs them in worker threads)."""

    def __init__(
        self,
        folder: str | Path,
        config: CollectionConfig,
        *,
        metrics: Any = None,
        exact_filter_limit: int = DEFAULT_EXACT_FILTER_LIMIT,
        num_threads: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.config = config
        self._metrics = metrics
        self._exact_filter_limit = int(exact_filter_limit)
        self._params = config.index_params(num_threads)
        self._write_lock = threading.Lock()
        self._closed: Exception | None = None
        self._writes_since_snapshot = 0
        self.analyzer = Analyzer(config.analyzer)
        self._stats_lock = threading.Lock()
        self.channel_stats = self._load_stats()
        self._stats_saved = self.channel_stats.n
        self._store = DocumentStore(self.folder / DOCUMENTS_FILE, config.dim)
        try:
            self._ensure_lexical()
            self._index, self._snapshot, self.recovery = recover(
                self.folder, self._store, self._params, name=config.name
            )
        except BaseException:
            self._store.close()
            raise
        # The index reflects every write up to this sequence number.
        self._index_seq = self._store.last_seq
        if self.recovery.source == "rebuild" or self.recovery.replayed:
            try:
                self.snapshot()  # so the next start need not redo the work
            except OSError as exc:
                log.warning("collection %s: snapshot after recovery failed: %s", self.name, exc)
        self._report_size()

    def _load_stats(self) -> ChannelStats:
        path = self.folder / STATS_FILE
        try:
            return ChannelStats.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return ChannelStats()
        except (OSError, ValueError, TypeError) as exc:
            log.warning("collection %s: %s unreadable (%s); starting over", self.name, path, exc)
            return ChannelStats()

    def record_channel_gaps(self, lexical_scores: Any, dense_scores: Any) -> None:
        """Add one served query's channel gaps (each channel's own top list, best first) to the
        collection's label-free statistics (fusion.GapRatio); lists shorter than the gap depth
        are not comparable and are skipped."""
        if len(lexical_scores) < 2 or len(dense_scores) < GAP_DEPTH:
            return
        with self._stats_lock:
            self.channel_stats.add(channel_gap(lexical_scores), channel_gap(dense_scores))

    def _save_stats(self) -> None:
        with self._stats_lock:
            data = self.channel_stats.to_json()
        if data["n"] and data["n"] != self._stats_saved:
            self._stats_saved = int(data["n"])
            try:
                write_json_atomic(self.folder / STATS_FILE, data)
            except OSError as exc:
                log.warning("collection %s: saving channel statistics failed: %s", self.name, exc)

    def _ensure_lexical(self) -> None:
        """Build the lexical table of a collection made before it existed (or with another
        analyzer), logging progress; later writes keep it current in their own transaction."""
        if self._store.lexical_analyzer() == self.analyzer.name:
            return
        total = self._store.count()
        log.info(
            "collection %s: building the lexical index (%s analyzer) over %d documents",
            self.name,
            self.analyzer.name,
            total,
        )
        step = max(1, total // 10)
        marks = {"next": step}

        def progress(done: int, total: int) -> None:
            if done >= marks["next"] or done == total:
                log.info("collection %s: lexical index %d/%d documents", self.name, done, total)
                marks["next"] = done + step

        self._store.build_lexical(self.analyzer.name, self.analyzer.documents, progress)

    # -- properties ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def space(self) -> str:
        return self.config.space

    @property
    def index(self) -> HnswIndex | ExactIndex:
        return self._index

    @property
    def store(self) -> DocumentStore:
        return self._store

    def count(self) -> int:
        """Live documents (as the index counts them)."""
        return self._index.count()

    def _check_open(self) -> None:
        if self._closed is not None:
            raise self._closed

    def _report_size(self) -> None:
        if self._metrics is not None:
            self._metrics.index_size.labels(self.name).set(self._index.count())

    # -- writes -------------------------------------------------------------------------------

    def _embeddings(self, embeddings: Any, n: int) -> np.ndarray:
        try:
            arr = np.asarray(embeddings, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidArgument("embeddings must be numbers", field="embeddings") from None
        if arr.ndim != 2 or arr.shape != (n, self.dim):
            raise InvalidArgument(
                f"embeddings must have shape ({n}, {self.dim}) for collection {self.name!r}; "
                f"got {tuple(arr.shape)}",
                field="embeddings",
            )
        if not np.isfinite(arr).all():
            raise InvalidArgument("embeddings must be finite (no NaN or inf)", field="embeddings")
        if self.space == "cosine" and n and (np.linalg.norm(arr, axis=1) == 0).any():
            raise InvalidArgument(
                "embeddings must be non-zero for cosine space", field="embeddings"
            )
        return arr

    def upsert(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, str] | None] | None,
        embeddings: Any,
    ) -> int:
        """Insert or replace documents; returns the batch's sequence number once committed."""
        n = len(ids)
        if n == 0:
            raise InvalidArgument("documents must not be empty", field="documents")
        if len(texts) != n:
            raise InvalidArgument(f"got {len(texts)} texts for {n} ids", field="documents")
        metas_in = [None] * n if metadatas is None else list(metadatas)
        if len(metas_in) != n:
            raise InvalidArgument(f"got {len(metas_in)} metadatas for {n} ids", field="documents")
        seen: set[str] = set()
        for i, doc_id in enumerate(ids):
            if not isinstance(doc_id, str) or not doc_id:
                raise InvalidArgument(
                    f"documents[{i}].id must be a non-empty string", field="documents"
                )
            if doc_id in seen:
                raise InvalidArgument(
                    f"documents[{i}].id {doc_id!r} appears twice in the batch", field="documents"
                )
            seen.add(doc_id)
            if not isinstance(texts[i], str):
                raise InvalidArgument(f"documents[{i}].text must be a string", field="documents")
        metas = [
            _check_metadata(m, f"documents[{i}].metadata", "documents")
            for i, m in enumerate(metas_in)
        ]
        vectors = self._embeddings(embeddings, n)
        with self._write_lock:
            self._check_open()
            self._catch_up()
            lexical = self.analyzer.documents(texts) if self.analyzer.enabled else None
            result = self._store.upsert(list(ids), list(texts), metas, vectors, lexical)
            self._apply(result.seq, lambda: self._index.add(result.labels, vectors))
            self._writes_since_snapshot += n
        self._report_size()
        return result.seq

    def delete(self, ids: Sequence[str]) -> DeleteResult:
        """Delete documents by id; unknown ids are reported, not an error."""
        for i, doc_id in enumerate(ids):
            if not isinstance(doc_id, str) or not doc_id:
                raise InvalidArgument(f"ids[{i}] must be a non-empty string", field="ids")
        with self._write_lock:
            self._check_open()
            self._catch_up()
            result = self._store.delete(list(ids))
            if result.labels:
                self._apply(result.seq, lambda: self._index.delete(result.labels))
                self._writes_since_snapshot += len(result.labels)
        self._report_size()
        return DeleteResult(result.seq, len(result.labels), result.missing)

    def _apply(self, seq: int, update: Any) -> None:
        """Update the index for the committed batch ``seq``. The batch is durable either way; if
        the index update fails, the index stays at its last good sequence number and the next
        write (or snapshot, or restart) replays the gap."""
        try:
            update()
        except Exception as exc:
            log.exception("collection %s: index update for seq %d failed", self.name, seq)
            raise InternalError(
                f"collection {self.name!r}: the write was stored but indexing it failed; "
                "it will be indexed on retry or restart"
            ) from exc
        self._index_seq = seq

    def _catch_up(self) -> None:
        """Replay writes the index missed after a failed update (caller holds the write lock)."""
        if self._index_seq < self._store.last_seq:
            replay(self._index, self._store, self._index_seq)
            self._index_seq = self._store.last_seq

    # -- reads --------------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> list[Document | None]:
        """Documents in request order, ``None`` where an id is unknown."""
        self._check_open()
        return self._guard(lambda: self._store.get(list(ids)))

    def search(
        self,
        vector: Any,
        k: int,
        ef: int | None = None,
        filter: Mapping[str, str] | None = None,
    ) -> list[SearchHit]:
        """Top ``k`` documents by similarity to ``vector``, best first; each hit carries
        (id, text, metadata, score, label). ``filter`` keeps documents whose metadata equals
        every given (key, value)."""
        try:
            query = np.asarray(vector, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise InvalidArgument("vector must be numbers", field="vector") from None
        if query.shape != (self.dim,):
            raise InvalidArgument(
                f"vector must have {self.dim} values for collection {self.name!r}; "
                f"got {query.shape[0]}",
                field="vector",
            )
        if not np.isfinite(query).all():
            raise InvalidArgument("vector must be finite", field="vector")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidArgument(f"k must be a positive integer; got {k!r}", field="k")
        if ef is not None and (isinstance(ef, bool) or not isinstance(ef, int) or ef < 1):
            raise InvalidArgument(f"ef must be a positive integer; got {ef!r}", field="ef")
        wanted = _check_metadata(filter, "filter", "filter")
        self._check_open()
        return self._guard(lambda: self._search(query, k, ef, wanted))

    def _search(
        self,
        query: np.ndarray,
        k: int,
        ef: int | None,
        wanted: dict[str, str],
    ) -> list[SearchHit]:
        if not wanted:
            labels, scores = self._index.search(query, k, ef=ef)
        else:
            matches = self._store.labels_matching(wanted)
            if matches.size == 0:
                return []
            if matches.size <= self._exact_filter_limit:
                labels, scores = self._exact_search(query, k, wanted)
            else:
                allowed = set(matches.tolist())
                labels, scores = self._index.search(
                    query, k, ef=ef, filter=allowed.__contains__, max_matches=len(allowed)
                )
                if labels.size < min(k, len(allowed)):  # HNSW fell short: answer exactly
                    labels, scores = self._exact_search(query, k, wanted)
        return self._hits(labels, scores, wanted)

    def _hits(
        self, labels: np.ndarray, scores: np.ndarray, wanted: Mapping[str, str]
    ) -> list[SearchHit]:
        """Ranked labels as hits with their documents, order kept. A document deleted or
        changed (out of the filter) since the index answered is left out."""
        docs = self._store.get_by_labels(labels.tolist())
        hits = []
        for label, score in zip(labels.tolist(), scores.tolist(), strict=True):
            doc = docs.get(label)
            if doc is None or any(doc.metadata.get(k) != v for k, v in wanted.items()):
                continue
            hits.append(SearchHit(doc.id, doc.text, doc.metadata, float(score), label))
        return hits

    def _exact_search(
        self,
        query: np.ndarray,
        k: int,
        wanted: dict[str, str],
    ) -> tuple[np.ndarray, np.ndarray]:
        labels, vectors = self._store.embeddings_matching(wanted)
        if self.space == "cosine":
            vectors, query = normalized(vectors), normalized(query)
        return top_k(labels, exact_scores(self.space, vectors, query), k)

    @property
    def has_lexical(self) -> bool:
        return self.analyzer.enabled

    def lexical_search(
        self, query: str, k: int, filter: Mapping[str, str] | None = None
    ) -> list[SearchHit]:
        """Top ``k`` documents by BM25 of the analysed ``query`` (an OR of its terms), best
        first; ``score`` is the BM25 score. Empty when no query term survives analysis."""
        if not self.analyzer.enabled:
            raise FailedPrecondition(
                f"collection {self.name!r} has no lexical channel (analyzer 'none')",
                field="retrieval",
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidArgument(f"k must be a positive integer; got {k!r}", field="k")
        return self.lexical_channel(query, k, filter).hits

    def lexical_channel(
        self, query: str, k: int, filter: Mapping[str, str] | None = None
    ) -> LexicalChannel:
        """The lexical channel: the top ``k`` hits by BM25 (best first, ties by label) plus the
        BM25 of every matching document, from one FTS5 query (``[]`` hits when no query term
        survives analysis or the collection has no lexical channel)."""
        empty = np.empty(0, dtype=np.int64)
        if not self.analyzer.enabled:
            return LexicalChannel([], empty, np.empty(0))
        wanted = _check_metadata(filter, "filter", "filter")
        match = self.analyzer.match(query)
        self._check_open()
        if match is None:
            return LexicalChannel([], empty, np.empty(0))
        found = self._guard(lambda: self._store.lexical_matches(match, wanted))
        n = found.labels.size
        head = np.argpartition(-found.scores, k - 1)[:k] if k < n else np.arange(n)
        # best first; ties by label, so the order does not depend on FTS5's row order
        head = head[np.lexsort((found.labels[head], -found.scores[head]))]
        hits = self._guard(lambda: self._hits(found.labels[head], found.scores[head], wanted))
        order = np.argsort(found.labels, kind="stable")
        return LexicalChannel(hits, found.labels[order], found.scores[order])

    def dense_scores(self, vector: Any, labels: Sequence[int]) -> dict[int, float]:
        """Exact similarity of the given documents to ``vector`` (the index's convention), from
        their stored embeddings; documents gone meanwhile are absent."""
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if not labels:
            return {}
        self._check_open()
        found = self._guard(lambda: self._store.embeddings_of(labels))
        if not found:
            return {}
        keys = list(found)
        vectors = np.stack([found[x] for x in keys])
        if self.space == "cosine":
            vectors, query = normalized(vectors), normalized(query)
        scores = exact_scores(self.space, vectors, query)
        return {x: float(s) for x, s in zip(keys, scores.tolist(), strict=True)}

    def set_tuning(self, tuning: Mapping[str, Any]) -> None:
        """Store how Search ranks this collection by default (``twostage tune``), durably."""
        with self._write_lock:
            self._check_open()
            config = replace(self.config, tuning=dict(tuning))
            validate_config(config)
            write_json_atomic(self.folder / CONFIG_FILE, config.to_json())
            self.config = config

    def _guard(self, call: Any) -> Any:
        """Run a read; a store closed under it (drop, shutdown) becomes the closed error."""
        try:
            return call()
        except sqlite3.ProgrammingError:
            if self._closed is not None:
                raise self._closed from None
            raise

    def describe(self) -> dict[str, Any]:
        """Configuration and state, JSON-able."""
        info: dict[str, Any] = {
            **self.config.to_json(),
            "count": self._index.count(),
            "last_seq": self._store.last_seq,
            "index_seq": self._index_seq,
            "snapshot_seq": int(self._snapshot["seq"]) if self._snapshot else 0,
            "recovery": self.recovery.to_dict(),
        }
        if isinstance(self._index, HnswIndex):
            info["index_capacity"] = self._index.capacity
        return info

    # -- snapshots and lifecycle ----------------------------------------------------------------

    def snapshot(self) -> bool:
        """Save the index with the sequence number it contains; False when already current."""
        with self._write_lock:
            self._check_open()
            return self._snapshot_locked()

    def _snapshot_locked(self) -> bool:
        self._save_stats()
        self._catch_up()
        seq = self._index_seq
        if self._snapshot is not None and self._snapshot["seq"] == seq:
            self._writes_since_snapshot = 0
            return False
        self._snapshot = write_snapshot(self.folder, self._index, seq, self._snapshot)
        self._writes_since_snapshot = 0
        # Deletes up to `seq` are in the snapshot now; their tombstones are not needed to replay.
        self._store.purge_tombstones(seq)
        return True

    def maybe_snapshot(self, every_n_writes: int) -> bool:
        """Snapshot when at least ``every_n_writes`` documents changed since the last one."""
        if self._writes_since_snapshot < max(1, every_n_writes):
            self._save_stats()  # served queries moved the fusion estimate; keep it across kills
            return False
        return self.snapshot()

    def close(self, *, snapshot: bool = True, reason: Exception | None = None) -> None:
        """Snapshot (unless told not to) and close; later calls raise ``reason`` (default:
        Unavailable)."""
        with self._write_lock:
            if self._closed is not None:
                return
            try:
                if snapshot:
                    self._snapshot_locked()
                else:
                    self._save_stats()
            finally:
                self._closed = reason or Unavailable(f"collection {self.name!r} is closed")
                self._store.close()


class CollectionManager:
    """All collections under ``<data_dir>/collections``. Holds an exclusive lock on the data
    folder so two servers never share it. Thread-safe."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        metrics: Any = None,
        exact_filter_limit: int = DEFAULT_EXACT_FILTER_LIMIT,
        num_threads: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "collections"
        self.root.mkdir(parents=True, exist_ok=True)
        self._metrics = metrics
        self._options: dict[str, Any] = {
            "exact_filter_limit": exact_filter_limit,
            "num_threads": num_threads,
        }
        self._lock = threading.RLock()
        self._collections: dict[str, Collection] = {}
        self.failed: dict[str, str] = {}  # collections that could not be opened, with why
        self._lock_file: IO[str] | None = self._acquire_dir_lock()

    def _acquire_dir_lock(self) -> IO[str]:
        f = open(self.data_dir / ".lock", "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise FailedPrecondition(
                f"data directory {self.data_dir} is in use by another twostage process"
            ) from None
        return f

    def _open(self, folder: Path) -> Collection:
        try:
            config = CollectionConfig.from_json(
                json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
            )
        except (OSError, ValueError, TypeError, InvalidArgument) as exc:
            raise CorruptIndex(f"{CONFIG_FILE} of {folder.name} is unreadable: {exc}") from exc
        if config.name != folder.name:
            raise CorruptIndex(f"{CONFIG_FILE} of {folder.name} names {config.name!r}")
        return Collection(folder, config, metrics=self._metrics, **self._options)

    def open_all(self) -> list[str]:
        """Open (and recover) every collection; one that fails is logged and kept in
        :attr:`failed` instead of stopping the others. Returns the names opened."""
        with self._lock:
            for path in sorted(self.root.iterdir()):
                if path.name.startswith("."):  # an interrupted create or drop
                    shutil.rmtree(path, ignore_errors=True)
                    continue
                if not path.is_dir() or path.name in self._collections:
                    continue
                try:
                    self._collections[path.name] = self._open(path)
                    self.failed.pop(path.name, None)
                except Exception as exc:
                    log.error("collection %s cannot be opened: %s", path.name, exc)
                    self.failed[path.name] = str(exc)
            return sorted(self._collections)

    def create(
        self,
        name: str,
        dim: int,
        space: str = "cosine",
        M: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        embedder: Mapping[str, Any] | None = None,
        *,
        ef: int = DEFAULT_EF,
        index: str = "hnsw",
        analyzer: str = DEFAULT_ANALYZER,
    ) -> Collection:
        """Create an empty collection (AlreadyExists if the name is taken)."""
        validate_name(name)
        config = CollectionConfig(
            name=name,
            dim=dim,
            space=space,
            index=index,
            M=M,
            ef_construction=ef_construction,
            ef=ef,
            embedder=dict(embedder or {}),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            analyzer=analyzer,
        )
        validate_config(config)
        with self._lock:
            final = self.root / name
            if name in self._collections or name in self.failed or final.exists():
                raise AlreadyExists(f"collection {name!r} already exists", field="name")
            staging = self.root / f".creating-{name}-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            try:
                write_json_atomic(staging / CONFIG_FILE, config.to_json())
                os.rename(staging, final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            _fsync_dir(self.root)
            collection = Collection(final, config, metrics=self._metrics, **self._options)
            self._collections[name] = collection
            return collection

    def get(self, name: str) -> Collection:
        """The open collection ``name``: NotFound if there is none."""
        with self._lock:
            collection = self._collections.get(name)
            if collection is None:
                if name in self.failed:
                    raise FailedPrecondition(
                        f"collection {name!r} could not be opened: {self.failed[name]}"
                    )
                raise NotFound(f"collection {name!r} does not exist", field="collection")
            return collection

    def list(self) -> list[Collection]:
        """Open collections, by name."""
        with self._lock:
            return [self._collections[n] for n in sorted(self._collections)]

    def drop(self, name: str) -> None:
        """Close and delete a collection and its files."""
        with self._lock:
            collection = self._collections.pop(name, None)
            folder = self.root / name
            if collection is None and name not in self.failed:
                raise NotFound(f"collection {name!r} does not exist", field="collection")
            self.failed.pop(name, None)
            if collection is not None:
                collection.close(
                    snapshot=False,
                    reason=NotFound(f"collection {name!r} was dropped", field="collection"),
                )
            if self._metrics is not None:
                with contextlib.suppress(KeyError):
                    self._metrics.index_size.remove(name)
            trash = self.root / f".dropped-{name}-{uuid.uuid4().hex[:8]}"
            os.rename(folder, trash)  # the name disappears atomically
            _fsync_dir(self.root)
            shutil.rmtree(trash, ignore_errors=True)

    def snapshot_all(self) -> int:
        """Snapshot every collection with unsaved writes; returns how many were written."""
        written = 0
        for collection in self.list():
            try:
                written += collection.snapshot()
            except (Unavailable, NotFound):
                continue  # closed or dropped meanwhile
        return written

    def maybe_snapshot_all(self, every_n_writes: int) -> int:
        """Periodic task: snapshot the collections with at least ``every_n_writes`` changes."""
        written = 0
        for collection in self.list():
            try:
                written += collection.maybe_snapshot(every_n_writes)
            except (Unavailable, NotFound):
                continue
        return written

    def close_all(self, *, snapshot: bool = True) -> None:
        """Snapshot (unless told not to) and close every collection; release the data folder."""
        with self._lock:
            for name in sorted(self._collections):
                try:
                    self._collections[name].close(snapshot=snapshot)
                except Exception:
                    log.exception("collection %s: close failed", name)
            self._collections.clear()
            if self._lock_file is not None:
                self._lock_file.close()  # releases the flock
                self._lock_file = None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "Collection",
    "CollectionConfig",
    "CollectionManager",
    "DeleteResult",
    "SearchHit",
    "read_snapshot_meta",
    "validate_config",
    "validate_name",
]
