"""Vector indexes behind one small interface: hnswlib in process (default) and exact numpy search.

Scores are similarities, higher is better: cosine and ip give ``1 - hnswlib distance`` (the cosine
similarity, resp. the dot product), l2 gives the negative squared distance. Labels are int64.

hnswlib is not safe for ``add_items`` concurrent with ``knn_query``, and ``resize_index`` is safe
with neither (its README), so :class:`HnswIndex` holds a readers-writer lock: searches share it,
writes (add, delete, resize, set_ef) take it alone. ``save`` only reads the graph, so it shares
the lock too and searches go on while a snapshot is written.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import hnswlib
import numpy as np

Space = Literal["cosine", "ip", "l2"]
SPACES: tuple[str, ...] = ("cosine", "ip", "l2")
LabelFilter = Callable[[int], bool]

DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 200
DEFAULT_EF = 64
_MIN_CAPACITY = 64
_GROWTH = 2.0

# hnswlib's file header (hnswalg.h saveIndex): offsetLevel0, max_elements, cur_element_count,
# size_data_per_element, label_offset, offsetData (size_t), maxlevel (int), enterpoint (uint32),
# maxM, maxM0, M (size_t), mult (double), ef_construction (size_t).
_HNSW_HEADER = struct.Struct("<QQQQQQiIQQQdQ")


class CorruptIndex(Exception):
    """An index file is missing, truncated, or does not match what its metadata says."""


@runtime_checkable
class VectorIndex(Protocol):
    """What a collection needs from a vector index; hnswlib, exact numpy or a remote engine."""

    dim: int
    space: str

    def add(
        self,
        labels: Sequence[int] | np.ndarray,
        vectors: np.ndarray,
        *,
        known_new: bool = False,
    ) -> None:
        """Insert vectors; a label already present gets its vector replaced. ``known_new`` is a
        promise that no label is present (bulk rebuilds), which lets an index skip lookups."""
        ...

    def delete(self, labels: Sequence[int] | np.ndarray) -> int:
        """Remove labels (absent ones are ignored); returns how many were live."""
        ...

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        filter: LabelFilter | None = None,
        max_matches: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` as (labels int64, scores float32), best first; fewer if fewer match.

        ``filter`` keeps the labels it returns True for; ``max_matches`` says how many labels it
        allows, where the caller knows."""
        ...

    def count(self) -> int:
        """Live vectors."""
        ...

    def save(self, path: str | Path) -> dict[str, Any]:
        """Write the index atomically to ``path``; return the facts its loader checks."""
        ...


class ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers so writes are not starved."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def check_space(space: str) -> str:
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}; got {space!r}")
    return space


def _as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"vectors must have shape (n, {dim}); got {np.shape(vectors)}")
    return np.ascontiguousarray(arr)


def _as_labels(labels: Sequence[int] | np.ndarray, n: int | None = None) -> np.ndarray:
    arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"got {arr.shape[0]} labels for {n} vectors")
    if arr.size and arr.min() < 0:
        raise ValueError("labels must be >= 0")
    if np.unique(arr).shape[0] != arr.shape[0]:
        raise ValueError("labels must be unique within one call")
    return arr


def _empty_result() -> tuple[np.ndarray, np.ndarray]:
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)


def _distance_to_score(space: str, distances: np.ndarray) -> np.ndarray:
    # hnswlib: ip and cosine distance = 1 - dot (cosine on normalised vectors); l2 = squared L2.
    if space == "l2":
        return (-distances).astype(np.float32)
    return (1.0 - distances).astype(np.float32)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, streamed."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _atomic_write(path: Path, write: Callable[[Path], None]) -> dict[str, Any]:
    """Run ``write(tmp)`` on a temp file beside ``path``, fsync it, rename over ``path``.

    A crash leaves either the old file or the new one, never a half-written file under ``path``.
    """
    path = Path(path)
    folder = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        _fsync_file(tmp)
        info = {"size": tmp.stat().st_size, "sha256": file_sha256(tmp)}
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    return info


