"""Print the runtime requirements of pyproject.toml with an extra's packages swapped in.

The GPU image needs the base dependencies with ``onnxruntime-gpu`` instead of ``onnxruntime``. Both
distributions install the same ``onnxruntime`` module, so installing ``twostage[gpu]`` (which keeps
the base ``onnxruntime`` too) leaves two packages overwriting each other's files. This script reads
the project's own lists, so the image never carries a second copy of them:

    python runtime_requirements.py pyproject.toml --extra gpu > requirements.txt

A base requirement is dropped when the extra provides a replacement for it (see ``REPLACES``).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

# distribution in an extra -> base distribution it replaces (same import name, cannot coexist)
REPLACES = {"onnxruntime-gpu": "onnxruntime"}

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirement_name(requirement: str) -> str:
    """The normalized distribution name of a PEP 508 requirement string (PEP 503 rules)."""
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def runtime_requirements(pyproject: dict, extras: Sequence[str]) -> list[str]:
    """Base dependencies plus the named extras, minus the base packages an extra replaces."""
    project = pyproject.get("project", {})
    base = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    added: list[str] = []
    for extra in extras:
        if extra not in optional:
            known = ", ".join(sorted(optional)) or "none"
            raise KeyError(f"extra {extra!r} is not in [project.optional-dependencies] ({known})")
        added.extend(optional[extra])
    replaced = {REPLACES[name] for name in map(requirement_name, added) if name in REPLACES}
    kept = [req for req in base if requirement_name(req) not in replaced]
    return kept + added


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path, help="path to pyproject.toml")
    parser.add_argument(
        "--extra", action="append", default=[], help="extra to add (repeatable), e.g. gpu"
    )
    args = parser.parse_args(argv)
    try:
        with args.pyproject.open("rb") as handle:
            data = tomllib.load(handle)
        lines = runtime_requirements(data, args.extra)
    except (OSError, tomllib.TOMLDecodeError, KeyError, ValueError) as exc:
        print(f"runtime_requirements: {args.pyproject}: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
