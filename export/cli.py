"""``twostage export``: turn a checkpoint into a validated, quantized ONNX bundle."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from twostage.export.config import DEFAULT_OPSET, QUANT_PRESETS, Thresholds

EPILOG = """\
examples:
  twostage export           # the offline all-MiniLM-L6-v2 -> models/all-MiniLM-L6-v2
  twostage export cross-encoder/ms-marco-MiniLM-L-6-v2 --targets cpu-int8,gpu-fp16
  twostage export ./runs/reranker --kind reranker --out models/reranker

exit status: 0 written, 1 a step failed, 3 a variant validated below its threshold
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``export`` subcommand."""
    defaults = Thresholds()
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to a validated ONNX bundle (fp32, int8, fp16)",
        description="Export a Hugging Face hub id or a local checkpoint folder to ONNX, fuse it, "
        "quantize it, validate every variant through the serving runtime against PyTorch on "
        "real text, and write the bundle atomically.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        help="hub id or checkpoint folder (default: the installed offline "
        "sentence-transformers/all-MiniLM-L6-v2)",
    )
    p.add_argument(
        "--kind",
        choices=("embedder", "reranker", "classifier"),
        help="what the model is (default: detected from the checkpoint)",
    )
    p.add_argument("--out", type=Path, help="bundle folder (default: ./models/<name>)")
    p.add_argument("--name", help="bundle name (default: the model's last path part)")
    p.add_argument("--revision", help="hub revision: branch, tag or commit")
    p.add_argument(
        "--targets",
        default="cpu-int8",
        help="comma list of cpu-int8, gpu-fp16, cpu-fp32 (fp32 is always built; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--max-length", type=int, help="max tokens per sequence (default: the checkpoint's own)"
    )
    p.add_argument(
        "--quant-preset",
        default="auto",
        choices=("auto", *QUANT_PRESETS),
        help="int8 format; auto detects the CPU's instruction set (default: auto)",
    )
    p.add_argument(
        "--int8-mix",
        default="search",
        metavar="MIX",
        help="which weight nodes stay fp32 in the int8 file: search (fewest of the "
        "most sensitive that pass, default), all (none), top:K, nodes:A,B",
    )
    p.add_argument(
        "--search-budget",
        type=float,
        default=180.0,
        metavar="SECONDS",
        help="time limit of the int8 mix search (default: %(default)s)",
    )
    p.add_argument(
        "--search-texts",
        type=int,
        default=96,
        metavar="N",
        help="texts (or pairs) the search scores candidates on (default: %(default)s)",
    )
    p.add_argument(
        "--min-cosine-mean",
        type=float,
        default=defaults.min_cosine_mean,
        help="int8 embedder gate (default: %(default)s)",
    )
    p.add_argument(
        "--min-cosine-min",
        type=float,
        default=defaults.min_cosine_min,
        help="int8 embedder gate (default: %(default)s)",
    )
    p.add_argument(
        "--min-rank-agreement",
        type=float,
        default=defaults.min_rank_agreement,
        help="int8 reranker gate, mean per-query Spearman (default: %(default)s)",
    )
    p.add_argument(
        "--min-class-agreement",
        type=float,
        default=defaults.min_class_agreement,
        help="int8 classifier gate, argmax agreement (default: %(default)s)",
    )
    p.add_argument(
        "--validation-texts",
        type=Path,
        metavar="FILE",
        help="passages to validate on: BEIR corpus.jsonl, JSONL with 'text', or one "
        "per line (default: SciFact from ../shared/data, else built-in passages)",
    )
    p.add_argument(
        "--validation-queries",
        type=Path,
        metavar="FILE",
        help="queries for cross-encoder pairs (same formats)",
    )
    p.add_argument(
        "--validation-count",
        type=int,
        default=200,
        metavar="N",
        help="texts (embedders) or pairs (cross-encoders) (default: %(default)s)",
    )
    p.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default: %(default)s)"
    )
    p.add_argument("--threads", type=int, help="CPU threads for validation (default: all usable)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler: run the export; one-line errors (``-v`` adds the trace)."""
    from twostage.export.errors import ValidationFailed
    from twostage.server.errors import TwostageError

    verbose = getattr(args, "verbose", 0)
    try:
        from twostage.export.config import ExportConfig, Int8Mix, parse_targets
        from twostage.export.pipeline import run_export

        config = ExportConfig(
            model=args.model,
            out=args.out,
            kind=args.kind,
            targets=parse_targets(args.targets),
            max_length=args.max_length,
            quant_preset=args.quant_preset,
            int8_mix=Int8Mix.parse(
                args.int8_mix, budget_s=args.search_budget, search_texts=args.search_texts
            ),
            thresholds=Thresholds(
                min_cosine_mean=args.min_cosine_mean,
                min_cosine_min=args.min_cosine_min,
                min_rank_agreement=args.min_rank_agreement,
                min_class_agreement=args.min_class_agreement,
            ),
            validation_texts=args.validation_texts,
            validation_queries=args.validation_queries,
            validation_count=args.validation_count,
            name=args.name,
            revision=args.revision,
            opset=args.opset,
            threads=args.threads,
            progress=not args.no_progress,
        )
        run_export(config)
        return 0
    except ValidationFailed as exc:
        _report(exc, verbose)
        return 3
    except TwostageError as exc:
        _report(exc, verbose)
        return 1
    except ImportError as exc:
        _report(exc, verbose, prefix="missing dependency (install the [export] extra): ")
        return 1


def _report(exc: BaseException, verbose: int, prefix: str = "") -> None:
    if verbose:
        traceback.print_exception(exc)
    print(f"twostage export: error: {prefix}{exc}", file=sys.stderr)
