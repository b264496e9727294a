"""``training_report.json``: data hashes, hyper-parameters, durations and before/after figures."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT_NAME = "training_report.json"


def say(message: str) -> None:
    """A progress line for the person at the console (stderr, so stdout stays clean)."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class RunReport:
    """Everything a run measured; :meth:`write` puts it beside the checkpoint."""

    command: str
    base: str
    data: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    durations_s: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)  # process CPU time (all threads)
    environment: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the wall and CPU time of the ``with`` block to ``durations_s``/``cpu_s[stage]``.

        CPU time shows what a run costs on a machine shared with other work, where wall time
        does not: on an idle machine with N cores, wall is about CPU / N.
        """
        start, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self.durations_s[stage] = round(self.durations_s.get(stage, 0.0) + took, 2)
            used = time.process_time() - cpu
            self.cpu_s[stage] = round(self.cpu_s.get(stage, 0.0) + used, 2)

    def write(self, out_dir: Path) -> Path:
        """Write the report as JSON into ``out_dir`` and return its path."""
        import sentence_transformers
        import torch
        import transformers

        for table in (self.durations_s, self.cpu_s):
            table["total"] = round(sum(v for k, v in table.items() if k != "total"), 2)
        self.environment.setdefault(
            "versions",
            {
                "sentence_transformers": sentence_transformers.__version__,
                "transformers": transformers.__version__,
                "torch": torch.__version__,
            },
        )
        path = out_dir / REPORT_NAME
        doc = {
            "command": self.command,
            "base": self.base,
            "data": self.data,
            "recipe": self.recipe,
            "model": self.model,
            "evaluation": self.evaluation,
            "durations_s": self.durations_s,
            "cpu_s": self.cpu_s,
            "environment": self.environment,
        }
        path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return path