def _verify_file(path: Path, info: dict[str, Any] | None) -> None:
    if not path.is_file():
        raise CorruptIndex(f"index file {path.name} is missing")
    if info is None:
        return
    size = path.stat().st_size
    if "size" in info and size != info["size"]:
        raise CorruptIndex(
            f"index file {path.name} has {size} bytes; its metadata says {info['size']}"
        )
    if "sha256" in info and file_sha256(path) != info["sha256"]:
        raise CorruptIndex(f"index file {path.name} does not match its sha256")


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def _check_hnsw_header(path: Path, dim: int) -> dict[str, int]:
    """Validate hnswlib's header before hnswlib reads it: garbage must not become a huge malloc."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(_HNSW_HEADER.size)
    if len(head) < _HNSW_HEADER.size:
        raise CorruptIndex(f"index file {path.name} is truncated ({size} bytes)")
    (
        offset0,
        max_elements,
        count,
        per_element,
        _label_offset,
        _offset_data,
        _max_level,
        _entry,
        max_m,
        max_m0,
        m,
        _mult,
        ef_construction,
    ) = _HNSW_HEADER.unpack(head)
    expected_per_element = (max_m0 * 4 + 4) + dim * 4 + 8
    problems = []
    if offset0 != 0 or m < 2 or max_m != m or max_m0 != 2 * m:
        problems.append("bad header")
    if per_element != expected_per_element:
        problems.append(f"element size {per_element} does not fit dim {dim} and M {m}")
    if count > max_elements:
        problems.append(f"{count} elements exceed capacity {max_elements}")
    if max_elements * max(per_element, 1) > _physical_memory():
        problems.append(f"capacity {max_elements} does not fit in memory")
    if size < _HNSW_HEADER.size + count * (per_element + 4):
        problems.append(f"truncated ({size} bytes for {count} elements)")
    if problems:
        raise CorruptIndex(f"index file {path.name}: {'; '.join(problems)}")
    return {
        "count": count,
        "max_elements": max_elements,
        "M": m,
        "ef_construction": ef_construction,
        "per_element": per_element,
        "max_level": _max_level,
        "entry": _entry,
        "max_m": max_m,
        "max_m0": max_m0,
    }


def _check_hnsw_graph(path: Path, header: dict[str, int], dim: int) -> None:
    """Check the graph hnswlib is about to trust: every link names an element that exists on that
    level, every count fits its list, the entry point sits on the top level, vectors are finite.

    hnswlib follows links without bounds checks, so a garbled body whose recorded sha256 was made
    to match would crash the process on the first search (and on every restart). Reads the file
    once (level 0 vectorized in chunks, upper levels a list each); about as costly as the sha256.
    """
    count, per_element = header["count"], header["per_element"]
    max_m, max_m0, max_level, entry = (
        header["max_m"],
        header["max_m0"],
        header["max_level"],
        header["entry"],
    )

    def bad(problem: str) -> CorruptIndex:
        return CorruptIndex(f"index file {path.name}: {problem}")

    data = np.memmap(path, dtype=np.uint8, mode="r")
    level0 = np.dtype(
        {
            "names": ["n", "links", "vector"],
            "formats": ["<u2", ("<u4", (max_m0,)), ("<f4", (dim,))],
            "offsets": [0, 4, 4 + 4 * max_m0],
            "itemsize": per_element,
        }
    )
    start = _HNSW_HEADER.size
    columns = np.arange(max_m0)
    for first in range(0, count, 65536):
        block = np.frombuffer(data, level0, min(65536, count - first), start + first * per_element)
        sizes = block["n"].astype(np.int64)
        if sizes.max(initial=0) > max_m0:
            raise bad(f"a level-0 list holds more than {max_m0} links")
        if np.any(block["links"][columns[None, :] < sizes[:, None]] >= count):
            raise bad("a level-0 link names no element")
        if not np.all(np.isfinite(block["vector"])):
            raise bad("a stored vector is not finite")
    # Upper levels: per element a byte count, then that many bytes of (count, max_m links) lists.
    levels = np.zeros(count, dtype=np.int64)
    upper: list[tuple[int, int, int]] = []  # (element, list offset, levels)
    list_bytes = 4 * max_m + 4
    offset = start + count * per_element
    size = data.size
    raw = memoryview(data)  # type: ignore[arg-type]
    try:
        read_u4 = struct.Struct("<I").unpack_from
        for element in range(count):
            if offset + 4 > size:
                raise bad("truncated upper-level lists")
            (nbytes,) = read_u4(raw, offset)
            offset += 4
            if not nbytes:
                continue
            n_levels, rest = divmod(nbytes, list_bytes)
            if rest or offset + nbytes > size or n_levels > max_level:
                raise bad(f"element {element}: bad upper-level list size {nbytes}")
            levels[element] = n_levels
            upper.append((element, offset, n_levels))
            offset += nbytes
    finally:
        raw.release()
    if offset != size:
        raise bad(f"{size - offset} bytes after the last list")
    if count and not (0 <= entry < count and levels[entry] == max_level == levels.max()):
        raise bad(f"entry point {entry} is not on the top level {max_level}")
    for element, at, n_levels in upper:
        lists = np.frombuffer(data, "<u4", n_levels * (max_m + 1), at).reshape(n_levels, -1)
        counts = lists[:, 0] & 0xFFFF
        if np.any(counts > max_m):
            raise bad(f"element {element}: an upper-level list holds more than {max_m}")
        for level, (k, row) in enumerate(zip(counts, lists[:, 1:], strict=True), start=1):
            links = row[:k]
            if np.any(links >= count) or np.any(levels[links] < level):
                raise bad(f"element {element}: a level-{level} link names no element there")


class HnswIndex:
    """hnswlib HNSW index with a readers-writer lock, geometric growth and slot reuse.

    Deletes are ``mark_deleted``; the index is built with ``allow_replace_deleted`` so new labels
    take the slots of deleted ones. ``ef`` is the default search breadth; a query asks for
    ``max(k, ef)`` neighbours and keeps the best ``k`` (hnswlib searches with ``max(ef, k)``), so
    per-request ``ef`` needs no shared state and concurrent searches never race on ``set_ef``.
    """

    def __init__(
        self,
        dim: int,
        space: str = "cosine",
        *,
        M: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        ef: int = DEFAULT_EF,
        capacity: int = _MIN_CAPACITY,
        num_threads: int | None = None,
        seed: int = 100,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1; got {dim}")
        self.dim = int(dim)
        self.space = check_space(space)
        self.M = int(M)
        self.ef_construction = int(ef_construction)
        self._ef = max(1, int(ef))
        self._lock = ReadWriteLock()
        self._count = 0
        self._index = hnswlib.Index(space=self.space, dim=self.dim)
        self._index.set_num_threads(num_threads or os.cpu_count() or 1)
        self._index.init_index(
            max_elements=max(int(capacity), _MIN_CAPACITY),
            M=self.M,
            ef_construction=self.ef_construction,
            random_seed=seed,
            allow_replace_deleted=True,
        )
        self._index.set_ef(self._ef)

    # -- reads -------------------------------------------------------------------------------

    @property
    def ef(self) -> int:
        return self._ef

    @property
    def capacity(self) -> int:
        return int(self._index.get_max_elements())

    @property
    def slots(self) -> int:
        """Slots in use, deleted ones included (they are reused before the index grows)."""
        return int(self._index.get_current_count())

    def count(self) -> int:
        return self._count

    def __len__(self) -> int:
        return self._count

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        filter: LabelFilter | None = None,
        max_matches: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top ``k`` by similarity. ``filter`` keeps labels it returns True for;
        ``max_matches`` (how many labels the filter allows, where known) bounds the request."""
        query = _as_matrix(vector, self.dim)
        if query.shape[0] != 1:
            raise ValueError("search takes one vector")
        with self._lock.read():
            live = self._count if max_matches is None else min(self._count, max_matches)
            if k <= 0 or live <= 0:
                return _empty_result()
            want = min(k, live)
            # Asking for more neighbours is how a larger ef is applied per request.
            ask = min(max(want, ef or 0), live)
            found = self._knn(query, ask, filter)
            if found is None and ask > want:
                found = self._knn(query, want, filter)
            if found is None:
                # Fewer than `want` reachable (a selective filter, a graph cut by deletions):
                # hnswlib refuses a ragged answer, so find the most it can give by bisection.
                lo, hi = 0, want  # lo succeeds (or is 0), hi fails
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    got = self._knn(query, mid, filter)
                    if got is None:
                        hi = mid
                    else:
                        lo, found = mid, got
                if found is None:
                    return _empty_result()
        labels, distances = found
        labels = labels[0, :want].astype(np.int64)
        scores = _distance_to_score(self.space, distances[0, :want])
        return labels, scores

    def _knn(
        self, query: np.ndarray, k: int, filter: LabelFilter | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            return self._index.knn_query(query, k=k, filter=filter)
        except RuntimeError:
            return None

    # -- writes ------------------------------------------------------------------------------

    def set_ef(self, ef: int) -> None:
        """Default search breadth (hnswlib does not save it: set after every load)."""
        with self._lock.write():
            self._ef = max(1, int(ef))
            self._index.set_ef(self._ef)

    def add(
        self,
        labels: Sequence[int] | np.ndarray,
        vectors: np.ndarray,
        *,
        known_new: bool = False,
    ) -> None:
        """Insert or replace. ``known_new`` (bulk rebuilds only) skips the per-label membership
        probe: the caller guarantees no label is in the index, deleted or not."""
        data = _as_matrix(vectors, self.dim)
        labs = _as_labels(labels, data.shape[0])
        if not labs.size:
            return
        if not np.isfinite(data).all():
            raise ValueError("vectors must be finite")
        with self._lock.write():
            new_rows: list[int] = list(range(labs.shape[0])) if known_new else []
            update_rows: list[int] = []
            for row, label in enumerate([] if known_new else labs.tolist()):
                state = self._label_state(label)
                if state == "absent":
                    new_rows.append(row)
                else:
                    update_rows.append(row)
                    if state == "revived":
                        self._count += 1
            if update_rows:
                # A present label: hnswlib updates its vector in place.
                self._index.add_items(data[update_rows], labs[update_rows])
            if new_rows:
                vacant = self.slots - self._count
                self._reserve(self.slots + max(0, len(new_rows) - vacant))
                # replace_deleted: new labels take the slots of deleted ones first.
                self._index.add_items(data[new_rows], labs[new_rows], replace_deleted=True)
                self._count += len(new_rows)

    def _label_state(self, label: int) -> str:
        """'live', 'revived' (was deleted, now unmarked) or 'absent'; probes hnswlib, whose
        Python API has no membership test. Caller holds the write lock."""
        try:
            self._index.get_items([label], return_type="numpy")
            return "live"
        except RuntimeError:
            pass
        try:
            # A deleted label still in the graph must be unmarked before it can be updated
            # (hnswlib refuses addPoint on a deleted label when replacement is enabled).
            self._index.unmark_deleted(label)
            return "revived"
        except RuntimeError:
            return "absent"

    def _reserve(self, needed: int) -> None:
        capacity = self.capacity
        if needed > capacity:
            self._index.resize_index(max(needed, int(capacity * _GROWTH), _MIN_CAPACITY))

    def delete(self, labels: Sequence[int] | np.ndarray) -> int:
        labs = np.unique(np.asarray(labels, dtype=np.int64).reshape(-1))
        removed = 0
        with self._lock.write():
            for label in labs.tolist():
                try:
                    self._index.mark_deleted(label)
                except RuntimeError:
                    continue  # absent or already deleted: deletes are idempotent
                removed += 1
            self._count -= removed
        return removed

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | Path) -> dict[str, Any]:
        """Write hnswlib's file atomically (temp file beside it, fsync, rename).

        Returns what :meth:`load` checks: kind, dim, space, M, count (hnswlib cannot say how many
        of its labels are deleted), size and sha256. ``ef`` is not in hnswlib's file.
        """
        with self._lock.read():
            info = _atomic_write(Path(path), lambda tmp: self._index.save_index(str(tmp)))
            info.update(self._params())
            info["count"] = self._count
        return info

    def _params(self) -> dict[str, Any]:
        return {
            "kind": "hnsw",
            "dim": self.dim,
            "space": self.space,
            "M": self.M,
            "ef_construction": self.ef_construction,
        }

    @classmethod
    def load(
        cls,
        path: str | Path,
        dim: int,
        space: str,
        *,
        ef: int = DEFAULT_EF,
        info: dict[str, Any] | None = None,
        num_threads: int | None = None,
    ) -> HnswIndex:
        """Load a saved index. With ``info`` (from :meth:`save`) size, sha256 and params are
        checked before hnswlib reads the file; without it the live count is probed label by
        label (slow: about 20 us per label). Raises :class:`CorruptIndex`."""
        path = Path(path)
        _verify_file(path, info)
        header = _check_hnsw_header(path, dim)
        _check_hnsw_graph(path, header, dim)
        if info is not None:
            for key, want in (("dim", dim), ("space", space), ("M", header["M"])):
                if key in info and info[key] != want:
                    raise CorruptIndex(f"index file {path.name}: {key} is {info[key]}, want {want}")
        self = cls.__new__(cls)
        self.dim = int(dim)
        self.space = check_space(space)
        self.M = header["M"]
        self.ef_construction = header["ef_construction"]
        self._ef = max(1, int(ef))
        self._lock = ReadWriteLock()
        self._index = hnswlib.Index(space=self.space, dim=self.dim)
        self._index.set_num_threads(num_threads or os.cpu_count() or 1)
        try:
            self._index.load_index(str(path), allow_replace_deleted=True)
        except (RuntimeError, MemoryError, ValueError) as exc:
            raise CorruptIndex(f"index file {path.name}: hnswlib cannot load it ({exc})") from exc
        self._index.set_ef(self._ef)  # not saved by hnswlib
        if info is not None and "count" in info:
            self._count = int(info["count"])
            if not 0 <= self._count <= self.slots:
                raise CorruptIndex(
                    f"index file {path.name}: count {self._count} does not fit {self.slots} slots"
                )
        else:
            self._count = self._probe_live()
        return self

    def _probe_live(self) -> int:
        live = 0
        for label in self._index.get_ids_list():
            try:
                self._index.get_items([label], return_type="numpy")
                live += 1
            except RuntimeError:
                pass
        return live


