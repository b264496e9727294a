"""Load generator mechanics against a tiny asyncio servicer whose service time and admission
limit the test sets: request counting, Poisson arrivals, coordinated-omission-free latency,
errors counted by status code, the JSON report and the plot."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
import pytest

from twostage.clients.loadtest import LoadConfig, load_texts, plot, run_load
from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc

QUERIES = ["alpha", "beta", "gamma", "delta"]


class TimedInference(pb_grpc.InferenceServicer):
    """Embed takes ``service_s``; over ``admit`` calls in flight it answers RESOURCE_EXHAUSTED."""

    def __init__(self) -> None:
        self.service_s = 0.0
        self.admit = 1_000_000
        self.inflight = 0
        self.texts_seen: list[int] = []

    async def Embed(self, request, context):
        if self.inflight >= self.admit:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
        self.inflight += 1
        try:
            self.texts_seen.append(len(request.texts))
            if self.service_s:
                await asyncio.sleep(self.service_s)  # simulated compute
            vec = np.ones(3, dtype="<f4").tobytes()
            return pb.EmbedResponse(
                embeddings=[pb.Embedding(vector=vec)] * len(request.texts), dim=3
            )
        finally:
            self.inflight -= 1


@pytest.fixture()
async def fake() -> AsyncIterator[tuple[TimedInference, str]]:
    servicer = TimedInference()
    server = grpc.aio.server()
    pb_grpc.add_InferenceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


async def test_closed_loop_stops_at_the_request_count(fake) -> None:
    servicer, address = fake
    config = LoadConfig("embed", QUERIES, duration_s=30, concurrency=3, max_requests=25, batch=4)
    report = await run_load(address, config)
    assert report.sent == report.ok == 25 and report.errors == {}
    assert report.histogram.get_total_count() == 25
    assert servicer.texts_seen == [4] * 25
    assert report.throughput > 0


async def test_open_loop_arrivals_are_seeded_poisson(fake) -> None:
    _, address = fake
    config = LoadConfig("embed", QUERIES, duration_s=0.5, rate=400.0, seed=7)
    first = await run_load(address, config)
    second = await run_load(address, config)
    # Arrival times come from the seed alone, so both runs send the same number of requests,
    # close to rate x duration (Poisson: sd = sqrt(200) ~ 14).
    assert first.sent == second.sent
    assert 150 <= first.sent <= 250
    assert first.ok == first.sent


async def test_open_loop_latency_counts_from_the_scheduled_time(fake) -> None:
    servicer, address = fake
    servicer.service_s = 0.02
    # 100 req/s offered, one request in flight at a time, 20 ms each: the client falls behind,
    # and the wait must show in the latency instead of silently lowering the rate.
    config = LoadConfig("embed", QUERIES, duration_s=0.6, rate=100.0, max_inflight=1, seed=3)
    report = await run_load(address, config)
    pct = report.percentiles_ms()
    assert report.ok == report.sent > 20
    assert pct["p99"] > 5 * 20.0, pct
    assert pct["p50"] >= 20.0


async def test_overload_is_counted_by_status_code(fake, tmp_path: Path) -> None:
    servicer, address = fake
    servicer.service_s = 0.05
    servicer.admit = 2
    config = LoadConfig("embed", QUERIES, duration_s=0.5, rate=300.0, seed=1)
    report = await run_load(address, config)
    assert report.errors.get("RESOURCE_EXHAUSTED", 0) > 0
    assert report.ok > 0
    assert report.ok + sum(report.errors.values()) == report.sent
    data = report.to_dict()
    json.dumps(data)
    assert data["errors"]["RESOURCE_EXHAUSTED"] == report.errors["RESOURCE_EXHAUSTED"]
    assert set(data["latency_ms"]) == {"p50", "p90", "p99", "p99.9", "max", "mean"}
    assert "RESOURCE_EXHAUSTED" in report.table()
    png = tmp_path / "load.png"
    plot(report, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="exactly one of --concurrency"):
        LoadConfig("embed", QUERIES)
    with pytest.raises(ValueError, match="exactly one of --concurrency"):
        LoadConfig("embed", QUERIES, concurrency=2, rate=3.0)
    with pytest.raises(ValueError, match="needs --collection"):
        LoadConfig("search", QUERIES, concurrency=1)
    with pytest.raises(ValueError, match="--rpc must be one of"):
        LoadConfig("upsert", QUERIES, concurrency=1)


def test_load_texts_reads_jsonl_and_plain_lines(tmp_path: Path) -> None:
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text('{"_id": "1", "text": "first"}\n\n{"query": "second"}\n')
    assert load_texts(jsonl) == ["first", "second"]
    plain = tmp_path / "q.txt"
    plain.write_text("one\ntwo\n")
    assert load_texts(plain) == ["one", "two"]
    jsonl.write_text('{"id": 1}\n')
    with pytest.raises(ValueError, match=r"q\.jsonl:1: needs a string 'text' or 'query'"):
        load_texts(jsonl)


async def test_calls_still_in_flight_are_cut_after_the_drain(fake) -> None:
    servicer, address = fake
    servicer.service_s = 60.0  # a server that never answers within the run
    config = LoadConfig("embed", QUERIES, duration_s=0.3, rate=20.0, drain_s=0.2, seed=2)
    report = await run_load(address, config)
    assert report.sent > 0 and report.ok == 0
    assert report.errors == {"DEADLINE_EXCEEDED": report.sent}
    assert report.elapsed_s < 30.0, "the run must end at duration + drain, not at the server"
