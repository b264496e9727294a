"""HTTP vs gRPC on one server, same run: /v1/embeddings against Embed, and a short query's latency.

Starts ``twostage serve`` (the default embedder bundle) with both transports on 127.0.0.1 and
measures, interleaving the transports round by round so drift hits both alike:

* throughput at 4 concurrent clients x 32 SciFact passages per call: gRPC Embed, HTTP
  ``/v1/embeddings`` with ``encoding_format`` float and base64 (goal: HTTP >= 0.9x gRPC);
* one short query per call, one caller: p50 over HTTP and over gRPC (goal: within 1 ms), twice:
  with the async clients above (httpx, grpc.aio), and with lean blocking clients (the stdlib's
  ``http.client`` on one keep-alive connection, a blocking gRPC stub), which leaves the server's
  own cost per transport: httpx alone costs about a millisecond a call more than grpc.aio.

Writes ``bench/results/http-cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx
from common import (
    DATA,
    REPO,
    machine,
    markdown_table,
    now,
    percentiles_ms,
    scifact_passages,
    scifact_queries,
    write_results,
)

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``twostage serve`` with gRPC on a free port and HTTP on another."""

    def __init__(self, embedder: Path, threads: int) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="twostage-bench-http-"))
        ready = self.tmp / "ready"
        http_port = free_port()
        args = [
            *(sys.executable, "-m", "twostage.cli", "serve", "--listen", "127.0.0.1:0"),
            *("--http-listen", f"127.0.0.1:{http_port}", "--metrics-port", "0"),
            *("--ready-file", str(ready), "--data-dir", str(self.tmp / "data")),
            *("--intra-op-threads", str(threads), "--model", f"embedder={embedder}"),
        ]
        self.log = (self.tmp / "server.log").open("wb")
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.tmp / "server.log").read_text())
            time.sleep(0.05)
        self.address = f"127.0.0.1:{int(ready.read_text())}"
        self.http_url = f"http://127.0.0.1:{http_port}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


async def closed_loop(
    call: Callable[[list[str]], Awaitable[object]], batches, clients: int
) -> float:
    """Run every batch through ``clients`` concurrent workers; texts per second."""
    queue = list(reversed(batches))

    async def worker() -> None:
        while queue:
            await call(queue.pop())

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


async def run(server: Server, passages: list[str], queries: list[str], rounds: int) -> dict:
    batches = [passages[i : i + 32] for i in range(0, len(passages), 32)]
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with (
        grpc.aio.insecure_channel(server.address) as channel,
        httpx.AsyncClient(base_url=server.http_url, timeout=300, limits=limits) as http,
    ):
        stub = pb_grpc.InferenceStub(channel)

        async def over_grpc(texts: list[str]) -> None:
            await stub.Embed(pb.EmbedRequest(texts=texts), timeout=300)

        def over_http(encoding: str) -> Callable[[list[str]], Awaitable[None]]:
            async def call(texts: list[str]) -> None:
                body = {"input": texts, "model": "embedder", "encoding_format": encoding}
                response = await http.post("/v1/embeddings", json=body)
                response.raise_for_status()
                response.json()

            return call

        engines = {
            "grpc": over_grpc,
            "http_float": over_http("float"),
            "http_base64": over_http("base64"),
        }
        for call in engines.values():  # warm up connections and the model
            await call(batches[0])
        rates: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(rounds):
            for name, call in engines.items():
                rates[name].append(await closed_loop(call, batches, 4))

        single: dict[str, list[float]] = {"grpc": [], "http": []}

        async def one(name: str, query: str) -> None:
            start = time.perf_counter()
            if name == "grpc":
                await stub.Embed(pb.EmbedRequest(texts=[query]), timeout=60)
            else:
                r = await http.post("/v1/embeddings", json={"input": query, "model": "embedder"})
                r.raise_for_status()
                r.json()
            single[name].append(time.perf_counter() - start)

        for block in range(0, len(queries), 20):  # interleave in blocks of 20
            for name in single:
                for query in queries[block : block + 20]:
                    await one(name, query)

    throughput = {name: statistics.median(values) for name, values in rates.items()}
    latency = {name: percentiles_ms(values) for name, values in single.items()}
    return {
        "throughput_4x32_texts_per_s": throughput,
        "throughput_rounds": rates,
        "http_float_vs_grpc": throughput["http_float"] / throughput["grpc"],
        "http_base64_vs_grpc": throughput["http_base64"] / throughput["grpc"],
        "single_query": latency,
        "single_query_p50_http_minus_grpc_ms": latency["http"]["p50_ms"]
        - latency["grpc"]["p50_ms"],
    }