class ExactIndex:
    """Brute-force numpy index with the :class:`VectorIndex` interface: exact results for tests
    and tiny collections. Thread-safe through the same readers-writer lock."""

    def __init__(self, dim: int, space: str = "cosine") -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1; got {dim}")
        self.dim = int(dim)
        self.space = check_space(space)
        self._lock = ReadWriteLock()
        self._vectors = np.empty((0, self.dim), dtype=np.float32)
        self._labels = np.empty(0, dtype=np.int64)
        self._rows: dict[int, int] = {}
        self._n = 0

    def count(self) -> int:
        return self._n

    def __len__(self) -> int:
        return self._n

    def _prepare(self, data: np.ndarray) -> np.ndarray:
        if self.space != "cosine":
            return data
        norms = np.linalg.norm(data, axis=1, keepdims=True)
        return data / np.maximum(norms, 1e-30)

    def add(
        self,
        labels: Sequence[int] | np.ndarray,
        vectors: np.ndarray,
        *,
        known_new: bool = False,
    ) -> None:
        data = _as_matrix(vectors, self.dim)
        labs = _as_labels(labels, data.shape[0])
        if not np.isfinite(data).all():
            raise ValueError("vectors must be finite")
        data = self._prepare(data)
        with self._lock.write():
            needed = self._n + sum(1 for lab in labs.tolist() if lab not in self._rows)
            if needed > self._vectors.shape[0]:
                cap = max(needed, 2 * self._vectors.shape[0], 64)
                vectors = np.empty((cap, self.dim), dtype=np.float32)
                vectors[: self._n] = self._vectors[: self._n]
                labels_arr = np.empty(cap, dtype=np.int64)
                labels_arr[: self._n] = self._labels[: self._n]
                self._vectors, self._labels = vectors, labels_arr
            for i, label in enumerate(labs.tolist()):
                row = self._rows.get(label)
                if row is None:
                    row = self._n
                    self._rows[label] = row
                    self._labels[row] = label
                    self._n += 1
                self._vectors[row] = data[i]

    def delete(self, labels: Sequence[int] | np.ndarray) -> int:
        removed = 0
        with self._lock.write():
            for label in np.unique(np.asarray(labels, dtype=np.int64).reshape(-1)).tolist():
                row = self._rows.pop(label, None)
                if row is None:
                    continue
                last = self._n - 1
                if row != last:  # move the last row into the hole
                    moved = int(self._labels[last])
                    self._vectors[row] = self._vectors[last]
                    self._labels[row] = moved
                    self._rows[moved] = row
                self._n -= 1
                removed += 1
        return removed

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        ef: int | None = None,
        filter: LabelFilter | None = None,
        max_matches: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        query = self._prepare(_as_matrix(vector, self.dim))
        if query.shape[0] != 1:
            raise ValueError("search takes one vector")
        with self._lock.read():
            vectors = self._vectors[: self._n]
            labels = self._labels[: self._n]
            if filter is not None and self._n:
                keep = np.fromiter((bool(filter(int(x))) for x in labels), bool, count=self._n)
                vectors, labels = vectors[keep], labels[keep]
            scores = exact_scores(self.space, vectors, query[0])
        return top_k(labels, scores, k)

    def save(self, path: str | Path) -> dict[str, Any]:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, labels=self._labels[: self._n], vectors=self._vectors[: self._n])

        with self._lock.read():
            info = _atomic_write(Path(path), write)
            info.update({"kind": "exact", "dim": self.dim, "space": self.space, "count": self._n})
        return info

    @classmethod
    def load(
        cls,
        path: str | Path,
        dim: int,
        space: str,
        *,
        info: dict[str, Any] | None = None,
        **_: Any,
    ) -> ExactIndex:
        path = Path(path)
        _verify_file(path, info)
        try:
            with np.load(path, allow_pickle=False) as data:
                labels, vectors = data["labels"], data["vectors"]
        except (OSError, ValueError, KeyError) as exc:
            raise CorruptIndex(f"index file {path.name} cannot be read ({exc})") from exc
        if vectors.ndim != 2 or vectors.shape[1] != dim or labels.shape[0] != vectors.shape[0]:
            raise CorruptIndex(f"index file {path.name} does not hold {dim}-dim vectors")
        if info is not None and info.get("count", labels.shape[0]) != labels.shape[0]:
            raise CorruptIndex(f"index file {path.name}: count does not match its metadata")
        self = cls(dim, space)
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._labels = labels.astype(np.int64)
        self._rows = {int(label): i for i, label in enumerate(self._labels.tolist())}
        self._n = int(labels.shape[0])
        return self


