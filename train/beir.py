"""BEIR folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv): read and validate them.

Validation happens before any model loads; an error names the file, the line and the field.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twostage.train.pairs import DataError, file_sha256


@dataclass(frozen=True)
class BeirSet:
    """A corpus, its queries and the relevance judgements of one or more splits."""

    folder: Path
    corpus_ids: list[str]
    corpus_texts: list[str]  # "title text" as BEIR evaluations embed them
    queries: dict[str, str]
    qrels: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # split -> q -> d

    def split_queries(self, split: str) -> list[str]:
        """Query ids judged in ``split``, in file order, that have at least one relevant doc."""
        return [q for q, docs in self.qrels[split].items() if any(v > 0 for v in docs.values())]

    def positives(self, split: str) -> dict[str, set[str]]:
        """Relevant doc ids (score > 0) per query of ``split``."""
        return {q: {d for d, v in docs.items() if v > 0} for q, docs in self.qrels[split].items()}

    def data_hashes(self, splits: list[str]) -> dict[str, str]:
        """sha256 of every file used, keyed by path relative to the folder."""
        names = ["corpus.jsonl", "queries.jsonl", *(f"qrels/{s}.tsv" for s in splits)]
        return {name: file_sha256(self.folder / name) for name in names}


def heldout_queries(query_ids: list[str], n: int, seed: int) -> tuple[list[str], list[str]]:
    """A seeded (train, held-back) split of query ids; order inside each part follows the input."""
    if n <= 0:
        return list(query_ids), []
    if n >= len(query_ids):
        raise DataError(f"{len(query_ids)} training queries are too few to hold back {n}")
    held = set(random.Random(seed).sample(query_ids, n))
    return [q for q in query_ids if q not in held], [q for q in query_ids if q in held]


def _jsonl(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    out = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})"
                ) from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{number}: expected a JSON object")
            for name in required:
                if name not in obj or obj[name] is None:
                    raise DataError(f"{path}:{number}: field {name!r}: missing")
            out.append((number, obj))
    return out


def load_beir(folder: str | Path, splits: list[str]) -> BeirSet:
    """Read a BEIR folder and the qrels of ``splits``; every qrels id must exist."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected a BEIR folder with corpus.jsonl)")
    corpus_ids: list[str] = []
    corpus_texts: list[str] = []
    seen: set[str] = set()
    corpus_path = folder / "corpus.jsonl"
    for number, obj in _jsonl(corpus_path, ("_id", "text")):
        doc_id = str(obj["_id"])
        title = obj.get("title") or ""
        text = f"{title} {obj['text']}".strip() if title else str(obj["text"]).strip()
        if not text:
            raise DataError(f"{corpus_path}:{number}: field 'text': empty text")
        if doc_id in seen:
            raise DataError(f"{corpus_path}:{number}: field '_id': duplicate id {doc_id!r}")
        seen.add(doc_id)
        corpus_ids.append(doc_id)
        corpus_texts.append(text)
    queries: dict[str, str] = {}
    queries_path = folder / "queries.jsonl"
    for number, obj in _jsonl(queries_path, ("_id", "text")):
        if not str(obj["text"]).strip():
            raise DataError(f"{queries_path}:{number}: field 'text': empty text")
        queries[str(obj["_id"])] = str(obj["text"])
    qrels = {
        split: _read_qrels(folder / "qrels" / f"{split}.tsv", queries, seen) for split in splits
    }
    return BeirSet(folder, corpus_ids, corpus_texts, queries, qrels)


def _read_qrels(path: Path, queries: dict[str, str], corpus: set[str]) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    judged: dict[str, dict[str, int]] = defaultdict(dict)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            cells = line.rstrip("\n").split("\t")
            if number == 1 and cells[0] == "query-id":
                continue
            if not line.strip():
                continue
            if len(cells) != 3:
                raise DataError(
                    f"{path}:{number}: expected 3 tab-separated fields "
                    f"(query-id, corpus-id, score), got {len(cells)}"
                )
            query_id, doc_id, score = cells
            if query_id not in queries:
                raise DataError(
                    f"{path}:{number}: field 'query-id': {query_id!r} is not in queries.jsonl"
                )
            if doc_id not in corpus:
                raise DataError(
                    f"{path}:{number}: field 'corpus-id': {doc_id!r} is not in corpus.jsonl"
                )
            try:
                judged[query_id][doc_id] = int(score)
            except ValueError:
                raise DataError(
                    f"{path}:{number}: field 'score': expected an integer, got {score!r}"
                ) from None
    if not judged:
        raise DataError(f"{path}: no judgements")
    return dict(judged)


def sample_beir(
    folder: str | Path, out: str | Path, *, split: str, queries: int, extra_docs: int, seed: int
) -> Path:
    """Write a small BEIR folder: ``queries`` judged queries of ``split``, their relevant docs and
    ``extra_docs`` other docs (seeded). For quick tries and tests on real data."""
    folder, out = Path(folder), Path(out)
    beir = load_beir(folder, [split])
    rng = random.Random(seed)
    chosen = sorted(
        rng.sample(beir.split_queries(split), queries), key=beir.split_queries(split).index
    )
    relevant = {d for q in chosen for d in beir.qrels[split][q]}
    others = [d for d in beir.corpus_ids if d not in relevant]
    keep = relevant | set(rng.sample(others, min(extra_docs, len(others))))
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (
        (folder / "corpus.jsonl").open(encoding="utf-8") as src,
        (out / "corpus.jsonl").open("w", encoding="utf-8") as dst,
    ):
        for line in src:
            if line.strip() and str(json.loads(line)["_id"]) in keep:
                dst.write(line if line.endswith("\n") else line + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as dst:
        for q in chosen:
            dst.write(json.dumps({"_id": q, "text": beir.queries[q]}) + "\n")
    with (out / "qrels" / f"{split}.tsv").open("w", encoding="utf-8") as dst:
        dst.write("query-id\tcorpus-id\tscore\n")
        for q in chosen:
            for d, score in beir.qrels[split][q].items():
                dst.write(f"{q}\t{d}\t{score}\n")
    return out
