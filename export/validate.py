"""Step 4: validate every variant through the serving code against the PyTorch reference.

The variant runs exactly as the server runs it (``twostage.server.runtime.load_runtime``: the
same tokenizer wrapper, the same session wrapper, length-sorted batches). The reference is the
original checkpoint in PyTorch: ``SentenceTransformer.encode`` for embedders, the transformers
sequence-classification logits for cross-encoders. Figures:

* embedders: cosine of each text's vector to the reference (mean and min);
* rerankers: max absolute logit error and the mean per-query Spearman agreement of the ranking;
* classifiers: argmax agreement and max absolute logit error.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twostage.export import fallback_texts
from twostage.export.config import default_scifact_dir
from twostage.export.errors import ExportError

log = logging.getLogger(__name__)

PAIRS_PER_QUERY = 10


# -- the validation set -------------------------------------------------------------------------
@dataclass(frozen=True)
class ValidationSet:
    """Real text to compare on: passages for embedders, query/passage pairs for cross-encoders.

    ``groups[i]`` is the query index of ``pairs[i]`` (per-query rank agreement).
    """

    source: str
    texts: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...] = ()
    groups: tuple[int, ...] = ()

    def inputs(self, kind: str) -> Sequence[Any]:
        return self.texts if kind == "embedder" else self.pairs

    def __len__(self) -> int:
        return len(self.texts)


def read_texts(path: Path) -> list[str]:
    """Passages from a BEIR ``corpus.jsonl`` (title + text), any JSONL with ``text``, or lines."""
    texts: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if path.suffix == ".jsonl":
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    text = row["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ExportError(
                        f"{path.name} line {number}: expected a JSON object with 'text'",
                        step="validation",
                    ) from None
                title = row.get("title") or ""
                texts.append(f"{title} {text}".strip() if title else str(text))
            elif line.strip():
                texts.append(line)
    if not texts:
        raise ExportError(f"{path.name} holds no text", step="validation")
    return texts


def _pairs_for(
    queries: Sequence[str], texts: Sequence[str], first_query: int, n_queries: int
) -> tuple[list[tuple[str, str]], list[int]]:
    """Each query against PAIRS_PER_QUERY passages, picked in a fixed rotation through the texts."""
    pairs: list[tuple[str, str]] = []
    groups: list[int] = []
    for g in range(n_queries):
        q = (first_query + g) % len(queries)
        for j in range(PAIRS_PER_QUERY):
            pairs.append((queries[q], texts[(q * 7 + j * 13) % len(texts)]))
            groups.append(g)
    return pairs, groups


def validation_sets(
    *,
    count: int,
    search_count: int,
    texts_file: Path | None = None,
    queries_file: Path | None = None,
) -> tuple[ValidationSet, ValidationSet]:
    """(validation set, search set): disjoint slices of the same text where there is enough.

    Default source: SciFact abstracts (title + text) and claims from the shared data beside the
    repository; without it, the built-in passages (``fallback_texts``).
    """
    scifact = default_scifact_dir()
    if texts_file is not None:
        texts = read_texts(texts_file)
        source = texts_file.name
    elif (scifact / "corpus.jsonl").is_file():
        texts = read_texts(scifact / "corpus.jsonl")
        source = "scifact corpus"
    else:
        texts = list(fallback_texts.PASSAGES)
        source = "built-in passages"
    if queries_file is not None:
        queries = read_texts(queries_file)
    elif texts_file is None and (scifact / "queries.jsonl").is_file():
        queries = read_texts(scifact / "queries.jsonl")
    elif texts_file is None:
        queries = list(fallback_texts.QUERIES)
    else:
        # no queries given: the first sentence of each passage stands in for a query
        queries = [t.split(". ")[0][:200] for t in texts]
    if len(texts) >= count + search_count:
        val_texts, search_texts = texts[:count], texts[count : count + search_count]
    else:
        val_texts, search_texts = texts[:count], texts[:search_count]
    n_val = max(1, count // PAIRS_PER_QUERY)
    n_search = max(1, search_count // PAIRS_PER_QUERY)
    first_search = n_val if len(queries) >= n_val + n_search else 0
    val_pairs, val_groups = _pairs_for(queries, texts, 0, n_val)
    search_pairs, search_groups = _pairs_for(queries, texts, first_search, n_search)
    return (
        ValidationSet(
            f"{source} ({len(val_texts)} texts / {len(val_pairs)} pairs)",
            tuple(val_texts),
            tuple(val_pairs),
            tuple(val_groups),
        ),
        ValidationSet(
            f"{source} ({len(search_texts)} texts / {len(search_pairs)} pairs)",
            tuple(search_texts),
            tuple(search_pairs),
            tuple(search_groups),
        ),
    )


# -- the PyTorch reference ----------------------------------------------------------------------
def reference_outputs(
    checkpoint_path: Path,
    kind: str,
    max_length: int,
    sets: Sequence[ValidationSet],
    *,
    threads: int,
    batch_size: int = 32,
) -> list[np.ndarray]:
    """The original model's outputs in PyTorch fp32 for each set (embeddings or raw logits)."""
    import torch

    torch.set_num_threads(threads)
    outputs: list[np.ndarray] = []
    if kind == "embedder":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(checkpoint_path), device="cpu")
        model.max_seq_length = max_length
        for vset in sets:
            vectors = model.encode(
                list(vset.texts),
                batch_size=batch_size,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            outputs.append(np.asarray(vectors, dtype=np.float32))
        return outputs
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_path))
    model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint_path))
    model.eval()
    for vset in sets:
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(vset.pairs), batch_size):
                batch = vset.pairs[start : start + batch_size]
                enc = tokenizer(
                    [a for a, _ in batch],
                    [b for _, b in batch],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                chunks.append(model(**enc).logits.float().numpy())
        outputs.append(np.concatenate(chunks, axis=0))
    return outputs


# -- figures ------------------------------------------------------------------------------------
def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``a`` to the same row of ``b`` (two zero rows count as equal)."""
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    both_zero = (na == 0) & (nb == 0)
    return np.where(both_zero, 1.0, dots / np.maximum(na * nb, 1e-12))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); 1.0 when both are constant."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    if denom == 0.0:
        return 1.0 if np.allclose(a, a[0]) and np.allclose(b, b[0]) else 0.0
    return float((ra * rb).sum() / denom)


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    values = np.asarray(x)[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or values[end] != values[start]:
            ranks[order[start:end]] = (start + end - 1) / 2.0
            start = end
    return ranks


def figures(
    kind: str, ref: np.ndarray, got: np.ndarray, groups: Sequence[int] = ()
) -> dict[str, float]:
    """The validation figures of one variant's outputs against the reference outputs."""
    if ref.shape != got.shape:
        raise ExportError(
            f"output shape {got.shape} differs from the reference {ref.shape}", step="validation"
        )
    if not np.isfinite(got).all():
        return {"non_finite": float((~np.isfinite(got)).sum())}
    if kind == "embedder":
        cos = cosine_rows(ref.astype(np.float64), got.astype(np.float64))
        return {
            "cosine_mean": float(cos.mean()),
            "cosine_min": float(cos.min()),
            "max_abs_error": float(np.abs(ref - got).max()),
        }
    out = {"max_abs_error": float(np.abs(ref - got).max())}
    if kind == "classifier":
        out["class_agreement"] = float((ref.argmax(axis=1) == got.argmax(axis=1)).mean())
        return out
    scores_ref, scores_got = ref[:, 0], got[:, 0]
    group_ids = np.asarray(groups)
    rhos = [
        spearman(scores_ref[group_ids == g], scores_got[group_ids == g])
        for g in np.unique(group_ids)
    ]
    out["rank_agreement"] = float(np.mean(rhos))
    out["rank_agreement_min"] = float(np.min(rhos))
    return out


def failures(
    found: dict[str, float], thresholds: dict[str, float], margin: float = 0.0
) -> list[str]:
    """Gates not met: ``name value < threshold`` (``max_*`` gates are upper bounds).

    ``margin`` (0..1) tightens every gate by that fraction of its distance to a perfect score.
    """
    if "non_finite" in found:
        return [f"{int(found['non_finite'])} non-finite outputs"]
    bad = []
    for name, limit in thresholds.items():
        value = found.get(name)
        if value is None:
            bad.append(f"{name} not measured")
        elif name.startswith("max_"):
            bound = limit * (1.0 - margin)
            if value > bound:
                bad.append(f"{name} {value:.3g} > {bound:.3g}")
        else:
            bound = limit + margin * (1.0 - limit)
            if value < bound:
                bad.append(f"{name} {value:.4f} < {bound:.4f}")
    return bad


# -- running variants through the serving code --------------------------------------------------
@dataclass
class VariantReport:
    """One variant's validation outcome, printed in the table and written to the manifest."""

    precision: str
    figures: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    note: str = ""  # e.g. "not validated: no CUDA"
    seconds: float = 0.0
    size_bytes: int = 0

    @property
    def status(self) -> str:
        if self.note:
            return "skipped"
        return "FAIL" if self.failures else "ok"


def run_variant(
    bundle_dir: Path, precision: str, kind: str, vset: ValidationSet, *, device: str, threads: int
) -> tuple[np.ndarray, float]:
    """Outputs of one variant of a (staged) bundle on the validation set, via the runtime."""
    from twostage.server.runtime import load_runtime

    runtime = load_runtime(bundle_dir, device=device, precision=precision, intra_op_threads=threads)
    start = time.perf_counter()
    if kind == "embedder":
        out = runtime.embed(list(vset.texts))  # type: ignore[union-attr]
    else:
        out = runtime.logits(list(vset.pairs))  # type: ignore[union-attr]
    return out, time.perf_counter() - start


def validate_variant(
    bundle_dir: Path,
    precision: str,
    kind: str,
    vset: ValidationSet,
    ref: np.ndarray,
    thresholds: dict[str, float],
    *,
    threads: int,
) -> VariantReport:
    """Validate one variant; fp16 runs on CUDA only, so without CUDA it is reported skipped."""
    from twostage.server.runtime.session import cuda_available

    report = VariantReport(precision=precision, thresholds=dict(thresholds))
    device = "cpu"
    if precision == "fp16":
        if not cuda_available():
            report.note = "not validated: no CUDA"
            return report
        device = "cuda"
    got, report.seconds = run_variant(
        bundle_dir, precision, kind, vset, device=device, threads=threads
    )
    report.figures = figures(kind, ref, got, vset.groups)
    report.failures = failures(report.figures, thresholds)
    return report


def session_scorer(
    kind: str,
    ref: np.ndarray,
    groups: Sequence[int],
    thresholds: dict[str, float],
    margin: float,
    run: Callable[[Path], np.ndarray],
) -> Callable[[Path], tuple[dict[str, float], bool]]:
    """A scorer for the int8 mix search: figures of a candidate file and pass-with-margin."""

    def score(path: Path) -> tuple[dict[str, float], bool]:
        found = figures(kind, ref, run(path), groups)
        return found, not failures(found, thresholds, margin)

    return score


# -- printing -----------------------------------------------------------------------------------
_SHOWN = (
    "cosine_mean",
    "cosine_min",
    "rank_agreement",
    "rank_agreement_min",
    "class_agreement",
    "max_abs_error",
)


def format_table(reports: Sequence[VariantReport], source: str) -> str:
    """A plain-text table of the validation figures, one row per variant."""
    cols = [c for c in _SHOWN if any(c in r.figures for r in reports)]
    header = ["variant", "size MB", *cols, "time s", "status"]
    rows = []
    for r in reports:
        cells = [r.precision, f"{r.size_bytes / 1e6:.1f}"]
        for c in cols:
            value = r.figures.get(c)
            gate = r.thresholds.get(c)
            text = (
                "-"
                if value is None
                else (f"{value:.2e}" if c.startswith("max_") else f"{value:.4f}")
            )
            if gate is not None and value is not None:
                text += f" ({'<=' if c.startswith('max_') else '>='}{gate:g})"
            cells.append(text)
        cells += [f"{r.seconds:.1f}" if r.seconds else "-", r.status if not r.note else r.note]
        rows.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = [f"validation on {source}, against the PyTorch reference"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    for cells in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)
