"""Input validation of `twostage train`: pair files and BEIR folders, checked before models load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twostage.train.beir import heldout_queries, load_beir, sample_beir
from twostage.train.cli import register
from twostage.train.pairs import DataError, LabelKind, describe, load_pairs, read_label_names

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
STSB = DATA / "pairs" / "stsb" / "train.jsonl"
SICK = DATA / "pairs" / "sick" / "train.jsonl"
SCIFACT = DATA / "scifact"


def _head(src: Path, n: int) -> list[dict]:
    with src.open(encoding="utf-8") as handle:
        return [json.loads(next(handle)) for _ in range(n)]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_stsb_floats_are_similarity_with_distribution() -> None:
    pairs = load_pairs(STSB, task="cross-encoder")
    assert pairs.kind is LabelKind.SIMILARITY
    assert len(pairs) == 5749
    dist = pairs.label_distribution()
    assert 0.0 == dist["min"] < dist["median"] < dist["max"] == 1.0
    assert "5749 pairs, labels similarity" in describe(pairs)


def test_sick_classes_take_names_from_label_names_json() -> None:
    names = read_label_names(SICK, None)
    assert names == ("contradiction", "entailment", "neutral")
    pairs = load_pairs(SICK, task="cross-encoder", label_names=names)
    assert pairs.kind is LabelKind.CLASSES
    assert pairs.label_distribution()["counts"] == {
        "contradiction": 665,
        "entailment": 1299,
        "neutral": 2536,
    }


def test_labels_argument_and_labels_txt(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "p.jsonl", _head(SICK, 5))
    assert read_label_names(path, "a,b,c") == ("a", "b", "c")
    assert read_label_names(path, None) == ()
    (tmp_path / "labels.txt").write_text("no\nyes\nmaybe\n", encoding="utf-8")
    assert read_label_names(path, None) == ("no", "yes", "maybe")
    with pytest.raises(DataError, match="duplicate class name"):
        read_label_names(path, "a,a")


def test_binary_ints_for_bi_encoder(tmp_path: Path) -> None:
    rows = [dict(r, label=int(r["label"] > 0.5)) for r in _head(STSB, 30)]
    pairs = load_pairs(_write_jsonl(tmp_path / "b.jsonl", rows), task="bi-encoder")
    assert pairs.kind is LabelKind.BINARY
    assert sum(pairs.label_distribution()["counts"].values()) == 30


def test_csv_with_header(tmp_path: Path) -> None:
    rows = _head(STSB, 4)
    lines = ["sentence1,sentence2,label"]
    lines += [f'"{r["sentence1"]}","{r["sentence2"]}",{r["label"]}' for r in rows]
    path = tmp_path / "p.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    pairs = load_pairs(path, task="cross-encoder")
    assert pairs.kind is LabelKind.SIMILARITY
    assert pairs.labels == [float(r["label"]) for r in rows]
    assert pairs.sentence1[0] == rows[0]["sentence1"]


def _bad(tmp_path: Path, line3: dict, *, task: str = "cross-encoder", names=()) -> str:
    rows = _head(STSB, 5)
    rows[2] = line3
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_pairs(path, task=task, label_names=names)
    message = str(info.value)
    assert "\n" not in message
    return message.replace(str(path), "FILE")


@pytest.mark.parametrize(
    ("line3", "expected"),
    [
        ({"sentence1": "a", "label": 0.5}, "FILE:3: field 'sentence2': missing"),
        (
            {"sentence1": "  ", "sentence2": "b", "label": 0.5},
            "FILE:3: field 'sentence1': empty text",
        ),
        ({"sentence1": "a", "sentence2": "b"}, "FILE:3: field 'label': missing"),
        (
            {"sentence1": "a", "sentence2": "b", "label": 1.5},
            "FILE:3: field 'label': 1.5 is out of range [0, 1]",
        ),
        (
            {"sentence1": "a", "sentence2": "b", "label": "high"},
            "FILE:3: field 'label': expected a number, got 'high'",
        ),
        (
            {"sentence1": "a", "sentence2": "b", "label": 1},
            "FILE:3: field 'label': 1 is an int but line 1 has a float; ints and floats cannot be "
            "mixed (write similarity scores as floats, e.g. 1.0)",
        ),
    ],
)
def test_bad_pair_lines_name_file_line_and_field(
    tmp_path: Path, line3: dict, expected: str
) -> None:
    assert _bad(tmp_path, line3) == expected


def test_class_index_without_a_name(tmp_path: Path) -> None:
    rows = [dict(r, label=i % 3) for i, r in enumerate(_head(STSB, 5))]
    rows[3]["label"] = 3
    path = _write_jsonl(tmp_path / "c.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_pairs(path, task="cross-encoder", label_names=("x", "y", "z"))
    assert str(info.value) == f"{path}:4: field 'label': class index 3 has no name (labels: x,y,z)"
    with pytest.raises(
        DataError, match=r"c.jsonl:1: field 'label': class index 0 has no name; give --labels"
    ):
        load_pairs(path, task="cross-encoder")


def test_bi_encoder_int_labels_must_be_binary(tmp_path: Path) -> None:
    rows = [dict(r, label=1) for r in _head(STSB, 3)]
    rows[1]["label"] = 2
    path = _write_jsonl(tmp_path / "b.jsonl", rows)
    with pytest.raises(DataError, match=r"b.jsonl:2: field 'label': 2 is out of range; bi-encoder"):
        load_pairs(path, task="bi-encoder")


def test_invalid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text('{"sentence1": "a", "sentence2": "b", "label": 0.1}\n{"sentence1": "a",\n')
    with pytest.raises(DataError, match=r"j.jsonl:2: not valid JSON"):
        load_pairs(path, task="cross-encoder")


def test_split_is_seeded_and_disjoint() -> None:
    pairs = load_pairs(STSB, task="cross-encoder")
    a_train, a_held = pairs.split(0.1, seed=3)
    _, b_held = pairs.split(0.1, seed=3)
    assert a_held.sentence1 == b_held.sentence1
    assert len(a_train) + len(a_held) == len(pairs)
    assert len(a_held) == 575
    _, c_held = pairs.split(0.1, seed=4)
    assert c_held.sentence1 != a_held.sentence1


def test_scifact_loads_and_qrels_ids_are_checked(tmp_path: Path) -> None:
    beir = load_beir(SCIFACT, ["train", "test"])
    assert len(beir.corpus_ids) == 5183
    assert len(beir.split_queries("train")) == 809
    assert len(beir.split_queries("test")) == 300
    mini = sample_beir(SCIFACT, tmp_path / "mini", split="train", queries=5, extra_docs=10, seed=1)
    qrels = mini / "qrels" / "train.tsv"
    lines = qrels.read_text().splitlines()
    query_id = lines[1].split("\t")[0]
    lines.insert(3, f"{query_id}\tno-such-doc\t1")
    qrels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        load_beir(mini, ["train"])
    assert str(info.value) == f"{qrels}:4: field 'corpus-id': 'no-such-doc' is not in corpus.jsonl"


def test_heldout_queries_are_seeded() -> None:
    ids = [str(i) for i in range(100)]
    train, held = heldout_queries(ids, 10, seed=7)
    assert len(held) == 10 and not set(train) & set(held)
    assert heldout_queries(ids, 10, seed=7) == (train, held)


def test_cli_reports_a_bad_file_in_one_line_before_loading_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    rows = _head(STSB, 4)
    rows[1]["label"] = 7.0
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    parser = argparse.ArgumentParser(prog="twostage")
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "cross-encoder", str(path), "--out", str(tmp_path / "o")])
    assert args.handler(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"twostage train: error: {path}:2: field 'label': 7.0 is out of range [0, 1]"
    assert not (tmp_path / "o").exists()
