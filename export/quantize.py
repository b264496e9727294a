"""Step 3: dynamic int8 quantization for the CPU, and the search for the int8 mix.

Weights are quantized per output channel (per-tensor weights lose too much: cosine 0.948 mean,
0.785 min on MiniLM); activations are quantized per tensor at run time (``DynamicQuantizeLinear``).
Not every weight node tolerates that: a node whose input has outliers (the FFN output projection
of BERT-like encoders reads post-GELU activations) loses most precision. The search keeps the
fewest such nodes in fp32 that still pass the thresholds:

1. *Sensitivity*: each weight node's quantization error, simulated in numpy on that node's real
   inputs (captured once from the fp32 graph on the search texts): ``|X_q W_q - X W| / |X W|``.
   One fp32 run, no re-quantization per node, so it is cheap for any model size.
2. *Search*: keep the k most sensitive nodes in fp32, k = 0, 1, 2, 4, ... until the candidate
   passes the thresholds with a margin, end to end, then bisect down to the smallest passing k.
   Each trial is a real quantized file scored against the fp32 graph; the time budget bounds it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from twostage.export.errors import ExportError
from twostage.export.onnx_export import quiet

log = logging.getLogger(__name__)

QUANTIZABLE_OPS = ("MatMul", "Attention")


@dataclass(frozen=True)
class Int8Recipe:
    """How an int8 file was made; written to the manifest variant's ``recipe``."""

    preset: str
    activations: str = "uint8"  # dynamic, per tensor, asymmetric
    weights: str = "int8"  # symmetric, per channel
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights
    op_types: tuple[str, ...] = QUANTIZABLE_OPS
    fp32_nodes: tuple[str, ...] = ()
    quantized_nodes: int = 0
    selection: str = ""  # how fp32_nodes were chosen
    sensitivity: dict[str, float] = field(default_factory=dict)  # the kept nodes' errors

    def with_fp32(self, nodes: Sequence[str], total: int) -> Int8Recipe:
        return replace(self, fp32_nodes=tuple(nodes), quantized_nodes=total - len(nodes))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["op_types"] = list(self.op_types)
        data["fp32_nodes"] = list(self.fp32_nodes)
        data["format"] = "QOperator dynamic"
        return data


def preset_recipe(preset: str) -> Int8Recipe:
    """The int8 format for a CPU family.

    * ``avx512_vnni``: u8 x s8 on VPDPBUSD, full 8-bit range.
    * ``avx2``: u8 x s8 with 7-bit weights: AVX2's VPMADDUBSW adds two u8*s8 products into
      int16 and saturates at full range; 7 bits keep the sum in range. (optimum's avx2 preset,
      u8 x u8, avoids it too but ran slower here.)
    * ``arm64``: u8 x s8, full range (as fast as u8 x u8 on big cores, faster on small ones).
    """
    if preset == "avx512_vnni":
        return Int8Recipe(preset=preset)
    if preset == "avx2":
        return Int8Recipe(preset=preset, reduce_range=True)
    if preset == "arm64":
        return Int8Recipe(preset=preset)
    raise ExportError(f"unknown quantization preset {preset!r}", step="int8")


