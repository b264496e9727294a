"""Sentence-pair files: read, validate and summarise them before any model loads.

A pair file is JSONL (one object a line) or CSV with a header, with the fields ``sentence1``,
``sentence2`` and ``label``. The label type decides the task: integers 0/1 (binary, bi-encoder
only), floats in [0, 1] (similarity), or integer class indices with names (classifier). A bad
file raises :class:`DataError` whose message names the file, the line and the field in one line.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

TEXT_FIELDS = ("sentence1", "sentence2")
LABEL_FIELD = "label"


class DataError(ValueError):
    """An input file is unusable; the message names file, line and field and is shown as is."""


class LabelKind(StrEnum):
    """What the labels of a pair file mean; it decides the loss and the model head."""

    BINARY = "binary"  # ints 0/1: similar / dissimilar (bi-encoder contrastive)
    SIMILARITY = "similarity"  # floats in [0, 1]
    CLASSES = "classes"  # int class indices with names


@dataclass(frozen=True)
class PairSet:
    """Validated pairs of one file, with the label kind and (for classes) the label names."""

    path: Path
    sentence1: list[str]
    sentence2: list[str]
    labels: list[float] | list[int]
    kind: LabelKind
    label_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.sentence1)

    def subset(self, indices: list[int]) -> PairSet:
        """The pairs at ``indices`` (in that order), same kind and names."""
        return PairSet(
            path=self.path,
            sentence1=[self.sentence1[i] for i in indices],
            sentence2=[self.sentence2[i] for i in indices],
            labels=[self.labels[i] for i in indices],  # type: ignore[misc]
            kind=self.kind,
            label_names=self.label_names,
        )

    def split(self, heldout_fraction: float, seed: int) -> tuple[PairSet, PairSet]:
        """A seeded (train, held-back) split; the held-back part has at least one pair."""
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        n_held = max(1, round(len(order) * heldout_fraction))
        if n_held >= len(order):
            raise DataError(
                f"{self.path}: {len(order)} pairs are too few to hold back {n_held} for evaluation"
            )
        return self.subset(sorted(order[n_held:])), self.subset(sorted(order[:n_held]))

    def label_distribution(self) -> dict[str, Any]:
        """Counts per class, or summary statistics of float labels, for the report."""
        if self.kind is LabelKind.SIMILARITY:
            values = sorted(float(v) for v in self.labels)
            n = len(values)
            return {
                "kind": self.kind.value,
                "min": values[0],
                "p25": values[n // 4],
                "median": values[n // 2],
                "p75": values[(3 * n) // 4],
                "max": values[-1],
                "mean": round(sum(values) / n, 4),
            }
        counts = Counter(int(v) for v in self.labels)
        names = self.label_names or tuple(str(i) for i in range(max(counts) + 1))
        return {
            "kind": self.kind.value,
            "counts": {names[i]: counts.get(i, 0) for i in range(len(names))},
        }


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (the report's data hash)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_label_names(path: Path, labels_arg: str | None) -> tuple[str, ...]:
    """Class names from ``--labels``, else labels.txt or label_names.json beside the file."""
    if labels_arg:
        names = tuple(name.strip() for name in labels_arg.split(","))
        if any(not name for name in names):
            raise DataError(f"--labels: empty class name in {labels_arg!r}")
        if len(set(names)) != len(names):
            raise DataError(f"--labels: duplicate class name in {labels_arg!r}")
        return names
    txt = path.parent / "labels.txt"
    if txt.is_file():
        lines = txt.read_text(encoding="utf-8").splitlines()
        names = tuple(line.strip() for line in lines if line.strip())
        if not names:
            raise DataError(f"{txt}: no class names")
        return names
    js = path.parent / "label_names.json"
    if js.is_file():
        try:
            data = json.loads(js.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{js}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, list) or not all(isinstance(x, str) and x for x in data):
            raise DataError(f"{js}: expected a JSON list of class names")
        return tuple(data)
    return ()


def _records(path: Path) -> list[tuple[int, Any]]:
    """(line number, record) for every data line: JSON objects, or CSV rows as dicts."""
    suffix = path.suffix.lower()
    out: list[tuple[int, Any]] = []
    if suffix in (".jsonl", ".json", ".ndjson"):
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})"
                    ) from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object, got {obj!r:.40}")
                out.append((number, obj))
        return out
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            header = reader.fieldnames or []
            for field in (*TEXT_FIELDS, LABEL_FIELD):
                if field not in header:
                    raise DataError(f"{path}:1: field {field!r}: missing from the header")
            for row in reader:
                out.append((reader.line_num, row))
        return out
    raise DataError(f"{path}: unknown file type {suffix!r}; use .jsonl or .csv (with a header)")


def _parse_label(raw: Any, where: str) -> int | float:
    """A JSON number or a CSV cell as int or float; booleans and text are errors."""
    if isinstance(raw, bool) or raw is None:
        raise DataError(f"{where}: field 'label': expected a number, got {raw!r}")
    if isinstance(raw, int | float):
        value: int | float = raw
    elif isinstance(raw, str):
        text = raw.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise DataError(f"{where}: field 'label': expected a number, got {raw!r}") from None
    else:
        raise DataError(f"{where}: field 'label': expected a number, got {raw!r:.40}")
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{where}: field 'label': {value} is out of range (not finite)")
    return value


def load_pairs(
    path: str | Path,
    *,
    task: str,
    label_names: tuple[str, ...] = (),
) -> PairSet:
    """Read and validate a pair file for ``task`` (``bi-encoder`` or ``cross-encoder``).

    Raises :class:`DataError` on the first bad line: missing field, empty text, a label that is
    not a number, out of range, ints mixed with floats, or a class index without a name.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    records = _records(path)
    if not records:
        raise DataError(f"{path}: no pairs")
    s1: list[str] = []
    s2: list[str] = []
    labels: list[Any] = []
    first_type: type | None = None
    first_line = 0
    for number, record in records:
        where = f"{path}:{number}"
        for field in TEXT_FIELDS:
            if field not in record or record[field] is None:
                raise DataError(f"{where}: field {field!r}: missing")
            if not isinstance(record[field], str):
                raise DataError(
                    f"{where}: field {field!r}: expected text, got {record[field]!r:.40}"
                )
            if not record[field].strip():
                raise DataError(f"{where}: field {field!r}: empty text")
        if LABEL_FIELD not in record or record[LABEL_FIELD] in (None, ""):
            raise DataError(f"{where}: field 'label': missing")
        value = _parse_label(record[LABEL_FIELD], where)
        if first_type is None:
            first_type, first_line = type(value), number
        elif type(value) is not first_type:
            raise DataError(
                f"{where}: field 'label': {value!r} is {_kind_word(type(value))}"
                f" but line {first_line} has {_kind_word(first_type)}; "
                "ints and floats cannot be mixed (write similarity scores as floats, e.g. 1.0)"
            )
        if isinstance(value, float):
            if not 0.0 <= value <= 1.0:
                raise DataError(f"{where}: field 'label': {value} is out of range [0, 1]")
        else:
            _check_int_label(value, where, task, label_names)
        s1.append(record["sentence1"])
        s2.append(record["sentence2"])
        labels.append(value)

    if first_type is float:
        kind = LabelKind.SIMILARITY
        labels = [float(v) for v in labels]
    elif task == "bi-encoder" and not label_names:
        kind = LabelKind.BINARY
    else:
        kind = LabelKind.CLASSES
        if len(label_names) < 2:
            raise DataError(
                f"{path}: a classifier needs at least two class names, got {label_names}"
            )
    return PairSet(path, s1, s2, labels, kind, label_names if kind is LabelKind.CLASSES else ())


