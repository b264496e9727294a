"""``twostage train {bi-encoder,cross-encoder,reranker}``: argument parsing and error reporting.

torch and sentence-transformers are imported inside the handlers, so ``twostage --help`` stays
fast. Input errors print one line (file, line, field) and exit 2 before any model loads.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from twostage.train.pairs import DataError


def register(subparsers: Any) -> None:
    """Add the ``train`` command and its three subcommands to ``subparsers``."""
    train = subparsers.add_parser(
        "train",
        help="fine-tune a bi-encoder or cross-encoder from pair files or a BEIR folder",
        description="Fine-tune models with sentence-transformers' trainers. Each run writes a "
        "checkpoint that `twostage export` takes and a training_report.json.",
    )
    commands = train.add_subparsers(dest="train_command", metavar="KIND", required=True)

    bi = commands.add_parser(
        "bi-encoder",
        help="fine-tune a sentence-transformers bi-encoder",
        description="Loss follows the data: labels 1/0 -> OnlineContrastiveLoss; float labels in "
        "[0,1] -> CoSENTLoss; a BEIR folder -> MultipleNegativesRankingLoss on (query, positive).",
    )
    bi.add_argument("data", metavar="PAIRS", help="pair file (.jsonl/.csv) or a BEIR folder")
    _common(bi)
    bi.add_argument(
        "--eval",
        dest="eval_file",
        metavar="FILE",
        help="held-back pair file (default: hold back --heldout-fraction of PAIRS)",
    )
    bi.add_argument(
        "--test",
        metavar="FILE_OR_SPLIT",
        help="also report figures on this pair file (or qrels split of the BEIR folder)",
    )
    bi.add_argument(
        "--heldout-queries",
        type=int,
        default=80,
        help="BEIR: training queries held back for evaluation (default 80)",
    )
    _cache(bi)
    bi.add_argument(
        "--hard-negatives",
        type=int,
        default=0,
        help="BEIR: mined hard negatives per query added to the in-batch ones (default 0)",
    )
    bi.set_defaults(handler=_run_bi_encoder, max_length=256, lr=2e-5, batch_size=32)

    ce = commands.add_parser(
        "cross-encoder",
        help="train a cross-encoder: float labels -> similarity scorer, class labels -> classifier",
        description="Float labels in [0,1] -> one output with sigmoid (BCE). Integer labels -> N "
        "outputs with softmax (cross-entropy); names from --labels, labels.txt or "
        "label_names.json beside the file, stored as id2label in the config.",
    )
    ce.add_argument("data", metavar="PAIRS", help="pair file (.jsonl/.csv)")
    _common(ce)
    ce.add_argument(
        "--head-lr",
        type=float,
        default=1e-3,
        help="learning rate of the new classification head (default %(default)s; 0 = --lr)",
    )
    ce.add_argument("--labels", metavar="NAME0,NAME1,...", help="class names, index order")
    ce.add_argument(
        "--eval",
        dest="eval_file",
        metavar="FILE",
        help="held-back pair file (default: hold back --heldout-fraction of PAIRS)",
    )
    ce.add_argument("--test", metavar="FILE", help="also report figures on this pair file")
    ce.set_defaults(handler=_run_cross_encoder, max_length=128, lr=2e-5, batch_size=16)

    rr = commands.add_parser(
        "reranker",
        help="train the retrieval reranker from a BEIR folder, with bi-encoder hard negatives",
        description="Positives from qrels/train.tsv, hard negatives mined with the bi-encoder (and "
        "BM25 when bm25s is installed) from ranks skip-top+1..depth, never a positive. Fits the "
        "dense/cross-encoder fusion weight on held-back training queries and writes fusion.json.",
    )
    rr.add_argument(
        "data", metavar="BEIR_DIR", help="BEIR folder with corpus, queries, qrels/train.tsv"
    )
    _common(rr)
    rr.add_argument(
        "--head-lr",
        type=float,
        default=1e-3,
        help="learning rate of the new classification head (default %(default)s; 0 = --lr)",
    )
    _cache(rr)
    rr.add_argument(
        "--bi-encoder",
        metavar="MODEL",
        help="bi-encoder that mines negatives and gives dense scores (default: MiniLM)",
    )
    rr.add_argument("--negatives", type=int, default=3, help="hard negatives per query (default 3)")
    rr.add_argument(
        "--skip-top",
        type=int,
        default=3,
        help="never take negatives from the top N ranks (default 3)",
    )
    rr.add_argument(
        "--depth", type=int, default=100, help="mine negatives down to rank N (default 100)"
    )
    rr.add_argument(
        "--heldout-queries",
        type=int,
        default=80,
        help="training queries held back to fit the fusion weight (default 80)",
    )
    rr.add_argument(
        "--candidates",
        type=int,
        default=100,
        help="dense candidates reranked per query when fitting (default %(default)s, as Search)",
    )
    rr.add_argument(
        "--embed-max-length",
        type=int,
        help="tokens per corpus text for the bi-encoder (default: its own; 128 is ~2x faster)",
    )
    rr.add_argument("--test", metavar="SPLIT", help="also report figures on this qrels split")
    rr.set_defaults(handler=_run_reranker, max_length=128, lr=2e-5, batch_size=16)


def _cache(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache corpus embeddings here between runs (BEIR data only)",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder for the checkpoint"
    )
    parser.add_argument(
        "--base",
        metavar="MODEL",
        help="base model folder or hub id (default: installed all-MiniLM-L6-v2)",
    )
    parser.add_argument("--epochs", type=float, default=1.0, help="training epochs (default 1)")
    parser.add_argument(
        "--max-steps", type=int, default=-1, help="stop after N steps (overrides --epochs)"
    )
    parser.add_argument("--batch-size", type=int, help="examples per step (default %(default)s)")
    parser.add_argument(
        "--lr",
        type=float,
        help="peak learning rate, linear warm-up and decay (default %(default)s)",
    )
    parser.add_argument(
        "--warmup-ratio", type=float, default=0.1, help="warm-up share of the steps"
    )
    parser.add_argument(
        "--max-length", type=int, help="tokens per training example (default %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=12, help="seed for data order, head init, sampling"
    )
    parser.add_argument(
        "--heldout-fraction",
        type=float,
        default=0.1,
        help="share of pairs held back when no --eval file is given (default 0.1)",
    )
    parser.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="bf16 autocast: auto = only where the CPU/GPU has native bf16",
    )


def _recipe(args: argparse.Namespace) -> Any:
    from twostage.train.recipe import Recipe

    return Recipe(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_ratio=args.warmup_ratio,
        max_length=args.max_length,
        seed=args.seed,
        max_steps=args.max_steps,
        bf16=args.bf16,
        head_learning_rate=getattr(args, "head_lr", None) or None,
    )


def _run_bi_encoder(args: argparse.Namespace) -> int:
    from twostage.train.bi_encoder import prepare_bi_encoder, run_bi_encoder

    def prepare() -> Any:
        return prepare_bi_encoder(
            args.data,
            args.out,
            base=args.base,
            eval_file=args.eval_file,
            test=args.test,
            heldout_fraction=args.heldout_fraction,
            heldout_count=args.heldout_queries,
            hard_negatives=args.hard_negatives,
            cache_dir=args.cache_dir,
            recipe=_recipe(args),
        )

    return _guarded(prepare, run_bi_encoder)


def _run_cross_encoder(args: argparse.Namespace) -> int:
    from twostage.train.cross_encoder import prepare_cross_encoder, run_cross_encoder

    def prepare() -> Any:
        return prepare_cross_encoder(
            args.data,
            args.out,
            base=args.base,
            labels=args.labels,
            eval_file=args.eval_file,
            test_file=args.test,
            heldout_fraction=args.heldout_fraction,
            recipe=_recipe(args),
        )

    return _guarded(prepare, run_cross_encoder)


def _run_reranker(args: argparse.Namespace) -> int:
    from twostage.train.reranker import RerankerOptions, prepare_reranker, run_reranker

    def prepare() -> Any:
        options = RerankerOptions(
            negatives=args.negatives,
            skip_top=args.skip_top,
            depth=args.depth,
            heldout_queries=args.heldout_queries,
            candidates=args.candidates,
            embed_max_length=args.embed_max_length,
            test_split=args.test,
        )
        return prepare_reranker(
            args.data,
            args.out,
            base=args.base,
            bi_encoder=args.bi_encoder,
            options=options,
            recipe=_recipe(args),
            cache_dir=args.cache_dir,
        )

    return _guarded(prepare, run_reranker)


def _guarded(prepare: Callable[[], Any], run: Callable[[Any], Any]) -> int:
    """Validate (``prepare``), then train (``run``). Bad input is one line on stderr, exit 2."""
    try:
        job = prepare()
    except (DataError, ValueError) as exc:
        print(f"twostage train: error: {exc}", file=sys.stderr)
        return 2
    try:
        run(job)
    except DataError as exc:
        print(f"twostage train: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"twostage train: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    return 0