def weight_nodes(model: Any, op_types: Sequence[str] = QUANTIZABLE_OPS) -> list[str]:
    """Names of the nodes the quantizer would touch: ``op_types`` with a constant weight."""
    inits = {i.name for i in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type in op_types and len(node.input) > 1 and node.input[1] in inits:
            if not node.name:
                raise ExportError(
                    f"an unnamed {node.op_type} node cannot be addressed", step="int8"
                )
            names.append(node.name)
    return names


def quantize(src: Path, dst: Path, recipe: Int8Recipe) -> None:
    """Write the int8 file for ``recipe`` (nodes in ``recipe.fp32_nodes`` stay fp32)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight_type = QuantType.QInt8 if recipe.weights == "int8" else QuantType.QUInt8
    try:
        with quiet():
            quantize_dynamic(
                str(src),
                str(dst),
                op_types_to_quantize=list(recipe.op_types),
                per_channel=recipe.per_channel,
                reduce_range=recipe.reduce_range,
                weight_type=weight_type,
                nodes_to_exclude=list(recipe.fp32_nodes),
                extra_options={
                    # fused contrib ops (Attention, SkipLayerNormalization) have no ONNX type
                    # inference; their outputs are float
                    "DefaultTensorType": onnx.TensorProto.FLOAT,
                    "MatMulConstBOnly": True,  # never quantize activation x activation
                    "WeightSymmetric": True,
                },
            )
    except Exception as exc:
        raise ExportError(f"int8 quantization failed: {exc}", step="int8") from None


# -- sensitivity --------------------------------------------------------------------------------
def _fake_quant_activation(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """u8 asymmetric per-tensor over ``[lo, hi]`` (the whole tensor's range, including 0), as
    ``DynamicQuantizeLinear`` does."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zero = np.round(-lo / scale)
    q = np.clip(np.round(x / scale) + zero, 0, 255)
    return ((q - zero) * scale).astype(np.float32)


def _fake_quant_weight(w: np.ndarray, qmax: float) -> np.ndarray:
    """Symmetric per output column (the last axis), as the per-channel weight quantizer."""
    amax = np.abs(w).max(axis=0, keepdims=True)
    scale = np.where(amax > 0, amax / qmax, 1.0)
    return (np.clip(np.round(w / scale), -qmax, qmax) * scale).astype(np.float32)


def node_sensitivity(
    fp32_path: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    recipe: Int8Recipe,
    *,
    threads: int | None = None,
    rows_per_batch: int = 1024,
) -> dict[str, float]:
    """Relative output error of each weight node when it alone is quantized, largest first.

    Runs the fp32 graph once per batch with the weight nodes' inputs as extra outputs; only
    real (unpadded) token rows count.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(fp32_path))
    names = weight_nodes(model, recipe.op_types)
    inits = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node if n.name in set(names)}
    weights = {
        name: numpy_helper.to_array(inits[nodes[name].input[1]]).astype(np.float32)
        for name in names
    }
    taps = sorted({nodes[name].input[0] for name in names})
    known = {o.name for o in model.graph.output}
    for tap in taps:
        if tap not in known:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(tap))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    err_sq = dict.fromkeys(names, 0.0)
    ref_sq = dict.fromkeys(names, 0.0)
    weight_q: dict[str, np.ndarray] = {}
    for name in names:
        # onnxruntime always quantizes Attention weights to 7 bits
        qmax = 63.0 if recipe.reduce_range or nodes[name].op_type == "Attention" else 127.0
        weight_q[name] = _fake_quant_weight(weights[name], qmax)
    rng = np.random.default_rng(0)
    for feed in feeds:
        values = dict(zip(taps, session.run(taps, feed), strict=True))
        mask = feed.get("attention_mask")
        for name in names:
            x = values[nodes[name].input[0]]
            if mask is not None and x.ndim == 3 and x.shape[:2] == mask.shape:
                x = x[mask.astype(bool)]
            # the scale comes from the whole tensor (as at run time); the error is estimated on
            # a fixed sample of rows, which keeps this cheap for long inputs and wide layers
            lo, hi = float(x.min()), float(x.max())
            x = x.reshape(-1, x.shape[-1])
            if x.shape[0] > rows_per_batch:
                x = x[rng.choice(x.shape[0], rows_per_batch, replace=False)]
            y = x @ weights[name]
            y_q = _fake_quant_activation(x, lo, hi) @ weight_q[name]
            err_sq[name] += float(np.square(y_q - y).sum())
            ref_sq[name] += float(np.square(y).sum())
    scores = {name: float(np.sqrt(err_sq[name] / max(ref_sq[name], 1e-30))) for name in names}
    return dict(sorted(scores.items(), key=lambda kv: -kv[1]))


# -- search --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MixTrial:
    """One candidate mix, scored end to end against the fp32 graph on the search texts."""

    fp32_nodes: tuple[str, ...]
    figures: dict[str, float]
    passed: bool  # passes the thresholds with the search margin
    # fp32 time / this file's time, timed alternately on the same batch (same run only)
    speed_vs_fp32: float
    path: Path

    def row(self) -> dict[str, Any]:
        return {
            "fp32_nodes": len(self.fp32_nodes),
            **{k: round(v, 6) for k, v in self.figures.items()},
            "speed_vs_fp32": round(self.speed_vs_fp32, 3),
            "passed": self.passed,
        }


# evaluate(path) -> (figures, passes with margin, speed vs fp32)
Evaluate = Callable[[Path], tuple[dict[str, float], bool, float]]


@dataclass
class MixSearch:
    """Keeps the k most sensitive nodes in fp32 for growing k until a candidate passes.

    k = 0, 1, 2, 4, ... until one passes (or the budget or the candidates run out), then bisects
    down to the smallest passing k. ``trials`` keeps every candidate for the trade-off table.
    """

    fp32_path: Path
    workdir: Path
    recipe: Int8Recipe
    ranked: list[str]  # weight nodes, most sensitive first
    evaluate: Evaluate
    budget_s: float = 180.0
    on_trial: Callable[[MixTrial], None] | None = None
    trials: list[MixTrial] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def trial(self, keep: int) -> MixTrial:
        for done in self.trials:
            if len(done.fp32_nodes) == keep:
                return done
        nodes = tuple(self.ranked[:keep])
        path = self.workdir / f"model.int8.keep{keep}.onnx"
        quantize(self.fp32_path, path, self.recipe.with_fp32(nodes, len(self.ranked)))
        figures, passed, speed = self.evaluate(path)
        result = MixTrial(nodes, figures, passed, speed, path)
        self.trials.append(result)
        log.info("int8 mix: %d fp32 nodes -> %s passed=%s %.2fx", keep, figures, passed, speed)
        if self.on_trial is not None:
            self.on_trial(result)
        return result

    def over_budget(self) -> bool:
        return time.monotonic() - self.started > self.budget_s

    def run(self) -> MixTrial:
        """The passing trial with the fewest fp32 nodes found within the budget.

        If none passes before the budget or the candidates run out, the trial with the most
        fp32 nodes tried is returned; validation then refuses it with its figures.
        """
        steps = [0]
        k = 1
        while k < len(self.ranked):
            steps.append(k)
            k *= 2
        steps.append(len(self.ranked))
        failed_at = -1
        passed: MixTrial | None = None
        for keep in dict.fromkeys(steps):
            result = self.trial(keep)
            if result.passed:
                passed = result
                break
            failed_at = keep
            if self.over_budget():
                break
        if passed is None:
            return max(self.trials, key=lambda t: len(t.fp32_nodes))
        lo, hi = failed_at, len(passed.fp32_nodes)
        while hi - lo > 1 and not self.over_budget():
            mid = (lo + hi) // 2
            result = self.trial(mid)
            if result.passed:
                hi, passed = mid, result
            else:
                lo = mid
        return passed
