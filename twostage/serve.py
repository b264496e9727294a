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
    a("--config", type=Path, help="TOML file with a [server] table of the settings below")
    for f in _setting_fields():
        add_setting_flag(p, f)
    a("--auth-token", help=argparse.SUPPRESS)  # refused in run(), with the reason
    a("--no-reranker", action="store_true", help="default bundles: serve embed + search only")
    a("--prepare-only", action="store_true", help="make the default bundles, then exit")
    a("--retrain-reranker", action="store_true", help="train the default reranker again")
    a("--ready-file", type=Path, help="write the bound port here once serving (for scripts)")
    p.set_defaults(handler=run)


def _setting_fields() -> list[Any]:
    """The ServerConfig fields that have a ``serve`` flag (all but the token itself)."""
    from dataclasses import fields

    from twostage.server.config import ServerConfig

    return [f for f in fields(ServerConfig) if f.metadata.get("flag") is not None]


def setting_flags() -> list[str]:
    """Names of the settings ``serve`` takes as flags."""
    return [f.name for f in _setting_fields()]


def add_setting_flag(parser: argparse.ArgumentParser, f: Any) -> None:
    """One ``serve`` flag from a ServerConfig field: its help, type and default are the field's."""
    from twostage.server.config import ENV_PREFIX

    default = f.default
    kwargs: dict[str, Any] = dict(f.metadata.get("argparse", {}))
    shown = "none" if default in (None, "", ()) else default
    kwargs["help"] = f"{f.metadata['help']} (default {shown}; env {ENV_PREFIX}{f.name.upper()})"
    if isinstance(default, bool):
        kwargs.setdefault("action", "store_true")
    elif "action" not in kwargs:
        # bool is ruled out above; Path | None fields default to None, so read the annotation
        if "Path" in str(f.type):
            kwargs["type"] = Path
        elif isinstance(default, int | float):
            kwargs["type"] = type(default)
    kwargs["default"] = None  # not given: env, TOML or the field's default decide
    flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
    parser.add_argument(flag, dest=f.name, **kwargs)


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
        flags = {name: getattr(args, name, None) for name in setting_flags()}
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
