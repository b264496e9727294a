"""The bundles that ``twostage export`` writes: manifest contents, round trip, hash checks."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from twostage.export.config import QUANT_PRESETS
from twostage.server.bundle import (
    Manifest,
    load_bundle,
    read_manifest,
    sha256_file,
)
from twostage.server.errors import BundleError
from twostage.server.runtime import load_runtime


def test_embedder_manifest_says_what_the_model_is(embedder_bundle: Path, minilm_path: Path):
    m = read_manifest(embedder_bundle)
    assert m.kind == "embedder"
    assert (m.dim, m.pooling, m.normalize, m.max_length) == (384, "mean", True, 256)
    assert m.output_name == "sentence_embedding"
    assert m.input_names == ("input_ids", "attention_mask")
    assert m.source.weights_sha256 == sha256_file(minilm_path / "model.safetensors")
    assert m.opset == 17
    assert {"onnxruntime", "optimum", "transformers", "torch"} <= set(m.versions)
    datetime.fromisoformat(m.created.replace("Z", "+00:00"))
    assert set(m.variants) == {"fp32", "int8"}
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        assert (embedder_bundle / name).is_file()


def test_variants_carry_their_validation_and_recipe(embedder_bundle: Path) -> None:
    m = read_manifest(embedder_bundle)
    fp32, int8 = m.variants["fp32"], m.variants["int8"]
    assert fp32.validation["cosine_min"] >= fp32.thresholds["cosine_min"] >= 0.999
    assert int8.validation["cosine_mean"] >= int8.thresholds["cosine_mean"] == 0.99
    assert int8.validation["cosine_min"] >= int8.thresholds["cosine_min"] == 0.97
    assert fp32.recipe["fused"]["Attention"] == 6  # the transformer fusions happened
    recipe = int8.recipe
    assert recipe["preset"] in QUANT_PRESETS and recipe["per_channel"] is True
    # the fixture asks for the three most sensitive weight nodes in fp32 (top:3)
    assert len(recipe["fp32_nodes"]) == 3 and recipe["quantized_nodes"] == 24 - 3
    assert list(recipe["sensitivity"]) == recipe["fp32_nodes"]
    assert recipe["cpu_graph"]["ops"].get("DynamicQuantizeMatMul", 0) > 0
    assert int8.size_bytes < fp32.size_bytes


def test_manifest_round_trips(embedder_bundle: Path, reranker_bundle: Path) -> None:
    for bundle in (embedder_bundle, reranker_bundle):
        m = read_manifest(bundle)
        again = Manifest.from_dict(json.loads(m.to_json()))
        assert again == m
        assert again.to_json() == (bundle / "manifest.json").read_text(encoding="utf-8")


def test_cross_encoder_manifests(reranker_bundle: Path, classifier_bundle: Path) -> None:
    r = read_manifest(reranker_bundle)
    assert (r.kind, r.num_labels, r.activation, r.output_name) == (
        "reranker",
        1,
        "sigmoid",
        "logits",
    )
    assert "token_type_ids" in r.input_names  # pairs need their segment ids
    assert r.dim is None and r.pooling is None
    assert r.fusion is not None and r.fusion.fitted_on == "test fixture"
    assert r.fusion.heldout == {"ndcg@10_fused": 0.5, "ndcg@10_cross_encoder": 0.5}
    assert "rank_agreement" in r.variants["int8"].validation
    c = read_manifest(classifier_bundle)
    assert (c.kind, c.num_labels, c.activation) == ("classifier", 3, "softmax")
    assert c.label_names == ("contradiction", "entailment", "neutral")
    assert c.fusion is None
    assert c.variants["int8"].validation["class_agreement"] >= 0.95


def test_hashes_are_verified(embedder_bundle: Path) -> None:
    bundle = load_bundle(embedder_bundle)
    for variant in bundle.manifest.variants.values():
        data = (embedder_bundle / variant.file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == variant.sha256
        assert len(data) == variant.size_bytes


@pytest.fixture
def bundle_copy(embedder_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(embedder_bundle, tmp_path / "bundle"))


def test_a_tampered_file_is_refused_naming_it(bundle_copy: Path) -> None:
    file = bundle_copy / "model.int8.onnx"
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.int8\.onnx sha256 .* does not match"):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError, match=r"model\.int8\.onnx"):
        load_runtime(bundle_copy, precision="int8")
    # only the variant that will run is hashed at load: fp32 is intact and loads
    assert load_runtime(bundle_copy, precision="fp32").precision == "fp32"


def test_a_missing_file_is_refused_naming_it(bundle_copy: Path) -> None:
    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx is missing"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(kind="encoder"), "kind 'encoder'"),
        (lambda d: d.pop("max_length"), "missing field 'max_length'"),
        (lambda d: d.update(schema_version=99), "schema_version 99"),
        (lambda d: d.update(pooling="median"), "pooling 'median'"),
        (lambda d: d.update(surprise=1), "unexpected field"),
        (lambda d: d["variants"]["int8"].update(file="../model.onnx"), "is not a name"),
    ],
)
def test_a_bad_manifest_is_refused_naming_the_field(bundle_copy: Path, change, message) -> None:
    path = bundle_copy / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_copy)


def test_a_manifest_that_is_not_json_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError, match=r"manifest\.json is not valid JSON"):
        load_bundle(bundle_copy)
