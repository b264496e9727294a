"""Lexical channel speed: BM25 top-100 (SQLite FTS5 over the english analyzer) as a collection
grows from 5k to 50k and 500k documents.

The corpus is SciFact's 5,183 abstracts; larger sizes add perturbed copies (each copy keeps a
random 80% of a source abstract's words, in order, with a copy tag), so term statistics stay
those of real text. Queries are the 300 SciFact test claims through ``Collection.lexical_search``
(analysis, FTS5 match, BM25 ranking and the document fetch), in one thread, after one warm-up
pass; and the hybrid search's lexical channel (``Collection.lexical_channel``: the same top 100
plus every match's BM25, which fills the dense candidates' scores). Embeddings are dummies: the
lexical channel never reads them.

    python bench/bench_lexical.py [--sizes 5000,50000,500000]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import (
    DATA,
    machine,
    markdown_table,
    now,
    scifact_passages,
    write_results,
)

from twostage.server.store.collections import CollectionManager

BATCH = 5000


def documents(n: int, seed: int = 0) -> list[str]:
    base = scifact_passages(None)
    out = list(base[:n])
    rng = random.Random(seed)
    copy = 0
    while len(out) < n:
        copy += 1
        for text in base:
            if len(out) >= n:
                break
            words = text.split()
            kept = [w for w in words if rng.random() < 0.8] or words
            out.append(f"copy{copy} " + " ".join(kept))
    return out


def test_queries() -> list[str]:
    wanted = set()
    with (DATA / "scifact" / "qrels" / "test.tsv").open() as f:
        next(f)
        wanted = {line.split("\t")[0] for line in f}
    out = []
    with (DATA / "scifact" / "queries.jsonl").open() as f:
        for line in f:
            row = json.loads(line)
            if row["_id"] in wanted:
                out.append(row["text"])
    return out


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {f"p{q}": round(float(np.percentile(ms, q)), 2) for q in (50, 90, 99)}


def run(size: int, queries: list[str]) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix="bench-lexical-"))
    try:
        manager = CollectionManager(folder)
        collection = manager.create("bench", dim=4, index="exact")
        texts = documents(size)
        start = time.perf_counter()
        for s in range(0, size, BATCH):
            part = texts[s : s + BATCH]
            collection.upsert(
                [str(i) for i in range(s, s + len(part))],
                part,
                None,
                np.ones((len(part), 4), dtype=np.float32),
            )
        index_s = time.perf_counter() - start
        for q in queries[:50]:
            collection.lexical_search(q, 100)
            collection.lexical_channel(q, 100)
        seconds, channel = [], []
        for q in queries:
            t = time.perf_counter()
            collection.lexical_search(q, 100)
            seconds.append(time.perf_counter() - t)
            t = time.perf_counter()
            collection.lexical_channel(q, 100)
            channel.append(time.perf_counter() - t)
        db = folder / "collections" / "bench" / "documents.sqlite"
        size_mb = db.stat().st_size / 1e6
        manager.close_all(snapshot=False)
        return {
            "documents": size,
            "index_s": round(index_s, 1),
            "index_docs_per_s": round(size / index_s),
            "database_mb": round(size_mb, 1),
            "top100_ms": _percentiles(seconds),
            "hybrid_channel_ms": _percentiles(channel),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5000,50000,500000")
    args = parser.parse_args()
    queries = test_queries()
    rows = []
    results = []
    for size in (int(x) for x in args.sizes.split(",")):
        r = run(size, queries)
        print(json.dumps(r), flush=True)
        results.append(r)
        ms, hy = r["top100_ms"], r["hybrid_channel_ms"]
        rows.append(
            [
                f"{size:,}",
                f"{ms['p50']:.1f}",
                f"{ms['p99']:.1f}",
                f"{hy['p50']:.1f}",
                f"{hy['p99']:.1f}",
                f"{r['index_docs_per_s']:,}",
                f"{r['database_mb']:.0f}",
            ]
        )
    table = markdown_table(
        [
            "documents",
            "top-100 p50 ms",
            "p99 ms",
            "hybrid channel p50 ms",
            "p99 ms",
            "indexed docs/s",
            "SQLite MB",
        ],
        rows,
    )
    data = {
        "what": "lexical top-100 (FTS5 BM25, english analyzer) over SciFact + perturbed copies",
        "queries": len(queries),
        "when": now(),
        "machine": machine(),
        "results": results,
    }
    write_results("lexical-cpu", data, table + "\n")
    print(table)


if __name__ == "__main__":
    main()
