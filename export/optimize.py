"""Step 2: onnxruntime's transformer optimizer (attention, layer-norm, GELU fusions), and fp16.

The fused fp32 file is the base of every other variant. The fusions are written into the file,
so the server never optimizes at run time (it loads with basic graph optimizations only).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from twostage.export.errors import ExportError
from twostage.export.onnx_export import quiet

log = logging.getLogger(__name__)

# Encoder families onnxruntime's BERT fusions recognise; others still get the generic passes.
_BERT_LIKE = {
    "bert",
    "roberta",
    "xlm-roberta",
    "camembert",
    "distilbert",
    "electra",
    "mpnet",
    "deberta",
    "deberta-v2",
    "albert",
    "ernie",
    "xlm",
    "nomic_bert",
    "modernbert",
}


def optimizer_model_type(config: dict[str, Any]) -> str:
    """The ``model_type`` to give onnxruntime's optimizer for a checkpoint's config."""
    model_type = str(config.get("model_type", "bert"))
    return "bert" if model_type in _BERT_LIKE else model_type


def optimize_fp32(src: Path, dst: Path, config: dict[str, Any]) -> dict[str, int]:
    """Fuse the fp32 graph for inference; return the fused-operator counts (for the manifest)."""
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        with quiet():
            model = optimize_model(
                str(src),
                model_type=optimizer_model_type(config),
                num_heads=int(config.get("num_attention_heads", 0) or 0),
                hidden_size=int(config.get("hidden_size", 0) or 0),
                opt_level=1,  # onnxruntime's basic passes first (constant folding), then fusions
                use_gpu=False,
            )
            fused = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
            model.save_model_to_file(str(dst))
    except Exception as exc:
        raise ExportError(
            f"onnxruntime's transformer optimizer failed: {exc}", step="optimize"
        ) from None
    log.info("fused operators: %s", fused)
    return fused


def convert_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """fp16 weights and compute for CUDA; inputs stay int64 and the output stays float32.

    ``keep_io_types`` puts casts at the graph edges, so the manifest's I/O contract holds for
    every variant. Runs on a machine without CUDA (it is a graph rewrite).
    """
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    try:
        with quiet():
            model = OnnxModel(onnx.load(str(src)))
            model.convert_float_to_float16(keep_io_types=True)
            model.save_model_to_file(str(dst))
    except Exception as exc:
        raise ExportError(f"fp16 conversion failed: {exc}", step="fp16") from None
    ops = Counter(n.op_type for n in onnx.load(str(dst)).graph.node)
    return {
        "converter": "onnxruntime.transformers float16",
        "keep_io_types": True,
        "casts": int(ops.get("Cast", 0)),
    }


def bake_cpu_graph(src: Path, dst: Path) -> dict[str, int]:
    """Apply onnxruntime's extended CPU graph optimizations once, at export, and save the result.

    For int8 files this fuses ``DynamicQuantizeLinear`` + ``MatMulInteger`` + scale into
    ``DynamicQuantizeMatMul`` (about 10% less CPU time on MiniLM, measured), so the server can
    load with basic optimizations only. The saved graph holds CPU contrib ops: int8 files only
    ever run on the CPU execution provider.
    """
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(
            f"onnxruntime could not optimize {src.name}: {exc}", step="int8"
        ) from None
    ops = Counter(n.op_type for n in onnx.load(str(dst)).graph.node)
    return {
        op: int(n)
        for op, n in sorted(ops.items())
        if op.startswith(("Dynamic", "QAtt", "MatMulInteger"))
    }