def _kind_word(kind: type | None) -> str:
    return "an int" if kind is int else "a float"


def _check_int_label(value: int, where: str, task: str, label_names: tuple[str, ...]) -> None:
    if task == "bi-encoder" and not label_names:
        if value not in (0, 1):
            raise DataError(
                f"{where}: field 'label': {value} is out of range; bi-encoder pairs take 1 "
                "(similar) / 0 (dissimilar) or a float in [0, 1]"
            )
        return
    if value < 0:
        raise DataError(f"{where}: field 'label': {value} is out of range (negative class index)")
    if not label_names:
        raise DataError(
            f"{where}: field 'label': class index {value} has no name; give --labels "
            "name0,name1,... or a labels.txt beside the file (or write float scores for a "
            "single-output scorer)"
        )
    if value >= len(label_names):
        raise DataError(
            f"{where}: field 'label': class index {value} has no name "
            f"(labels: {','.join(label_names)})"
        )


def describe(pairs: PairSet) -> str:
    """One line for the console: count, kind and label distribution."""
    dist = pairs.label_distribution()
    if pairs.kind is LabelKind.SIMILARITY:
        detail = (
            f"min {dist['min']:.2f} p25 {dist['p25']:.2f} median {dist['median']:.2f} "
            f"p75 {dist['p75']:.2f} max {dist['max']:.2f} mean {dist['mean']:.3f}"
        )
    else:
        detail = " ".join(f"{name}={count}" for name, count in dist["counts"].items())
    return f"{pairs.path.name}: {len(pairs)} pairs, labels {pairs.kind.value}: {detail}"
