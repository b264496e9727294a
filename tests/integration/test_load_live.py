"""`twostage load` for 3 seconds against real servers: closed and open loop, and overload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twostage.cli import main
from twostage.clients.client import TwostageClient
from twostage.clients.results import Document

SCIFACT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "scifact"
QUERIES = SCIFACT / "queries.jsonl"


@pytest.fixture(scope="module")
def small_collection(live_server) -> str:
    docs = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            rec = json.loads(line)
            docs.append(Document(rec["_id"], f"{rec['title']} {rec['text'][:400]}"))
            if len(docs) == 20:
                break
    with TwostageClient(live_server.address, timeout=120) as client:
        client.create_collection("load-docs")
        client.upsert("load-docs", docs)
    return "load-docs"


def load(capsys, tmp_path: Path, address: str, *argv: str) -> dict:
    out = tmp_path / "load.json"
    code = main(["load", *argv, "--duration", "3", "--json-out", str(out), "--address", address])
    printed = capsys.readouterr().out
    assert code == 0
    assert "throughput" in printed and f"wrote {out}" in printed
    return json.loads(out.read_text())


def test_closed_loop_search(live_server, small_collection, tmp_path: Path, capsys) -> None:
    png = tmp_path / "latency.png"
    report = load(
        capsys,
        tmp_path,
        live_server.address,
        "--rpc",
        "search",
        "--collection",
        small_collection,
        "--queries",
        str(QUERIES),
        "--concurrency",
        "2",
        "--candidates",
        "5",
        "--top-k",
        "5",
        "--plot",
        str(png),
    )
    assert report["mode"] == "closed" and report["errors"] == {}
    assert report["ok"] == report["sent"] > 0 and report["throughput_rps"] > 0
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_open_loop_rerank_at_a_low_rate(live_server, tmp_path: Path, capsys) -> None:
    report = load(
        capsys,
        tmp_path,
        live_server.address,
        "--rpc",
        "rerank",
        "--queries",
        str(QUERIES),
        "--rate",
        "4",
        "--batch",
        "8",
    )
    assert report["mode"] == "open" and report["rate"] == 4.0
    assert report["errors"] == {}
    assert report["ok"] == report["sent"] > 0 and report["throughput_rps"] > 0


def test_open_loop_overload_counts_resource_exhausted(overload_server, tmp_path: Path, capsys):
    report = load(
        capsys,
        tmp_path,
        overload_server.address,
        "--rpc",
        "embed",
        "--queries",
        str(QUERIES),
        "--rate",
        "300",
        "--batch",
        "32",
    )
    assert report["errors"].get("RESOURCE_EXHAUSTED", 0) > 0, report
    assert report["ok"] > 0, report
    assert report["ok"] + sum(report["errors"].values()) == report["sent"]
