"""The import direction of DESIGN.md, checked with ``ast`` on every source file.

Imports inside functions count too: a lazy import is still a dependency. A new server module
must be given a layer here, so the layering is a decision, never an accident.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# folder -> package, as pyproject's package-dir maps them
PACKAGES = {
    "twostage": "twostage",
    "protos": "twostage.protos",
    "export": "twostage.export",
    "train": "twostage.train",
    "server": "twostage.server",
    "clients": "twostage.clients",
}
S = "twostage.server"
LAYERS = {
    f"{S}.config": 0,
    f"{S}.errors": 0,
    f"{S}.metrics": 0,
    f"{S}.bundle": 0,
    f"{S}.fusion": 0,
    f"{S}.limits": 0,
    f"{S}.runtime": 1,
    f"{S}.batching": 1,
    f"{S}.store": 1,
    f"{S}.engine": 2,
    f"{S}.api": 3,
    f"{S}.app": 4,  # composition root
}
GRPC = ("grpc", "grpc_health", "grpc_reflection", "grpc_status")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (absolute)
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.module} imports {self.target}"


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    package = PACKAGES[parts[0]]
    rest = parts[1:]
    if rest and rest[-1] == "__init__":
        rest = rest[:-1]
    return ".".join([package, *rest])


def source_files() -> list[Path]:
    files = []
    for folder in PACKAGES:
        for path in sorted((REPO / folder).rglob("*.py")):
            if "_pb2" in path.name:  # generated stubs
                continue
            files.append(path)
    return files


def imports_of(path: Path) -> list[Import]:
    return imports_in(
        path.read_text(encoding="utf-8"),
        module_name(path),
        is_package=path.name == "__init__.py",
        file=str(path.relative_to(REPO)),
    )


def imports_in(source: str, module: str, *, is_package: bool, file: str) -> list[Import]:
    """Every import in ``source`` as absolute module names (relative ones resolved)."""
    tree = ast.parse(source, filename=file)
    rel = file
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, rel, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append(Import(module, target, rel, node.lineno))
            # ``from twostage.server import runtime`` imports the submodule
            found += [
                Import(module, f"{target}.{alias.name}", rel, node.lineno)
                for alias in node.names
                if target in (S, "twostage", "twostage.export")
            ]
    return found


ALL = [imp for path in source_files() for imp in imports_of(path)]


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(name: str) -> tuple[str, int] | None:
    for prefix, layer in LAYERS.items():
        if under(name, prefix):
            return prefix, layer
    return None


def test_the_walk_sees_the_packages() -> None:
    modules = {imp.module for imp in ALL}
    for expected in (
        f"{S}.bundle",
        f"{S}.runtime.model",
        "twostage.export.pipeline",
        "twostage.cli",
    ):
        assert expected in modules
    # relative imports resolve to absolute names
    assert module_name(REPO / "server" / "runtime" / "__init__.py") == f"{S}.runtime"


def test_every_server_module_has_a_layer() -> None:
    unplaced = sorted(
        {
            imp.module
            for imp in ALL
            if under(imp.module, S) and imp.module != S and layer_of(imp.module) is None
        }
    )
    assert not unplaced, f"give these server modules a layer in {__file__}: {unplaced}"


def test_server_layers_import_only_lower_layers() -> None:
    bad = []
    for imp in ALL:
        src = layer_of(imp.module)
        dst = layer_of(imp.target)
        if src is None or dst is None or src[0] == dst[0]:
            continue
        # L0 modules may use each other, and so may the composition root's; L1 packages are
        # independent of each other
        if dst[1] > src[1] or (dst[1] == src[1] and src[1] not in (0, 4)):
            bad.append(f"{imp} (layer {src[1]} -> layer {dst[1]})")
    assert not bad, "\n".join(bad)


def batching_to_runtime(imports: list[Import]) -> list[str]:
    return [
        str(i)
        for i in imports
        if under(i.module, f"{S}.batching") and under(i.target, f"{S}.runtime")
    ]


def test_batching_never_imports_the_runtime() -> None:
    bad = batching_to_runtime(ALL)
    assert not bad, "\n".join(bad)


def test_only_the_api_layer_imports_grpc_below_the_composition_root() -> None:
    bad = []
    for imp in ALL:
        placed = layer_of(imp.module)
        if placed is None or placed[1] in (3, 4):
            continue
        if any(under(imp.target, g) for g in GRPC):
            bad.append(str(imp))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "forbidden", ["twostage.clients", "twostage.export", "twostage.train", "twostage.cli"]
)
def test_server_never_imports_offline_or_client_code(forbidden: str) -> None:
    bad = [str(i) for i in ALL if under(i.module, S) and under(i.target, forbidden)]
    assert not bad, "\n".join(bad)


def test_clients_import_only_the_protos_from_twostage() -> None:
    bad = []
    for imp in ALL:
        if not under(imp.module, "twostage.clients") or not under(imp.target, "twostage"):
            continue
        allowed = ("twostage.clients", "twostage.protos")
        if imp.target != "twostage" and not any(under(imp.target, a) for a in allowed):
            bad.append(str(imp))
    assert not bad, "\n".join(bad)


def test_export_uses_only_bundle_runtime_and_errors_of_the_server() -> None:
    allowed = (f"{S}.bundle", f"{S}.runtime", f"{S}.errors")
    bad = [
        str(i)
        for i in ALL
        if under(i.module, "twostage.export")
        and under(i.target, S)
        and not any(under(i.target, a) for a in allowed)
    ]
    assert not bad, "\n".join(bad)


def test_protos_import_nothing_else_from_twostage() -> None:
    bad = [
        str(i)
        for i in ALL
        if under(i.module, "twostage.protos")
        and under(i.target, "twostage")
        and not under(i.target, "twostage.protos")
    ]
    assert not bad, "\n".join(bad)


def test_a_wrong_arrow_is_caught() -> None:
    """The checker itself: a lazy relative import of the runtime from batching is reported."""
    probe = imports_in(
        "def f():\n    from ..runtime import session\n",
        f"{S}.batching.probe",
        is_package=False,
        file="server/batching/probe.py",
    )
    assert [i.target for i in probe] == [f"{S}.runtime"]
    assert batching_to_runtime(probe) == [
        f"server/batching/probe.py:2: {S}.batching.probe imports {S}.runtime"
    ]
