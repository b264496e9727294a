"""The rerank stage's quality/latency curve over its depth, through a running server.

For each depth (10, 20, 30, 50, 100) every judged query of a BEIR split is searched with the
hybrid first stage and the cross-encoder reranking the best ``depth`` candidates (the bundle's
fitted fusion of first stage and cross-encoder), next to the first stage alone in the same run.
The collection must hold the corpus (``twostage ingest``).

    python bench/bench_rerank_depth.py COLLECTION BEIR_DIR [--split test] [--address HOST:PORT]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import machine, markdown_table, now, write_results

from twostage.clients import TwostageClient
from twostage.clients.beir import EvalSplit, compute_metrics, paired_test, per_query_ndcg10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection")
    parser.add_argument("beir_dir", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--depths", default="10,20,30,50,100")
    parser.add_argument("--name", default="rerank-depth-cpu")
    args = parser.parse_args()
    split = EvalSplit.load(args.beir_dir, args.split)
    depths = [0] + [int(d) for d in args.depths.split(",")]
    rows, results = [], {}
    with TwostageClient(args.address, timeout=600) as client:
        base = None
        for depth in depths:
            run, latency, ranking = {}, [], ""
            for qid, text in split.queries.items():
                start = time.perf_counter()
                reply = client.search_detailed(
                    args.collection,
                    text,
                    top_k=100,
                    candidates=100,
                    retrieval="hybrid",
                    rerank=depth > 0,
                    rerank_depth=depth,
                )
                latency.append(time.perf_counter() - start)
                run[qid] = [(h.id, h.score) for h in reply.hits]
                ranking = reply.ranking
            metrics = compute_metrics(split.qrels, run)
            per_query = per_query_ndcg10(split.qrels, run)
            if base is None:
                base = per_query
            delta, p = paired_test(per_query, base)
            p50 = float(np.percentile(np.asarray(latency) * 1e3, 50))
            name = "first stage" if depth == 0 else f"rerank depth {depth}"
            results[name] = {
                "ranking": ranking,
                "ndcg10": metrics["nDCG@10"],
                "delta_vs_first_stage": delta,
                "p_vs_first_stage": p,
                "p50_ms": round(p50, 1),
                "p99_ms": round(float(np.percentile(np.asarray(latency) * 1e3, 99)), 1),
            }
            print(name, results[name], flush=True)
            rows.append(
                [name, f"{metrics['nDCG@10']:.4f}", f"{delta:+.4f}", f"{p:.3g}", f"{p50:.0f}"]
            )
    table = markdown_table(["stage", "nDCG@10", "vs first stage", "p", "p50 ms"], rows)
    data = {
        "what": f"rerank depth curve, {args.collection} {args.split}",
        "queries": len(split.queries),
        "when": now(),
        "machine": machine(),
        "results": results,
    }
    write_results(args.name, data, table + "\n")
    print(table)


if __name__ == "__main__":
    main()
