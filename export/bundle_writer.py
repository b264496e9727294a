"""Step 5: stage the bundle beside its target and swap it in only when it is complete.

The bundle is assembled in a hidden sibling folder (same file system, so the final rename is
atomic). An existing bundle at the target is moved aside, the new one renamed into place, and
the old one deleted; a failed export leaves the existing bundle untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import TracebackType

from twostage.export.errors import ExportError
from twostage.server.bundle import VARIANT_FILES, Manifest, Variant, sha256_file, write_manifest

VERSIONED = (
    "twostage",
    "onnxruntime",
    "onnx",
    "optimum",
    "optimum-onnx",
    "transformers",
    "torch",
    "sentence-transformers",
    "tokenizers",
)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that made the bundle (absent ones left out)."""
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class StagedBundle:
    """A bundle being built in ``<parent>/.<name>.staging-XXXX``; ``commit()`` moves it to target.

    Use as a context manager: leaving the block without ``commit()`` removes the staging folder.
    """

    def __init__(self, target: Path) -> None:
        self.target = Path(target).expanduser().resolve()
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(
                f"cannot create {self.target.parent}: {exc.strerror}", step="write"
            ) from None
        if self.target.exists() and not self.target.is_dir():
            raise ExportError(f"--out {self.target} exists and is not a folder", step="write")
        self.path = Path(
            tempfile.mkdtemp(prefix=f".{self.target.name}.staging-", dir=self.target.parent)
        )
        # mkdtemp makes the folder private (0700); a bundle is read by the server's user too
        os.chmod(self.path, 0o777 & ~_umask())
        self.committed = False

    def __enter__(self) -> StagedBundle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)

    def add_file(self, source: Path, name: str) -> Path:
        """Move (or copy across file systems) a finished file into the bundle."""
        dest = self.path / name
        shutil.move(str(source), dest)
        return dest

    def variant(self, precision: str, **fields: object) -> Variant:
        """A manifest entry for a variant file already in the staging folder, hashed."""
        file = VARIANT_FILES[precision]
        path = self.path / file
        return Variant(
            precision=precision,
            file=file,
            sha256=sha256_file(path),
            size_bytes=path.stat().st_size,
            **fields,
        )  # type: ignore[arg-type]

    def write_manifest(self, manifest: Manifest) -> None:
        write_manifest(self.path, manifest)

    def commit(self) -> Path:
        """Swap the staged bundle into the target path; return the target."""
        old: Path | None = None
        if self.target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old-", dir=self.target.parent))
            os.rmdir(old)
            os.replace(self.target, old)
        try:
            os.replace(self.path, self.target)
        except OSError as exc:
            if old is not None:
                os.replace(old, self.target)  # put the previous bundle back
            raise ExportError(
                f"cannot move the bundle into {self.target}: {exc.strerror}", step="write"
            ) from None
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target
