"""``twostage serve``: config from flags / ``TWOSTAGE_*`` env / TOML, default bundles, then serve.

Lives in the top-level package (not ``twostage.server``) because making the default bundles needs
the exporter and the trainer, which the server itself never imports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("twostage.serve")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the gRPC server (makes the default bundles first when none are given)",
        description=(
            "Serve embedding, reranking, classification, collections and search over gRPC. "
            "Every flag also reads TWOSTAGE_<FLAG> (e.g. TWOSTAGE_LISTEN) and an optional TOML "
            "file (--config / TWOSTAGE_CONFIG); flags win over env, env over the file."
        ),
    )
    a = p.add_argument
    a("--config", type=Path, help="TOML file with a [server] table of the options below")
    a("--listen", help="HOST:PORT to serve gRPC on (default 127.0.0.1:50051)")
    a("--metrics-port", type=int, help="Prometheus metrics HTTP port, 0 = off (default 9464)")
    a("--data-dir", type=Path, help="collections live here (default ./data)")
    a("--models-dir", type=Path, help="default bundles live here (default ./models)")
    a(
        "--model",
        dest="models",
        action="append",
        metavar="NAME=BUNDLE_DIR",
        help="serve this bundle under NAME (repeatable); none = the default bundles",
    )
    a("--device", choices=["cpu", "cuda"], help="cpu runs int8, cuda runs fp16 (default cpu)")
    a("--device-id", type=int, help="CUDA device index")
    a("--precision", choices=["fp32", "int8", "fp16"], help="force a bundle variant")
    a("--intra-op-threads", type=int, help="ONNX Runtime threads per model (0 = all CPUs)")
    a("--tokenizer-threads", type=int, help="tokenizer worker threads (default 2)")
    a("--max-batch-tokens", type=int, help="padded tokens per model batch (0 = device default)")
    a("--max-batch-size", type=int, help="sequences per model batch (0 = device default)")
    a("--max-wait-ms", type=float, help="how long an idle model waits to fill a batch")
    a("--max-padding-ratio", type=float, help="cap on padded/real tokens per batch (CPU 1.2)")
    a("--max-queue-tokens", type=int, help="queued tokens per model before RESOURCE_EXHAUSTED")
    a("--max-inflight-requests", type=int, help="RPCs in flight before RESOURCE_EXHAUSTED")
    a("--max-texts-per-request", type=int, help="texts per Embed / documents per Rerank")
    a("--max-documents-per-upsert", type=int, help="documents per Upsert call")
    a("--snapshot-every", type=int, help="write an index snapshot after this many writes")
    a("--grace-period", type=float, help="seconds in-flight calls get on SIGTERM (default 20)")
    a(
        "--auth-token-file",
        type=Path,
        help="file holding the bearer token required for writes and admin calls (or set "
        "TWOSTAGE_AUTH_TOKEN; a token is never taken on the command line, where every local "
        "user can read it)",
    )
    a("--auth-token", help=argparse.SUPPRESS)  # refused in run(), with the reason
    a(
        "--auth-reads",
        action="store_true",
        default=None,
        help="require the bearer token for reads too (Embed, Rerank, Search, ...), both transports",
    )
    a(
        "--http-listen",
        help="HOST:PORT for the HTTP APIs (OpenAI, Cohere, Jina, TEI, JSON RPCs) or off "
        "(default 127.0.0.1:8080)",
    )
    a("--tls-cert", type=Path, help="PEM certificate chain (with --tls-key)")
    a("--tls-key", type=Path, help="PEM private key")
    a(
        "--reranker-train-data",
        type=Path,
        help="BEIR folder (with qrels/train.tsv) to train the offline default reranker from "
        "when no hub is reachable",
    )
    a("--no-reranker", action="store_true", help="default bundles: serve embed + search only")
    a("--prepare-only", action="store_true", help="make the default bundles, then exit")
    a("--retrain-reranker", action="store_true", help="train the default reranker again")
    a("--ready-file", type=Path, help="write the bound port here once serving (for scripts)")
    p.set_defaults(handler=run)


_FLAG_FIELDS = (
    "listen",
    "metrics_port",
    "data_dir",
    "models_dir",
    "models",
    "device",
    "device_id",
    "precision",
    "intra_op_threads",
    "tokenizer_threads",
    "max_batch_tokens",
    "max_batch_size",
    "max_wait_ms",
    "max_padding_ratio",
    "max_queue_tokens",
    "max_inflight_requests",
    "max_texts_per_request",
    "max_documents_per_upsert",
    "snapshot_every",
    "grace_period",
    "auth_token_file",
    "auth_reads",
    "http_listen",
    "tls_cert",
    "tls_key",
    "reranker_train_data",
)


def run(args: argparse.Namespace) -> int:
    from twostage.server.config import load_config
    from twostage.server.errors import TwostageError

    logging.getLogger("twostage").setLevel(min(logging.getLogger().level, logging.INFO))
    if getattr(args, "auth_token", None):
        print(
            "twostage serve: --auth-token is not accepted (every local user can read a process's "
            "arguments); put the token in a file for --auth-token-file, or set TWOSTAGE_AUTH_TOKEN",
            file=sys.stderr,
        )
        return 2
    try:
        flags = {name: getattr(args, name, None) for name in _FLAG_FIELDS}
        cfg = load_config(flags, toml_file=args.config)
        if not cfg.models or args.prepare_only:
            from twostage.defaults import ensure_default_bundles

            models = ensure_default_bundles(
                cfg.models_dir,
                reranker_train_data=cfg.reranker_train_data,
                with_reranker=not args.no_reranker,
                retrain=args.retrain_reranker,
                # both variants, so the bundles serve on either device (fp16 costs seconds)
                targets=("cpu-int8", "gpu-fp16"),
            )
            if args.prepare_only:
                for name, path in models:
                    print(f"{name}: {path}")
                return 0
            if not cfg.models:
                from dataclasses import replace

                cfg = replace(cfg, models=tuple(models)).validate()
        print("twostage serve config:", json.dumps(cfg.redacted(), indent=None), file=sys.stderr)
        from twostage.server.app import serve

        asyncio.run(serve(cfg, ready_file=args.ready_file))
        return 0
    except TwostageError as exc:
        print(f"twostage serve: {exc}", file=sys.stderr)
        return 2
