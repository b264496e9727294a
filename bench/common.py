"""Shared pieces of the benchmarks: data paths, machine facts, timing statistics, result files.

Timings on a shared machine are noisy: compare numbers only within one run (the benchmarks
interleave the engines they compare for that reason) and read ``machine.load_*`` beside them.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
RESULTS = REPO / "bench" / "results"


def scifact_passages(n: int | None, data: Path = DATA) -> list[str]:
    """The first ``n`` SciFact abstracts as ``title + " " + text`` (file order)."""
    corpus = data / "scifact" / "corpus.jsonl"
    if not corpus.is_file():
        raise SystemExit(f"benchmark data not found: {corpus} (clone shared data beside the repo)")
    out: list[str] = []
    with corpus.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            out.append(f"{row.get('title', '')} {row['text']}".strip())
            if n is not None and len(out) >= n:
                break
    return out


def scifact_queries(n: int | None, data: Path = DATA) -> list[str]:
    """The first ``n`` SciFact claims (short queries)."""
    out: list[str] = []
    with (data / "scifact" / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            out.append(json.loads(line)["text"])
            if n is not None and len(out) >= n:
                break
    return out


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine() -> dict[str, Any]:
    """What the numbers were measured on (CPU, its int8-relevant features, load, versions)."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = cpu_flags()
    features = [
        f
        for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
        if f in flags
    ]
    versions = {}
    for name in ("onnxruntime", "torch", "sentence-transformers", "tokenizers", "twostage"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 0
    return {
        "cpu": model,
        "cpus": cpus,
        "features": features,
        "machine": platform.machine(),
        "load_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "versions": versions,
    }


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    arr = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p95_ms": round(float(np.percentile(arr, 95)), 2),
    }


def now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """``bench/results/<name>.json`` and ``.md``; returns both paths."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    if hasattr(os, "getloadavg"):
        data.setdefault("machine", {})["load_at_end"] = os.getloadavg()[0]
    json_path = RESULTS / f"{name}.json"
    md_path = RESULTS / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown + "\n", encoding="utf-8")
    return json_path, md_path
