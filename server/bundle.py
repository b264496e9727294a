"""The model bundle: the contract between ``twostage export`` and the server.

A bundle is a folder with ``manifest.json``, the tokenizer files, and one ONNX file per precision
variant (``model.onnx`` fp32 optimized, ``model.int8.onnx``, ``model.fp16.onnx``). The manifest is
self-describing: what the model is (kind, source, pooling or labels), how each variant was made and
how it validated against the original. :func:`load_bundle` refuses a bundle whose manifest or file
hashes do not check out, naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from twostage.server.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"

Kind = Literal["embedder", "reranker", "classifier"]
KINDS: tuple[str, ...] = ("embedder", "reranker", "classifier")
Precision = Literal["fp32", "int8", "fp16"]
VARIANT_FILES: dict[str, str] = {
    "fp32": "model.onnx",
    "int8": "model.int8.onnx",
    "fp16": "model.fp16.onnx",
}
POOLINGS = ("mean", "cls", "max", "lasttoken")
ACTIVATIONS = ("sigmoid", "softmax", "identity")


@dataclass(frozen=True)
class Source:
    """Where the weights came from: a hub id or a local path, its revision and weights hash."""

    id: str
    revision: str | None = None
    weights_sha256: str | None = None


@dataclass(frozen=True)
class Variant:
    """One ONNX file: its precision, hash, how it was made and how it validated."""

    precision: str
    file: str
    sha256: str
    # e.g. {"cosine_mean": .998, "cosine_min": .995} or {"max_abs_error": .., "rank_agreement": ..}
    validation: dict[str, float] = field(default_factory=dict)
    # how it was made: e.g. {"format": "qdq", "per_channel": true, "fp32_nodes": [...]} for int8
    recipe: dict[str, Any] = field(default_factory=dict)
    # validation thresholds in force when it passed
    thresholds: dict[str, float] = field(default_factory=dict)
    size_bytes: int = 0


@dataclass(frozen=True)
class Fusion:
    """How the rerank stage combines the first stage and the cross-encoder (fitted at training).

    ``final = dense_weight * z(first stage) + (1 - dense_weight) * z(cross_encoder_logit)``,
    z-scores over the reranked candidates. ``dense_weight == 0`` ranks by the cross-encoder
    alone; 1 means the cross-encoder added nothing on held-back queries.
    """

    method: str = "zscore"
    dense_weight: float = 0.0
    fitted_on: str = ""
    # candidates per query the weight was fitted over (0: not recorded); z-scores depend on it
    candidates: int = 0
    heldout: dict[str, float] = field(default_factory=dict)
    # the first-stage score ``dense_weight`` weighs: "dense" (older bundles) or the hybrid
    # fusion the training run applied to its held-back queries
    first_stage: str = "dense"


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json``. Fields that apply to one kind only are ``None`` otherwise."""

    kind: str
    source: Source
    max_length: int
    variants: dict[str, Variant]
    schema_version: int = SCHEMA_VERSION
    name: str = ""
    # embedders: pooling and L2 normalisation are inside the graph; the output is [batch, dim]
    dim: int | None = None
    pooling: str | None = None
    normalize: bool | None = None
    # prefixes some embedders expect (e5: "query: ", "passage: ")
    query_prefix: str = ""
    document_prefix: str = ""
    # cross-encoders: output is [batch, num_labels] raw logits; the server applies ``activation``
    num_labels: int | None = None
    label_names: tuple[str, ...] | None = None
    activation: str | None = None
    fusion: Fusion | None = None
    # ONNX graph I/O
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    output_name: str = "output"
    opset: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""

    def validate(self) -> None:
        """Raise :class:`BundleError` naming the field if the manifest is inconsistent."""
        if self.schema_version != SCHEMA_VERSION:
            raise BundleError(
                f"manifest schema_version {self.schema_version} is not supported "
                f"(this server reads {SCHEMA_VERSION})"
            )
        if self.kind not in KINDS:
            raise BundleError(f"manifest kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.max_length <= 0:
            raise BundleError(f"manifest max_length must be > 0, got {self.max_length}")
        if not self.variants:
            raise BundleError("manifest lists no variants")
        for key, variant in self.variants.items():
            if key not in VARIANT_FILES:
                raise BundleError(f"manifest variant {key!r} is not one of {sorted(VARIANT_FILES)}")
            if not variant.file or "/" in variant.file or "\\" in variant.file:
                raise BundleError(f"manifest variant {key!r} file {variant.file!r} is not a name")
        if self.kind == "embedder":
            if not self.dim or self.dim <= 0:
                raise BundleError("embedder manifest needs dim > 0")
            if self.pooling not in POOLINGS:
                raise BundleError(f"embedder pooling {self.pooling!r} is not one of {POOLINGS}")
        else:
            if not self.num_labels or self.num_labels <= 0:
                raise BundleError(f"{self.kind} manifest needs num_labels > 0")
            if self.activation not in ACTIVATIONS:
                raise BundleError(f"activation {self.activation!r} is not one of {ACTIVATIONS}")
            if self.label_names is not None and len(self.label_names) != self.num_labels:
                raise BundleError(
                    f"label_names has {len(self.label_names)} names for {self.num_labels} labels"
                )
            if self.kind == "classifier" and self.num_labels < 2:
                raise BundleError("classifier manifest needs num_labels >= 2")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.label_names is not None:
            data["label_names"] = list(self.label_names)
        data["input_names"] = list(self.input_names)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BundleError(f"manifest has an unexpected field {unknown[0]!r}")
        for name in ("kind", "source", "max_length", "variants"):
            if name not in data:
                raise BundleError(f"manifest is missing field {name!r}")
        try:
            variants = {k: Variant(**v) for k, v in data["variants"].items()}
            fusion = Fusion(**data["fusion"]) if data.get("fusion") else None
            label_names = data.get("label_names")
            plain = {
                k: v
                for k, v in data.items()
                if k not in ("variants", "fusion", "source", "label_names", "input_names")
            }
            return cls(
                **plain,
                source=Source(**data["source"]),
                variants=variants,
                fusion=fusion,
                label_names=tuple(label_names) if label_names is not None else None,
                input_names=tuple(data.get("input_names", ("input_ids", "attention_mask"))),
            )
        except KeyError as exc:
            raise BundleError(f"manifest is missing field {exc.args[0]!r}") from None
        except TypeError as exc:
            raise BundleError(f"manifest has an unexpected field: {exc}") from None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: Manifest

    @property
    def kind(self) -> str:
        return self.manifest.kind

    def variant(self, precision: str) -> Variant:
        try:
            return self.manifest.variants[precision]
        except KeyError:
            raise BundleError(
                f"bundle {self.path} has no {precision} variant "
                f"(it has: {', '.join(sorted(self.manifest.variants))})"
            ) from None

    def variant_path(self, precision: str) -> Path:
        return self.path / self.variant(precision).file

    def verify(self, precisions: list[str] | None = None) -> None:
        """Check that variant files exist and match their sha256; raise naming the file."""
        for key in precisions or list(self.manifest.variants):
            variant = self.variant(key)
            file = self.path / variant.file
            if not file.is_file():
                raise BundleError(f"bundle {self.path}: variant file {variant.file} is missing")
            try:
                actual = sha256_file(file)
            except OSError as exc:
                raise BundleError(f"cannot read {file}: {exc.strerror or exc}") from None
            if actual != variant.sha256:
                raise BundleError(
                    f"bundle {self.path}: {variant.file} sha256 {actual[:12]}... does not match "
                    f"the manifest ({variant.sha256[:12]}...); the file was changed or truncated"
                )
        if not (self.path / "tokenizer.json").is_file():
            raise BundleError(f"bundle {self.path}: tokenizer.json is missing")


def read_manifest(path: Path | str) -> Manifest:
    """Parse and validate ``manifest.json`` of a bundle folder (no hash checks)."""
    folder = Path(path)
    file = folder / MANIFEST_FILE
    try:
        if not file.is_file():
            raise BundleError(f"{folder} is not a model bundle: {MANIFEST_FILE} is missing")
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise BundleError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{file} must hold a JSON object")
    manifest = Manifest.from_dict(data)
    manifest.validate()
    return manifest


def load_bundle(
    path: Path | str, *, verify: bool = True, precisions: list[str] | None = None
) -> Bundle:
    """Read a bundle folder, validate the manifest and (by default) the variant hashes.

    ``precisions`` limits the hash check to the variants that will be loaded.
    """
    folder = Path(path).expanduser().resolve()
    bundle = Bundle(path=folder, manifest=read_manifest(folder))
    if verify:
        bundle.verify(precisions)
    return bundle


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Validate and write ``manifest.json`` into ``folder``."""
    manifest.validate()
    (folder / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
