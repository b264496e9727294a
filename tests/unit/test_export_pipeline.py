"""The export pipeline end to end: the int8 mix search, fp16, refusal, and the CLI's errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from twostage.cli import main
from twostage.export.config import Int8Mix, Thresholds
from twostage.export.pipeline import export_model
from twostage.export.quantize import MixSearch, MixTrial, node_sensitivity, preset_recipe
from twostage.server.bundle import load_bundle, read_manifest
from twostage.server.runtime.tokenizer import TextTokenizer, pad_batch


class _Scripted(MixSearch):
    """The search's control flow with a scripted verdict per k (no files are written)."""

    def __init__(self, passes_from: int | None, n: int = 24, budget_s: float = 60.0) -> None:
        super().__init__(
            fp32_path=Path("unused"),
            workdir=Path("unused"),
            recipe=preset_recipe("avx2"),
            ranked=[f"n{i}" for i in range(n)],
            evaluate=lambda p: ({}, False, 1.0),
            budget_s=budget_s,
        )
        self.passes_from = passes_from
        self.visited: list[int] = []

    def trial(self, keep: int) -> MixTrial:
        self.visited.append(keep)
        passed = self.passes_from is not None and keep >= self.passes_from
        result = MixTrial(
            tuple(self.ranked[:keep]), {"cosine_mean": keep / 100}, passed, 1.0, Path(f"k{keep}")
        )
        self.trials.append(result)
        return result


def test_search_doubles_then_bisects_to_the_fewest_fp32_nodes() -> None:
    search = _Scripted(passes_from=5)
    best = search.run()
    assert len(best.fp32_nodes) == 5 and best.fp32_nodes == ("n0", "n1", "n2", "n3", "n4")
    assert search.visited == [0, 1, 2, 4, 8, 6, 5]
    assert _Scripted(passes_from=0).run().fp32_nodes == ()


def test_search_without_a_pass_returns_the_most_fp32_candidate() -> None:
    search = _Scripted(passes_from=None, n=6)
    assert len(search.run().fp32_nodes) == 6
    assert search.visited == [0, 1, 2, 4, 6]
    over = _Scripted(passes_from=None, budget_s=-1.0)  # budget spent: stop after the first
    assert over.run().fp32_nodes == () and over.visited == [0]


def test_ffn_output_projections_are_the_most_sensitive(embedder_bundle, scifact_passages):
    """DESIGN.md's observation, found here by measurement rather than by name."""
    tok = TextTokenizer.from_file(embedder_bundle, 256)
    feeds = [
        pad_batch(tok.encode(scifact_passages[:16]), tok.pad_id, ("input_ids", "attention_mask"))
    ]
    fp32 = embedder_bundle / "model.onnx"
    scores = node_sensitivity(fp32, feeds, preset_recipe("avx2"), threads=2)
    assert len(scores) == 24 and list(scores.values()) == sorted(scores.values(), reverse=True)
    assert all(0 < s < 0.5 for s in scores.values())
    model = onnx.load(str(fp32), load_external_data=False)
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    shapes = {n.name: inits.get(n.input[1]) for n in model.graph.node if n.name in scores}
    top = list(scores)[:3]
    assert all(shapes[name] == (1536, 384) for name in top), [(n, shapes[n]) for n in top]
    # the fixture's int8 recipe kept exactly the ranking's top nodes in fp32
    recipe = read_manifest(embedder_bundle).variants["int8"].recipe
    assert all(shapes[name] == (1536, 384) for name in recipe["fp32_nodes"])


def test_int8_search_keeps_the_fewest_sensitive_nodes_that_pass(tmp_path, minilm_path):
    """A real search on small inputs, with a gate that all-int8 misses (mean ~0.994)."""
    out = export_model(
        str(minilm_path),
        tmp_path / "searched",
        targets=("cpu-int8",),
        int8_mix=Int8Mix(mode="search", search_texts=32, budget_s=900.0),
        thresholds=Thresholds(min_cosine_mean=0.995, min_cosine_min=0.98),
        validation_count=32,
        progress=False,
        echo=None,
        threads=2,
    )
    int8 = read_manifest(out).variants["int8"]
    recipe = int8.recipe
    trials = recipe["search"]["trials"]
    assert trials[0]["fp32_nodes"] == 0 and not trials[0]["passed"]
    chosen = len(recipe["fp32_nodes"])
    assert chosen > 0 and recipe["selection"].startswith("search")
    assert any(t["fp32_nodes"] == chosen and t["passed"] for t in trials)
    assert all(not t["passed"] for t in trials if t["fp32_nodes"] < chosen)
    assert all(t["speed_vs_fp32"] > 0 for t in trials)
    kept = list(recipe["sensitivity"].values())
    assert list(recipe["sensitivity"]) == recipe["fp32_nodes"] and kept == sorted(kept)[::-1]
    assert int8.validation["cosine_mean"] >= 0.995 and int8.validation["cosine_min"] >= 0.98


def test_fp16_keeps_int64_inputs_and_a_float32_output(embedder_bundle_gpu: Path) -> None:
    bundle = load_bundle(embedder_bundle_gpu)
    assert set(bundle.manifest.variants) == {"fp32", "fp16"}
    fp16 = bundle.manifest.variants["fp16"]
    model = onnx.load(str(embedder_bundle_gpu / fp16.file))
    elem = onnx.TensorProto
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [elem.INT64] * 2
    (output,) = model.graph.output
    assert output.name == "sentence_embedding" and output.type.tensor_type.elem_type == elem.FLOAT
    assert any(i.data_type == elem.FLOAT16 for i in model.graph.initializer)
    from twostage.server.runtime.session import cuda_available

    if not cuda_available():
        assert fp16.recipe["validation_note"] == "not validated: no CUDA"
        assert fp16.validation == {}
    assert fp16.size_bytes < 0.6 * bundle.manifest.variants["fp32"].size_bytes


def test_a_variant_below_its_gate_is_refused_and_nothing_is_written(tmp_path, capsys):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "keep.txt").write_text("the previous bundle")
    code = main(
        [
            "export",
            "--out",
            str(target),
            "--int8-mix",
            "all",
            "--min-cosine-min",
            "0.9999",
            "--validation-count",
            "16",
            "--no-progress",
            "--threads",
            "2",
        ]
    )
    captured = capsys.readouterr()
    assert code == 3
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("twostage export: error: validate: refused, below threshold: int8: ")
    assert "cosine_min 0." in line and "< 0.9999" in line and "--int8-mix top:K" in line
    assert "Traceback" not in captured.err
    assert "FAIL" in captured.out  # the table was printed before refusing
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no staging folders left
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--targets", "cpu-int8,tpu-int4"], "--targets: unknown target 'tpu-int4'"),
        (["--int8-mix", "top:many"], "--int8-mix 'top:many'"),
        (["--validation-texts", "no/such.jsonl"], "--validation-texts no/such.jsonl: no such"),
        (["./no/such/folder"], "./no/such/folder: no such checkpoint folder"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["export", *argv, "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("twostage export: error:")


def test_cli_help_lists_the_options(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--kind",
        "--targets",
        "--max-length",
        "--quant-preset",
        "--min-cosine-mean",
        "--min-rank-agreement",
        "--validation-texts",
        "--int8-mix",
        "--out",
    ):
        assert flag in out


def test_the_manifest_records_what_validation_measured(embedder_bundle) -> None:
    data = json.loads((embedder_bundle / "manifest.json").read_text())
    for variant in data["variants"].values():
        assert set(variant["thresholds"]) <= set(variant["validation"])
        assert np.isfinite(list(variant["validation"].values())).all()
