"""The client commands against a real server: output, resumable ingest, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twostage.cli import main
from twostage.clients.client import TwostageClient

SCIFACT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "scifact"


def write_jsonl(path: Path, n: int, skip: int = 0) -> list[dict]:
    """The first n SciFact documents (after ``skip``) as the JSONL that `ingest` reads."""
    records = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if i < skip:
                continue
            rec = json.loads(line)
            records.append(
                {"id": rec["_id"], "title": rec["title"], "text": rec["text"], "metadata": {"n": i}}
            )
            if len(records) == n:
                break
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ingest_is_resumable_and_search_prints(live_server, tmp_path: Path, capsys) -> None:
    addr = ("--address", live_server.address)
    part = tmp_path / "part.jsonl"
    write_jsonl(part, 10)
    full = tmp_path / "full.jsonl"
    records = write_jsonl(full, 25)

    code, out, _ = run(capsys, "ingest", "cli-docs", str(part), "--json", "--no-progress", *addr)
    assert code == 0
    first = json.loads(out)
    assert first["created"] and first["upserted"] == 10 and first["collection_count"] == 10

    # Re-running with the longer file sends only what the server does not hold yet.
    code, out, _ = run(
        capsys,
        "ingest",
        "cli-docs",
        str(full),
        "--json",
        "--batch-size",
        "4",
        "--no-progress",
        *addr,
    )
    assert code == 0
    second = json.loads(out)
    assert not second["created"]
    assert second["upserted"] == 15 and second["skipped_present"] == 10
    assert second["collection_count"] == 25

    with TwostageClient(live_server.address) as client:
        doc = client.get("cli-docs", [records[12]["id"]]).documents[0]
    assert doc.text == f"{records[12]['title']} {records[12]['text']}"
    assert doc.metadata == {"n": "12", "title": records[12]["title"]}

    query = records[7]["title"]
    code, out, _ = run(
        capsys,
        "search",
        "cli-docs",
        query,
        "--top-k",
        "3",
        "--candidates",
        "10",
        "--no-rerank",
        "--json",
        *addr,
    )
    assert code == 0
    reply = json.loads(out)
    assert reply["reranked"] is False and len(reply["hits"]) == 3
    assert reply["hits"][0]["id"] == records[7]["id"]
    assert reply["hits"][0]["rerank_score"] is None

    code, out, _ = run(
        capsys, "search", "cli-docs", query, "--top-k", "3", "--candidates", "10", *addr
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["rank", "id", "score", "dense", "d.rank", "bm25"]
    assert len(lines) == 1 + 3 + 1 and lines[-1].startswith("ranking:")


def test_embed_rerank_info(live_server, capsys) -> None:
    addr = ("--address", live_server.address)
    code, out, _ = run(capsys, "embed", "first text", "second text", "--json", *addr)
    assert code == 0
    data = json.loads(out)
    assert data["dim"] == 384 and len(data["embeddings"]) == 2

    code, out, _ = run(
        capsys,
        "rerank",
        "white matter",
        "brain imaging of white matter",
        "stock markets",
        "--json",
        *addr,
    )
    assert code == 0
    ranked = json.loads(out)
    assert sorted(r["index"] for r in ranked) == [0, 1]
    assert ranked[0]["score"] >= ranked[1]["score"]

    code, out, _ = run(capsys, "info", "--json", *addr)
    assert code == 0
    info = json.loads(out)
    assert info["health"] == "SERVING"
    assert {m["kind"] for m in info["models"]} >= {"embedder", "reranker"}
    code, out, _ = run(capsys, "info", *addr)
    assert code == 0 and "SERVING" in out.splitlines()[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "no-such-collection", "a query"],
        ["eval", "no-such-collection", str(SCIFACT), "--max-queries", "2"],
        [
            "load",
            "--rpc",
            "search",
            "--collection",
            "no-such-collection",
            "--queries",
            str(SCIFACT / "queries.jsonl"),
            "--concurrency",
            "1",
            "--duration",
            "1",
        ],
    ],
)
def test_bad_collection_is_one_line_and_exit_1(live_server, capsys, argv) -> None:
    code, out, err = run(capsys, *argv, "--address", live_server.address)
    assert code == 1
    assert out == ""
    line = err.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"twostage {argv[0]}: NOT_FOUND: ")
    assert "no-such-collection" in line
