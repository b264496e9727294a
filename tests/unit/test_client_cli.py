"""Client commands fail with one line and a non-zero exit, without a server or on bad input.

Behaviour against a real server is in tests/integration/test_cli*.py.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from twostage.cli import main


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "c", "query"],
        ["embed", "hello"],
        ["rerank", "q", "doc"],
        ["info"],
        ["ingest", "c", "{jsonl}"],
        ["load", "--rpc", "embed", "--queries", "{jsonl}", "--rate", "5", "--duration", "1"],
    ],
)
def test_unreachable_server_is_one_line_and_exit_1(argv, tmp_path: Path, capsys) -> None:
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"id": "1", "text": "one"}\n')
    argv = [a.replace("{jsonl}", str(jsonl)) for a in argv]
    address = _dead_address()
    assert main([*argv, "--address", address, "--timeout", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"twostage {argv[0]}: cannot reach the server at {address}")


def test_address_comes_from_the_environment(monkeypatch, capsys) -> None:
    address = _dead_address()
    monkeypatch.setenv("TWOSTAGE_ADDRESS", address)
    assert main(["info"]) == 1
    assert f"at {address}:" in capsys.readouterr().err


def test_bad_ingest_file_names_file_and_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "text": "ok"}\n{"text": "no id"}\n')
    # The file is checked before the server is contacted, so no server is needed here.
    assert main(["ingest", "c", str(bad), "--address", _dead_address()]) == 2
    assert capsys.readouterr().err.strip() == (
        f"twostage ingest: {bad}:2: missing 'id' (or BEIR '_id')"
    )
    missing = tmp_path / "nope.jsonl"
    assert main(["ingest", "c", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"twostage ingest: {missing}: no such file"


def test_load_flags_are_validated(tmp_path: Path, capsys) -> None:
    queries = tmp_path / "q.txt"
    queries.write_text("a query\n")
    assert main(["load", "--rpc", "search", "--queries", str(queries), "--concurrency", "2"]) == 2
    assert "--rpc search needs --collection" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["load", "--rpc", "embed", "--queries", str(queries)])
    assert exit_.value.code == 2
