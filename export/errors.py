"""Errors of the offline export: one step failed, or a variant validated below its threshold.

The ``twostage export`` command prints these as one line and exits non-zero; ``-v`` adds the trace.
"""

from __future__ import annotations

from twostage.server.errors import TwostageError


class ExportError(TwostageError):
    """A step of the export failed; the message names the step and what went wrong."""

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(f"{step}: {message}" if step else message)
        self.step = step


class ValidationFailed(ExportError):
    """A variant scored below its threshold against the PyTorch reference; nothing was written."""
