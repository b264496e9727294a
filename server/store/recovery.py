"""Index snapshots and crash recovery: SQLite is the truth, the index file a cache of it.

A snapshot is ``index.<generation>.bin`` plus ``index.json``, its commit record: which file, the
last sequence number the file contains, its live count, size and sha256. The index file is written
under a fresh name (temp file, fsync, rename) and only then does ``index.json`` switch to it
(temp file, fsync, rename), so a crash at any point leaves a record that names a complete file.

On open the snapshot is checked (record, size, sha256, header, parameters) and loaded, then every
row written after its sequence number is replayed: each row holds its label's latest state, so
replay is idempotent and order-free. If anything does not check out (no record, missing, truncated
or corrupt file, a live count that differs from SQLite after replay) the index is rebuilt from all
live rows in SQLite and a warning is logged. Acknowledged writes are committed in SQLite before
the index sees them, so no crash loses one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from twostage.server.store.documents import Change, DocumentStore
from twostage.server.store.vector_index import (
    CorruptIndex,
    ExactIndex,
    HnswIndex,
    IndexParams,
    create_index,
    load_index,
)

log = logging.getLogger(__name__)

SNAPSHOT_META = "index.json"
SNAPSHOT_FORMAT = 1
_INDEX_FILE = re.compile(r"^index\.(\d+)\.bin$")
_REPLAY_CHUNK = 4096
_PROGRESS_MIN = 20_000  # show a progress bar for rebuilds at least this large


@dataclass(frozen=True)
class RecoveryReport:
    """How a collection's index came back: from a snapshot (+ replay), rebuilt, or new."""

    source: str  # "snapshot", "rebuild" or "empty"
    snapshot_seq: int  # sequence number of the snapshot loaded (0 when none)
    replayed: int  # rows replayed on top of the snapshot
    reason: str  # why a rebuild happened ("" otherwise)
    count: int  # live vectors after recovery
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "snapshot_seq": self.snapshot_seq,
            "replayed": self.replayed,
            "reason": self.reason,
            "count": self.count,
            "seconds": round(self.seconds, 3),
        }


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to ``path`` through a synced temp file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def read_snapshot_meta(folder: Path) -> dict[str, Any] | None:
    """The snapshot record, ``None`` when there is none; CorruptIndex when it is unreadable."""
    path = folder / SNAPSHOT_META
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptIndex(f"{SNAPSHOT_META} cannot be read ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != SNAPSHOT_FORMAT:
        raise CorruptIndex(f"{SNAPSHOT_META} has an unknown format")
    file = meta.get("file")
    if not isinstance(file, str) or not _INDEX_FILE.match(file):
        raise CorruptIndex(f"{SNAPSHOT_META} names no index file")
    if not isinstance(meta.get("seq"), int) or not isinstance(meta.get("count"), int):
        raise CorruptIndex(f"{SNAPSHOT_META} lacks seq or count")
    return meta


def _generations(folder: Path) -> list[int]:
    return [int(m.group(1)) for p in folder.iterdir() if (m := _INDEX_FILE.match(p.name))]


def write_snapshot(
    folder: Path,
    index: HnswIndex | ExactIndex,
    seq: int,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """Save ``index`` (which contains every write up to ``seq``) as the new snapshot.

    The caller keeps writes out meanwhile. Returns the new record; older index files are removed
    once the record points past them.
    """
    gens = _generations(folder)
    gen = max([*gens, int(previous.get("generation", 0)) if previous else 0]) + 1
    name = f"index.{gen:06d}.bin"
    info = index.save(folder / name)
    meta = {
        **info,
        "format": SNAPSHOT_FORMAT,
        "file": name,
        "generation": gen,
        "seq": int(seq),
        "written": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(folder / SNAPSHOT_META, meta)
    remove_stale_files(folder, keep=name)
    return meta


def remove_stale_files(folder: Path, keep: str | None) -> None:
    """Delete index files the record does not name and temp files left by a crash."""
    for path in folder.iterdir():
        stale_index = _INDEX_FILE.match(path.name) and path.name != keep
        temp = path.name.startswith(".") and path.name.endswith(".tmp")
        if stale_index or temp:
            path.unlink(missing_ok=True)


def _batches(items: Iterable[Change], size: int) -> Iterator[list[Change]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def replay(index: HnswIndex | ExactIndex, store: DocumentStore, after_seq: int) -> int:
    """Apply every row written after ``after_seq`` to ``index``; returns rows applied."""
    applied = 0
    for batch in _batches(store.changes_since(after_seq), _REPLAY_CHUNK):
        gone = [c.label for c in batch if c.deleted]
        live = [c for c in batch if not c.deleted]
        if gone:
            index.delete(gone)
        if live:
            vectors = np.stack([c.embedding for c in live])  # type: ignore[misc]
            index.add([c.label for c in live], vectors)
        applied += len(batch)
    return applied


def rebuild(store: DocumentStore, params: IndexParams, *, name: str = "") -> HnswIndex | ExactIndex:
    """A fresh index holding every live document of ``store``."""
    total = store.count()
    index = create_index(params, capacity=max(int(total * 1.25), 1))
    with tqdm(
        total=total, unit="doc", desc=f"rebuild index {name}".strip(), disable=total < _PROGRESS_MIN
    ) as bar:
        for labels, vectors in store.iter_all():
            index.add(labels, vectors, known_new=True)
            bar.update(len(labels))
    return index


def recover(
    folder: Path,
    store: DocumentStore,
    params: IndexParams,
    *,
    name: str = "",
) -> tuple[HnswIndex | ExactIndex, dict[str, Any] | None, RecoveryReport]:
    """Bring a collection's index back to the state of its SQLite store (see module doc).

    Returns the index, the snapshot record it came from (``None`` after a rebuild) and a report.
    """
    start = time.perf_counter()
    label = name or folder.name
    meta: dict[str, Any] | None = None
    try:
        meta = read_snapshot_meta(folder)
        if meta is None:
            raise CorruptIndex("no snapshot yet")
        _check_params(meta, params)
        if meta["seq"] > store.last_seq:
            raise CorruptIndex(
                f"snapshot seq {meta['seq']} is ahead of the database ({store.last_seq})"
            )
        index = load_index(folder / meta["file"], params, info=meta)
        replayed = replay(index, store, meta["seq"])
        live = store.count()
        if index.count() != live:
            raise CorruptIndex(f"index holds {index.count()} vectors, the database {live}")
    except (CorruptIndex, RuntimeError, ValueError, MemoryError) as exc:
        reason = str(exc)
        live = store.count()
        if meta is None and live == 0 and store.last_seq == 0:
            index = create_index(params)
            source, reason = "empty", ""
        else:
            log.warning(
                "collection %s: rebuilding the index from %d documents: %s", label, live, reason
            )
            index = rebuild(store, params, name=label)
            source = "rebuild"
        meta, replayed = None, 0
        remove_stale_files(folder, keep=None)
    else:
        source, reason = "snapshot", ""
        remove_stale_files(folder, keep=meta["file"])
    report = RecoveryReport(
        source=source,
        snapshot_seq=int(meta["seq"]) if meta else 0,
        replayed=replayed,
        reason=reason,
        count=index.count(),
        seconds=time.perf_counter() - start,
    )
    log.info(
        "collection %s: index ready from %s (%d vectors, %d replayed, %.2fs)",
        label,
        source,
        report.count,
        replayed,
        report.seconds,
    )
    return index, meta, report


def _check_params(meta: dict[str, Any], params: IndexParams) -> None:
    want = {"kind": params.kind, "dim": params.dim, "space": params.space}
    if params.kind == "hnsw":
        want["M"] = params.M
    for key, value in want.items():
        if meta.get(key) != value:
            raise CorruptIndex(f"snapshot {key} is {meta.get(key)!r}, the collection's {value!r}")
