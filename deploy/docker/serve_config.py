"""Write the image's server config: the bundles baked into the image, by name, as TOML.

``twostage serve`` without ``--model`` would make its default bundles at start (export, even train),
which a runtime image without torch cannot do. So the image names its bundles explicitly in a TOML
file that ``TWOSTAGE_CONFIG`` points at; flags and ``TWOSTAGE_*`` variables still win over it.

Each bundle folder (one with ``manifest.json``) is served; the first bundle of each kind is named
after the kind (``embedder``, ``reranker``, ``classifier``: the names ``twostage serve`` gives its
defaults), any further one after its folder. ``--first`` puts a folder ahead of the others.

    python serve_config.py /opt/twostage/models --first all-MiniLM-L6-v2 > serve.toml
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

MANIFEST = "manifest.json"


def bundle_names(models_dir: Path, first: Sequence[str] = ()) -> list[tuple[str, Path]]:
    """(name, bundle folder) for every bundle under ``models_dir``; ValueError on a bad manifest."""
    folders = sorted(p.parent for p in models_dir.glob(f"*/{MANIFEST}"))
    order = {name: index for index, name in enumerate(first)}
    folders.sort(key=lambda p: (order.get(p.name, len(order)), p.name))
    named: list[tuple[str, Path]] = []
    kinds_seen: set[str] = set()
    for folder in folders:
        try:
            kind = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["kind"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{folder / MANIFEST}: no readable 'kind' ({exc})") from exc
        name = folder.name if kind in kinds_seen else str(kind)
        kinds_seen.add(kind)
        if name in {n for n, _ in named}:
            raise ValueError(f"two bundles would be served as {name!r}; rename {folder}")
        named.append((name, folder))
    if not named:
        raise ValueError(f"no bundle ({MANIFEST}) under {models_dir}")
    return named


def render_toml(models: Sequence[tuple[str, Path]]) -> str:
    """The ``[server]`` table ``twostage serve --config`` reads (``models = ["NAME=DIR", ...]``)."""
    items = ",\n".join(f"    {json.dumps(f'{name}={path}')}" for name, path in models)
    header = "# Bundles baked into the image (deploy/docker/serve_config.py).\n[server]\n"
    return f"{header}models = [\n{items},\n]\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="TOML server config naming the image's bundles")
    parser.add_argument("models_dir", type=Path, help="folder of bundle folders")
    parser.add_argument("--first", action="append", default=[], help="bundle folder to list first")
    args = parser.parse_args(argv)
    try:
        models = bundle_names(args.models_dir, args.first)
    except ValueError as exc:
        print(f"serve_config: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(render_toml(models))
    for name, path in models:
        print(f"serve_config: {name} = {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
