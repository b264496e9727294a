"""Regenerate the committed Python stubs from ``twostage/v1/*.proto``.

Run ``python -m twostage.protos.generate`` (needs grpcio-tools, the ``dev`` extra). protoc writes
absolute imports (``from twostage.v1 import ...``) that would collide with our top-level
``twostage`` package; they are rewritten to ``twostage.protos.twostage.v1``. A test regenerates into
a temp folder and diffs against the committed files.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
_IMPORT = re.compile(r"^from twostage\.v1 import ", re.MULTILINE)


def generate(out_dir: Path = PROTO_ROOT) -> list[Path]:
    """Write ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` for every proto under ``out_dir``."""
    from grpc_tools import protoc  # dev-only dependency

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.glob("twostage/v1/*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    written = sorted((out_dir / "twostage" / "v1").glob("*_pb2*.py*"))
    for path in written:
        text = path.read_text(encoding="utf-8")
        path.write_text(_IMPORT.sub("from twostage.protos.twostage.v1 import ", text), "utf-8")
    return written


if __name__ == "__main__":
    for file in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT):
        print(file)
