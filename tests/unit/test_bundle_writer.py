"""The staged, atomic bundle write: an existing bundle is replaced only by a complete new one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from twostage.export.bundle_writer import StagedBundle, library_versions


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_commit_replaces_the_old_bundle_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "models" / "m"
    target.mkdir(parents=True)
    (target / "old.txt").write_text("old")
    with StagedBundle(target) as staged:
        assert staged.path.parent == target.parent  # same file system: rename is atomic
        (staged.path / "new.txt").write_text("new")
        assert (target / "old.txt").is_file()  # untouched until commit
        assert staged.commit() == target.resolve()
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert _hidden(target.parent) == []
    # readable by other users (the server may run as another user), as umask allows
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~mask


def test_a_failed_export_keeps_the_existing_bundle(tmp_path: Path) -> None:
    target = tmp_path / "m"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), StagedBundle(target) as staged:
        (staged.path / "half.onnx").write_text("partial")
        raise RuntimeError("a step failed")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert _hidden(tmp_path) == []


def test_first_write_creates_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    with StagedBundle(target) as staged:
        (staged.path / "x").write_text("x")
        staged.commit()
    assert (target / "x").read_text() == "x"


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    from twostage.export.errors import ExportError

    (tmp_path / "f").write_text("")
    with pytest.raises(ExportError, match="exists and is not a folder"):
        StagedBundle(tmp_path / "f")


def test_library_versions_name_the_toolchain() -> None:
    versions = library_versions()
    assert {"onnxruntime", "onnx", "optimum", "transformers", "torch"} <= set(versions)