def exact_scores(space: str, vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Similarities of ``vectors`` to ``query`` with the conventions of :class:`HnswIndex`
    (cosine expects both sides normalised already)."""
    if space == "l2":
        diff = vectors - query
        return -np.einsum("ij,ij->i", diff, diff).astype(np.float32)
    return (vectors @ query).astype(np.float32)


def top_k(labels: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` (labels, scores) by descending score; ties by label for a stable order."""
    n = scores.shape[0]
    if k <= 0 or n == 0:
        return _empty_result()
    part = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
    order = part[np.lexsort((labels[part], -scores[part]))]
    return labels[order].astype(np.int64), scores[order].astype(np.float32)


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    arr = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    return arr / np.maximum(norms, 1e-30)


@dataclass(frozen=True)
class IndexParams:
    """How a collection's index is built: kind (``hnsw`` or ``exact``) and its parameters."""

    dim: int
    space: str = "cosine"
    kind: str = "hnsw"
    M: int = DEFAULT_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    ef: int = DEFAULT_EF
    num_threads: int | None = None


INDEX_KINDS: tuple[str, ...] = ("hnsw", "exact")


def create_index(params: IndexParams, capacity: int = _MIN_CAPACITY) -> HnswIndex | ExactIndex:
    """A new empty index of ``params.kind``."""
    if params.kind == "hnsw":
        return HnswIndex(
            params.dim,
            params.space,
            M=params.M,
            ef_construction=params.ef_construction,
            ef=params.ef,
            capacity=capacity,
            num_threads=params.num_threads,
        )
    if params.kind == "exact":
        return ExactIndex(params.dim, params.space)
    raise ValueError(f"index kind must be one of {', '.join(INDEX_KINDS)}; got {params.kind!r}")


def load_index(
    path: str | Path,
    params: IndexParams,
    info: dict[str, Any] | None = None,
) -> HnswIndex | ExactIndex:
    """Load a saved index of ``params.kind``, checking it against ``info`` (from ``save``)."""
    if info is not None and info.get("kind", params.kind) != params.kind:
        raise CorruptIndex(f"index file {Path(path).name} is a {info.get('kind')} index")
    if params.kind == "hnsw":
        index = HnswIndex.load(
            path,
            params.dim,
            params.space,
            ef=params.ef,
            info=info,
            num_threads=params.num_threads,
        )
        if index.M != params.M:
            raise CorruptIndex(f"index file {Path(path).name} has M {index.M}, want {params.M}")
        return index
    if params.kind == "exact":
        return ExactIndex.load(path, params.dim, params.space, info=info)
    raise ValueError(f"index kind must be one of {', '.join(INDEX_KINDS)}; got {params.kind!r}")