def lean_single_query(server: Server, queries: list[str], rounds: int) -> dict:
    """p50 of one short query per call with lean blocking clients, interleaved by block."""
    host, port = server.http_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port))
    times: dict[str, list[float]] = {"grpc": [], "http": []}
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.InferenceStub(channel)

        def over_grpc(query: str) -> None:
            stub.Embed(pb.EmbedRequest(texts=[query]), timeout=60)

        def over_http(query: str) -> None:
            body = json.dumps({"input": query, "model": "embedder"})
            conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")

        calls = {"grpc": over_grpc, "http": over_http}
        for call in calls.values():
            call("warm up")
        for _ in range(rounds):
            for block in range(0, len(queries), 20):
                for name, call in calls.items():
                    for query in queries[block : block + 20]:
                        start = time.perf_counter()
                        call(query)
                        times[name].append(time.perf_counter() - start)
    conn.close()
    latency = {name: percentiles_ms(values) for name, values in times.items()}
    return {
        "single_query_lean_clients": latency,
        "single_query_lean_p50_http_minus_grpc_ms": latency["http"]["p50_ms"]
        - latency["grpc"]["p50_ms"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embedder", type=Path, default=REPO / "models" / "all-MiniLM-L6-v2")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--passages", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    passages = scifact_passages(args.passages, args.data)
    queries = scifact_queries(args.queries, args.data)
    server = Server(args.embedder, args.threads)
    try:
        results = asyncio.run(run(server, passages, queries, args.rounds))
        results.update(lean_single_query(server, queries, args.rounds))
    finally:
        server.stop()
    data = {
        "bench": "http",
        "when": now(),
        "machine": machine(),
        "config": {
            "passages": len(passages),
            "queries": len(queries),
            "rounds": args.rounds,
            "threads": args.threads,
            "clients": 4,
            "texts_per_call": 32,
        },
        **results,
    }
    t = results["throughput_4x32_texts_per_s"]
    lat = results["single_query"]
    lean = results["single_query_lean_clients"]
    md = markdown_table(
        ["measure", "gRPC", "HTTP", "ratio / difference"],
        [
            [
                "Embed 4 clients x 32 texts, texts/s (float)",
                f"{t['grpc']:.0f}",
                f"{t['http_float']:.0f}",
                f"{results['http_float_vs_grpc']:.2f}x",
            ],
            [
                "Embed 4 clients x 32 texts, texts/s (base64)",
                f"{t['grpc']:.0f}",
                f"{t['http_base64']:.0f}",
                f"{results['http_base64_vs_grpc']:.2f}x",
            ],
            [
                "one short query, p50 ms (httpx / grpc.aio clients)",
                f"{lat['grpc']['p50_ms']:.2f}",
                f"{lat['http']['p50_ms']:.2f}",
                f"{results['single_query_p50_http_minus_grpc_ms']:+.2f} ms",
            ],
            [
                "one short query, p50 ms (http.client / blocking gRPC stub)",
                f"{lean['grpc']['p50_ms']:.2f}",
                f"{lean['http']['p50_ms']:.2f}",
                f"{results['single_query_lean_p50_http_minus_grpc_ms']:+.2f} ms",
            ],
        ],
    )
    json_path, _ = write_results("http-cpu", data, md)
    print(md)
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
