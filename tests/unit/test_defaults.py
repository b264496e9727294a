"""``twostage serve`` with no flags serves what ``make models`` made (models/defaults.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twostage import defaults
from twostage.defaults import DEFAULTS_FILE, ensure_default_bundles, read_defaults
from twostage.server.bundle import MANIFEST_FILE
from twostage.server.errors import ConfigError


def bundle(models: Path, folder: str) -> Path:
    path = models / folder
    path.mkdir(parents=True)
    (path / MANIFEST_FILE).write_text("{}")
    return path


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "hub_reachable", lambda timeout=5.0: False)

    def no_subprocess(*args: str) -> None:
        raise AssertionError(f"nothing should be made here: twostage {' '.join(args)}")

    monkeypatch.setattr(defaults, "_twostage", no_subprocess)


def test_a_recorded_reranker_is_served_without_its_training_data(tmp_path, offline) -> None:
    embedder = bundle(tmp_path, defaults.EMBEDDER_DIR)
    reranker = bundle(tmp_path, "minilm-reranker-scifact")
    defaults.write_defaults(tmp_path, [("embedder", embedder), ("reranker", reranker)])
    assert read_defaults(tmp_path) == {
        "embedder": defaults.EMBEDDER_DIR,
        "reranker": "minilm-reranker-scifact",
    }
    served = ensure_default_bundles(tmp_path)
    assert served == [("embedder", embedder), ("reranker", reranker)]
    # --no-reranker serves embed only and keeps the record for the next start
    assert ensure_default_bundles(tmp_path, with_reranker=False) == [("embedder", embedder)]
    assert "reranker" in read_defaults(tmp_path)


def test_without_a_record_and_offline_only_the_embedder_is_served(tmp_path, offline) -> None:
    embedder = bundle(tmp_path, defaults.EMBEDDER_DIR)
    assert ensure_default_bundles(tmp_path) == [("embedder", embedder)]
    assert read_defaults(tmp_path) == {"embedder": defaults.EMBEDDER_DIR}


def test_a_pretrained_reranker_on_disk_is_recorded(tmp_path, offline) -> None:
    bundle(tmp_path, defaults.EMBEDDER_DIR)
    hub = bundle(tmp_path, defaults.HUB_RERANKER_DIR)
    assert ensure_default_bundles(tmp_path)[1] == ("reranker", hub)
    assert read_defaults(tmp_path)["reranker"] == defaults.HUB_RERANKER_DIR


def test_a_missing_or_broken_default_is_an_error_naming_it(tmp_path, offline) -> None:
    embedder = bundle(tmp_path, defaults.EMBEDDER_DIR)
    reranker = bundle(tmp_path, "minilm-reranker-scifact")
    defaults.write_defaults(tmp_path, [("embedder", embedder), ("reranker", reranker)])
    (reranker / MANIFEST_FILE).unlink()
    with pytest.raises(ConfigError, match=r"minilm-reranker-scifact.*make models"):
        ensure_default_bundles(tmp_path)
    (tmp_path / DEFAULTS_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match=DEFAULTS_FILE):
        ensure_default_bundles(tmp_path)
    (tmp_path / DEFAULTS_FILE).write_text(json.dumps({"bundles": ["x"]}))
    with pytest.raises(ConfigError, match="no bundles table"):
        ensure_default_bundles(tmp_path)
