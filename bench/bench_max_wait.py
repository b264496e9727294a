"""What the idle batcher's wait costs: ``--max-wait-ms`` 2 (the default) against 0, same run.

Two ``twostage serve`` processes (the default embedder bundle, int8 CPU) differing only in
``--max-wait-ms``, measured round by round in turn so drift hits both alike:

* one short query per Embed call, one caller: p50 ms (the single-request latency floor);
* 4 callers x 32 SciFact passages per call: texts/s (batching under load);
* 4 callers of one short query each: calls/s.

Writes ``bench/results/max-wait-cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from common import (
    DATA,
    REPO,
    machine,
    markdown_table,
    now,
    scifact_passages,
    scifact_queries,
    write_results,
)
from reliability_common import Server

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc


def start(embedder: Path, wait_ms: float) -> tuple[Server, pb_grpc.InferenceStub]:
    """A server (the harnesses' launcher) differing only in ``--max-wait-ms``; waits for SERVING."""
    work = Path(tempfile.mkdtemp(prefix="twostage-max-wait-"))
    server = Server(work, {"embedder": embedder}, extra=["--max-wait-ms", str(wait_ms)])
    server.start()
    return server, pb_grpc.InferenceStub(grpc.insecure_channel(server.address))


def one_round(stub: pb_grpc.InferenceStub, queries: list[str], passages: list[str]) -> dict:
    times = []
    for query in queries:
        start_s = time.perf_counter()
        stub.Embed(pb.EmbedRequest(texts=[query]), timeout=30)
        times.append(time.perf_counter() - start_s)
    batches = [passages[i : i + 32] for i in range(0, len(passages), 32)]
    start_s = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda b: stub.Embed(pb.EmbedRequest(texts=b), timeout=300), batches))
    texts_per_s = len(passages) / (time.perf_counter() - start_s)
    start_s = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda q: stub.Embed(pb.EmbedRequest(texts=[q]), timeout=30), queries))
    calls_per_s = len(queries) / (time.perf_counter() - start_s)
    return {
        "single_p50_ms": statistics.median(times) * 1000,
        "texts_per_s_4x32": texts_per_s,
        "calls_per_s_4x1": calls_per_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embedder", type=Path, default=REPO / "models" / "all-MiniLM-L6-v2")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    queries = scifact_queries(200, args.data)
    passages = scifact_passages(256, args.data)
    servers = {wait: start(args.embedder, wait) for wait in (2.0, 0.0)}
    rounds: dict[float, list[dict]] = {wait: [] for wait in servers}
    try:
        for _ in range(args.rounds):
            for wait, (_proc, stub) in servers.items():
                rounds[wait].append(one_round(stub, queries, passages))
    finally:
        for server, _stub in servers.values():
            server.stop()
            shutil.rmtree(server.workdir, ignore_errors=True)
    medians = {
        wait: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for wait, rs in rounds.items()
    }
    data = {
        "bench": "max-wait",
        "when": now(),
        "machine": machine(),
        "config": {"rounds": args.rounds, "queries": len(queries), "passages": len(passages)},
        "rounds": {str(w): rs for w, rs in rounds.items()},
        "median": {str(w): m for w, m in medians.items()},
    }
    base, zero = medians[2.0], medians[0.0]
    md = markdown_table(
        ["measure", "max-wait 2 ms", "max-wait 0", "0 vs 2"],
        [
            [
                "one short query, p50 ms",
                f"{base['single_p50_ms']:.2f}",
                f"{zero['single_p50_ms']:.2f}",
                f"{zero['single_p50_ms'] - base['single_p50_ms']:+.2f} ms",
            ],
            [
                "4 callers x 32 passages, texts/s",
                f"{base['texts_per_s_4x32']:.1f}",
                f"{zero['texts_per_s_4x32']:.1f}",
                f"{zero['texts_per_s_4x32'] / base['texts_per_s_4x32']:.2f}x",
            ],
            [
                "4 callers x 1 query, calls/s",
                f"{base['calls_per_s_4x1']:.0f}",
                f"{zero['calls_per_s_4x1']:.0f}",
                f"{zero['calls_per_s_4x1'] / base['calls_per_s_4x1']:.2f}x",
            ],
        ],
    )
    json_path, _ = write_results("max-wait-cpu", data, md)
    print(md)
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
