"""First-stage Search latency by mode through a running server, interleaved per query.

Every query is sent once in each mode (dense, lexical, hybrid, the collection's default) in a
rotating order, so machine noise hits all modes alike; p50/p90/p99 of the client-side latency
and the ratio to dense-only come out of the same run. Reranking is off except in ``default``
(which applies whatever the collection's default is).

    python bench/bench_search_modes.py COLLECTION [--address HOST:PORT] [--top-k 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import machine, markdown_table, now, scifact_queries, write_results

from twostage.clients import TwostageClient

MODES = {
    "dense": {"retrieval": "dense", "rerank": False},
    "lexical": {"retrieval": "lexical", "rerank": False},
    "hybrid": {"retrieval": "hybrid", "rerank": False},
    "default": {},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection")
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--name", default="search-modes-cpu")
    args = parser.parse_args()
    queries = scifact_queries(args.queries)
    names = list(MODES)
    seconds: dict[str, list[float]] = {m: [] for m in names}
    rankings: dict[str, str] = {}
    with TwostageClient(args.address) as client:
        for q in queries[:20]:  # warm-up
            for m in names:
                client.search(args.collection, q, top_k=args.top_k, **MODES[m])
        for i, q in enumerate(queries):
            for m in names[i % len(names) :] + names[: i % len(names)]:
                start = time.perf_counter()
                reply = client.search_detailed(args.collection, q, top_k=args.top_k, **MODES[m])
                seconds[m].append(time.perf_counter() - start)
                rankings[m] = reply.ranking
    p50_dense = float(np.percentile(seconds["dense"], 50))
    results, rows = {}, []
    for m in names:
        ms = np.asarray(seconds[m]) * 1e3
        p50, p90, p99 = (float(np.percentile(ms, p)) for p in (50, 90, 99))
        ratio = p50 / (p50_dense * 1e3)
        results[m] = {
            "ranking": rankings[m],
            "p50_ms": round(p50, 2),
            "p90_ms": round(p90, 2),
            "p99_ms": round(p99, 2),
            "p50_vs_dense": round(ratio, 2),
        }
        rows.append([m, rankings[m], f"{p50:.1f}", f"{p90:.1f}", f"{p99:.1f}", f"{ratio:.2f}x"])
    table = markdown_table(["mode", "ranking", "p50 ms", "p90 ms", "p99 ms", "p50 / dense"], rows)
    data = {
        "what": f"Search latency by mode, {args.collection}, top_k {args.top_k}, one client",
        "queries": len(queries),
        "when": now(),
        "machine": machine(),
        "results": results,
    }
    write_results(args.name, data, table + "\n")
    print(table)


if __name__ == "__main__":
    main()
