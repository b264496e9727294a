"""The long property-based fuzz of every RPC (tests/integration/test_fuzz_live.py), counted.

Runs the fuzz test with ``--examples`` examples per RPC and kind (messages, raw bytes) in report
mode: every outcome is recorded rather than stopping at the first violation. Writes the counts
(status codes by RPC, violations with examples, health after) to ``--out`` and prints a table.
Exit status: pytest's (non-zero when any violation was seen or the server did not survive).

    python bench/reliability_fuzz.py --examples 300
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import REPO, RESULTS, markdown_table

TEST = "tests/integration/test_fuzz_live.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300, help="examples per RPC and kind")
    parser.add_argument("--out", type=Path, default=RESULTS / "reliability-fuzz-cpu.json")
    args = parser.parse_args()
    out = args.out.resolve()
    out.unlink(missing_ok=True)
    env = dict(
        os.environ,
        TWOSTAGE_FUZZ_EXAMPLES=str(args.examples),
        TWOSTAGE_FUZZ_REPORT=str(out),
    )
    rc = subprocess.call([sys.executable, "-m", "pytest", TEST, "-q"], cwd=REPO, env=env)
    if not out.is_file():
        print(f"no report written to {out} (pytest exit {rc})")
        return rc or 1
    report = json.loads(out.read_text(encoding="utf-8"))
    rows = []
    for rpc, kinds in report["by_rpc"].items():
        for kind, codes in kinds.items():
            counts = ", ".join(f"{code} {n}" for code, n in sorted(codes.items()))
            rows.append([rpc, kind, str(sum(codes.values())), counts])
    print(markdown_table(["rpc", "kind", "calls", "status codes"], rows))
    print(
        f"calls {report['calls']}, violations {report['violations']} "
        f"{report['violations_by_problem']}, SERVING after: {report['serving_after']}"
    )
    print(f"wrote {out}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
