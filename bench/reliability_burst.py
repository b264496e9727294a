"""Overload: an open-loop burst at a multiple of the measured capacity, with deadlines.

For each workload (Embed of a few short texts; dense Search; Search with rerank when the reranker
bundle is present) against a fresh ``twostage serve``:

1. closed loop: ``--clients`` callers back to back for ``--closed-seconds``: capacity = OK/s;
2. open loop: Poisson arrivals at ``--factor`` x capacity for ``--seconds``, every call with a
   ``--deadline``; the client never cancels a call itself.

Reported per workload: offered and achieved arrival rate, OK count and goodput (OK/s) as a ratio
of the closed-loop capacity (goal >= 0.8), counts by status code, RESOURCE_EXHAUSTED and OK
latency p50/p99 (goal: RESOURCE_EXHAUSTED p99 < 50 ms), DEADLINE_EXCEEDED and CANCELLED counts
(goal: no CANCELLED), the server's resident memory before and after, health after.

The load generator shares the machine's CPUs with the server: on a small machine the achieved
arrival rate can fall short of the offered one; both are recorded.

    python bench/reliability_burst.py                      # 60 s per workload
    python bench/reliability_burst.py --seconds 20 --out bench/results/x.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from common import RESULTS, machine, markdown_table, now, scifact_passages, scifact_queries
from grpc_health.v1 import health_pb2, health_pb2_grpc
from reliability_common import (
    EMBEDDER,
    RERANKER,
    SERVING,
    Server,
    percentile_ms,
    rss_mb,
    stop_on_sigterm,
)

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc

COLLECTION = "burst"
WORKLOADS = ("embed", "dense", "rerank")

Call = Callable[[float], Any]  # timeout -> awaitable of the reply


def make_calls(channel: grpc.aio.Channel, queries: list[str], args: argparse.Namespace) -> dict:
    inference = pb_grpc.InferenceStub(channel)
    search = pb_grpc.SearchStub(channel)
    rng = random.Random(1)

    def embed(timeout: float) -> Any:
        texts = rng.sample(queries, args.embed_texts)
        return inference.Embed(pb.EmbedRequest(texts=texts), timeout=timeout)

    def dense(timeout: float) -> Any:
        req = pb.SearchRequest(
            collection=COLLECTION,
            query=rng.choice(queries),
            top_k=10,
            retrieval=pb.RETRIEVAL_DENSE,
            rerank=False,
        )
        return search.Search(req, timeout=timeout)

    def rerank(timeout: float) -> Any:
        req = pb.SearchRequest(
            collection=COLLECTION,
            query=rng.choice(queries),
            top_k=10,
            candidates=args.rerank_candidates,
            retrieval=pb.RETRIEVAL_DENSE,
            rerank=True,
        )
        return search.Search(req, timeout=timeout)

    return {"embed": embed, "dense": dense, "rerank": rerank}


async def closed_loop(call: Call, clients: int, seconds: float, timeout: float) -> dict:
    """``clients`` callers back to back for ``seconds``; capacity is their OK/s."""
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    async def caller() -> None:
        while time.monotonic() < stop_at:
            start = time.monotonic()
            try:
                await call(timeout)
            except grpc.aio.AioRpcError as err:
                codes[err.code().name] += 1
                continue
            codes["OK"] += 1
            latencies.append(time.monotonic() - start)

    began = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(clients)))
    wall = time.monotonic() - began
    return {
        "clients": clients,
        "seconds": round(wall, 2),
        "ok": codes["OK"],
        "capacity_per_s": round(codes["OK"] / wall, 2),
        "codes": dict(codes),
        "ok_p50_ms": percentile_ms(latencies, 50),
        "ok_p99_ms": percentile_ms(latencies, 99),
    }


async def open_loop(call: Call, rate: float, seconds: float, deadline: float, seed: int) -> dict:
    """Poisson arrivals at ``rate``/s for ``seconds``, each call with ``deadline`` seconds."""
    rng = random.Random(seed)
    codes: Counter[str] = Counter()
    by_code: dict[str, list[float]] = {}
    tasks: set[asyncio.Task[None]] = set()
    late = 0  # arrivals the generator sent more than 10 ms after their scheduled time

    async def one() -> None:
        start = time.monotonic()
        try:
            await call(deadline)
            code = "OK"
        except grpc.aio.AioRpcError as err:
            code = err.code().name
        codes[code] += 1
        by_code.setdefault(code, []).append(time.monotonic() - start)

    began = time.monotonic()
    next_at = began
    sent = 0
    while True:
        next_at += rng.expovariate(rate)
        if next_at - began >= seconds:
            break
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # the arrival schedule itself, not a wait for a condition
        elif delay < -0.01:
            late += 1
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    send_wall = time.monotonic() - began
    if tasks:
        await asyncio.gather(*tasks)
    exhausted = by_code.get("RESOURCE_EXHAUSTED", [])
    ok = by_code.get("OK", [])
    return {
        "seconds": round(send_wall, 2),
        "offered_per_s": round(rate, 2),
        "achieved_per_s": round(sent / send_wall, 2),
        "sent": sent,
        "late_arrivals": late,
        "ok": len(ok),
        "goodput_per_s": round(len(ok) / send_wall, 2),
        "codes": dict(codes.most_common()),
        "resource_exhausted_p50_ms": percentile_ms(exhausted, 50),
        "resource_exhausted_p99_ms": percentile_ms(exhausted, 99),
        "ok_p50_ms": percentile_ms(ok, 50),
        "ok_p99_ms": percentile_ms(ok, 99),
        "deadline_exceeded": codes["DEADLINE_EXCEEDED"],
        "cancelled": codes["CANCELLED"],
    }


async def health(address: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        except grpc.aio.AioRpcError as err:
            return err.code().name
        return "SERVING" if reply.status == SERVING else str(reply.status)


async def run_workload(
    server: Server, name: str, args: argparse.Namespace, queries: list[str]
) -> dict:
    async with grpc.aio.insecure_channel(server.address) as channel:
        call = make_calls(channel, queries, args)[name]
        for _ in range(5):  # warm the path (sessions, caches) before measuring
            await call(60.0)
        closed = await closed_loop(call, args.clients, args.closed_seconds, 60.0)
        capacity = closed["capacity_per_s"]
        rss_before = rss_mb(server.pid)
        burst = await open_loop(
            call, args.factor * capacity, args.seconds, args.deadline, seed=args.seed
        )
        rss_after = rss_mb(server.pid)
    burst["goodput_ratio"] = round(burst["goodput_per_s"] / capacity, 3) if capacity else None
    return {
        "closed_loop": closed,
        "burst": burst,
        "rss_mb_before": rss_before,
        "rss_mb_after": rss_after,
        "health_after": await health(server.address),
        "alive_after": server.alive(),
    }


def load_collection(server: Server, docs: int, batch: int = 64) -> float:
    passages = scifact_passages(docs)
    began = time.monotonic()
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.CollectionsStub(channel)
        stub.CreateCollection(pb.CreateCollectionRequest(name=COLLECTION), timeout=60)
        for start in range(0, len(passages), batch):
            chunk = passages[start : start + batch]
            documents = [
                pb.Document(id=f"doc{start + i}", text=text) for i, text in enumerate(chunk)
            ]
            stub.Upsert(pb.UpsertRequest(collection=COLLECTION, documents=documents), timeout=300)
    return time.monotonic() - began


def table(results: dict[str, dict]) -> str:
    header = [
        "workload",
        "capacity/s",
        "offered/s",
        "achieved/s",
        "OK",
        "goodput/s",
        "goodput ratio",
        "RE p50/p99 ms",
        "OK p50/p99 ms",
        "DEADLINE_EXCEEDED",
        "CANCELLED",
        "RSS MB before -> after",
    ]
    rows = []
    for name, r in results.items():
        b = r["burst"]
        rows.append(
            [
                name,
                f"{r['closed_loop']['capacity_per_s']:.1f}",
                f"{b['offered_per_s']:.1f}",
                f"{b['achieved_per_s']:.1f}",
                str(b["ok"]),
                f"{b['goodput_per_s']:.1f}",
                f"{b['goodput_ratio']}",
                f"{b['resource_exhausted_p50_ms']} / {b['resource_exhausted_p99_ms']}",
                f"{b['ok_p50_ms']} / {b['ok_p99_ms']}",
                str(b["deadline_exceeded"]),
                str(b["cancelled"]),
                f"{r['rss_mb_before']} -> {r['rss_mb_after']}",
            ]
        )
    return markdown_table(header, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="burst length per workload")
    parser.add_argument("--closed-seconds", type=float, default=10.0, help="capacity measurement")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop concurrent callers")
    parser.add_argument("--factor", type=float, default=2.5, help="burst rate / capacity")
    parser.add_argument("--deadline", type=float, default=1.0, help="per-call deadline, seconds")
    parser.add_argument("--docs", type=int, default=3000, help="SciFact documents to index")
    parser.add_argument("--embed-texts", type=int, default=4, help="texts per Embed call")
    parser.add_argument("--rerank-candidates", type=int, default=20, help="Search+rerank depth")
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma list of {', '.join(WORKLOADS)}"
    )
    parser.add_argument("--embedder", type=Path, default=EMBEDDER, help="embedder bundle")
    parser.add_argument("--reranker", type=Path, default=RERANKER, help="reranker bundle")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra `twostage serve` flag (repeat)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "reliability-burst-cpu.json")
    parser.add_argument("--keep", action="store_true", help="keep the server's scratch dir")
    args = parser.parse_args()
    stop_on_sigterm()

    workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {sorted(unknown)}")
    models = {"embedder": args.embedder}
    has_reranker = (args.reranker / "manifest.json").is_file()
    if has_reranker:
        models["reranker"] = args.reranker
    elif "rerank" in workloads:
        print(f"no reranker bundle at {args.reranker}: skipping the rerank workload")
        workloads.remove("rerank")

    queries = scifact_queries(None)
    work = Path(tempfile.mkdtemp(prefix="twostage-burst-"))
    server = Server(work, models, extra=args.server_arg)
    results: dict[str, dict] = {}
    try:
        started = server.start()
        rss_start = rss_mb(server.pid)
        load_s = load_collection(server, args.docs) if {"dense", "rerank"} & set(workloads) else 0
        for name in workloads:
            print(f"{name}: closed loop {args.closed_seconds:.0f} s, burst {args.seconds:.0f} s")
            results[name] = asyncio.run(run_workload(server, name, args, queries))
        rss_end = rss_mb(server.pid)
        exit_code = server.stop()
    finally:
        server.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    report = {
        "when": now(),
        "machine": machine(),
        "note": "client and server share the machine's CPUs",
        "settings": {
            "seconds": args.seconds,
            "closed_seconds": args.closed_seconds,
            "clients": args.clients,
            "factor": args.factor,
            "deadline_s": args.deadline,
            "docs": args.docs,
            "embed_texts": args.embed_texts,
            "rerank_candidates": args.rerank_candidates,
            "server_args": args.server_arg,
            "arrivals": "poisson",
        },
        "server": {
            "start_to_serving_s": round(started, 2),
            "index_load_s": round(load_s, 2),
            "rss_mb_start": rss_start,
            "rss_mb_end": rss_end,
            "exit_code_on_sigterm": exit_code,
        },
        "goals": {
            "goodput_ratio_min": 0.8,
            "resource_exhausted_p99_ms_max": 50,
            "cancelled_max": 0,
        },
        "workloads": results,
    }
    report["machine"]["load_at_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
