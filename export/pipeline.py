"""The export pipeline: checkpoint -> ONNX -> fused fp32 -> int8 / fp16 -> validated bundle.

:func:`export_model` is the programmatic entry (the server calls it to make missing default
bundles); ``twostage export`` calls :func:`run_export`. Every step shows a progress line; a step
that fails raises :class:`ExportError` naming the step, and a variant below its threshold raises
:class:`ValidationFailed` with its figures. Either way nothing is written at the target.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from twostage.export.bundle_writer import StagedBundle, library_versions, utc_now
from twostage.export.config import ExportConfig, Int8Mix, Thresholds, usable_cpus
from twostage.export.errors import ExportError, ValidationFailed
from twostage.export.onnx_export import (
    Checkpoint,
    copy_tokenizer,
    export_onnx,
    resolve_checkpoint,
)
from twostage.export.optimize import bake_cpu_graph, convert_fp16, optimize_fp32
from twostage.export.quantize import (
    Int8Recipe,
    MixSearch,
    MixTrial,
    node_sensitivity,
    preset_recipe,
    quantize,
    weight_nodes,
)
from twostage.export.validate import (
    ValidationSet,
    VariantReport,
    failures,
    figures,
    format_table,
    reference_outputs,
    validate_variant,
    validation_sets,
)
from twostage.server.bundle import VARIANT_FILES, Fusion, Manifest, Source, Variant
from twostage.server.errors import TwostageError

log = logging.getLogger(__name__)

SENSITIVITY_TEXTS = 32  # texts (or pairs) whose activations rank the weight nodes


@dataclass
class ExportResult:
    """What an export produced: the bundle, its validation and the int8 mix trade-off."""

    path: Path
    manifest: Manifest
    reports: list[VariantReport]
    trials: list[MixTrial] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    table: str = ""
    mix_table: str = ""


class Steps:
    """One tqdm line for the whole export; each finished step is logged with its time."""

    def __init__(self, names: Sequence[str], enabled: bool) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        # a bar redrawn with carriage returns is noise in a log file: lines only off a terminal
        self.interactive = enabled and sys.stderr.isatty()
        self.bar = tqdm(
            total=len(names),
            desc="export",
            unit="step",
            disable=not self.interactive,
            bar_format="{desc}: {n_fmt}/{total_fmt} steps [{elapsed}]{postfix}",
            file=sys.stderr,
        )
        self.enabled = enabled
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.bar.set_description(f"export {name}")
        start = time.monotonic()
        try:
            yield
        except TwostageError:
            raise
        except Exception as exc:  # a library failed in a way we did not foresee
            raise ExportError(f"{type(exc).__name__}: {exc}", step=name) from exc
        finally:
            self.seconds[name] = round(time.monotonic() - start, 2)
        self.bar.update(1)
        self.note(f"{name} done in {self.seconds[name]:.1f}s")

    def note(self, text: str) -> None:
        if self.interactive:
            self._tqdm.write(f"  {text}", file=sys.stderr)
        elif self.enabled:
            print(f"export: {text}", file=sys.stderr, flush=True)
        log.info(text)

    def close(self) -> None:
        self.bar.close()


class _Batches:
    """A set tokenized once by the bundle's tokenizer and padded per length-sorted batch.

    Used by the int8 search to run candidate files exactly as the runtime would feed them.
    """

    def __init__(
        self,
        tokenizer_dir: Path,
        max_length: int,
        kind: str,
        items: Sequence[Any],
        input_names: Sequence[str],
        batch_size: int = 32,
    ) -> None:
        from twostage.server.runtime.tokenizer import TextTokenizer, pad_batch

        tok = TextTokenizer.from_file(tokenizer_dir, max_length)
        encoded = tok.encode(list(items)) if kind == "embedder" else tok.encode_pairs(list(items))
        self.order = np.argsort([len(e) for e in encoded], kind="stable")
        self.feeds = [
            pad_batch([encoded[i] for i in self.order[s : s + batch_size]], tok.pad_id, input_names)
            for s in range(0, len(encoded), batch_size)
        ]

    def middle(self, n: int) -> list[dict[str, np.ndarray]]:
        """About ``n`` items from the middle of the length order (typical, not the shortest)."""
        k = max(1, min(len(self.feeds), round(n / max(1, len(self.feeds[0]["input_ids"])))))
        start = (len(self.feeds) - k) // 2
        return self.feeds[start : start + k]

    def run(self, session: Any) -> np.ndarray:
        """Outputs of an ``OnnxSession`` on every batch, in input order."""
        stacked = np.concatenate([session.run(feed) for feed in self.feeds], axis=0)
        out = np.empty_like(stacked)
        out[self.order] = stacked
        return out

    def speed_ratio(self, base: Any, other: Any, n: int = 32, repeats: int = 2) -> float:
        """``base`` time / ``other`` time on the same typical batch, timed alternately so that
        load from other processes falls on both alike; best of ``repeats`` each."""
        feeds = self.middle(n)
        best = {id(base): float("inf"), id(other): float("inf")}
        for _ in range(repeats):
            for session in (base, other):
                start = time.perf_counter()
                for feed in feeds:
                    session.run(feed)
                best[id(session)] = min(best[id(session)], time.perf_counter() - start)
        return best[id(base)] / best[id(other)]


def read_fusion(folder: Path) -> Fusion | None:
    """``fusion.json`` written by ``twostage train reranker`` in ``folder``, if there is one.

    The manifest keeps the weight, the candidate depth it was fitted at and the held-back
    figures; the per-weight curve stays in the training report."""
    file = folder / "fusion.json"
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        heldout = data.get("heldout") or {}
        return Fusion(
            method=str(data.get("method", "zscore")),
            dense_weight=float(data["dense_weight"]),
            fitted_on=str(data.get("fitted_on", "")),
            candidates=int(data.get("candidates", 0)),
            first_stage=str(data.get("first_stage", "dense")),
            heldout={
                str(k): float(v)
                for k, v in heldout.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            },
        )
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ExportError(
            f"fusion.json is not valid ({type(exc).__name__}: {exc})", step="checkpoint"
        ) from None


def _read_prompts(checkpoint: Checkpoint) -> tuple[str, str]:
    """Query/document prefixes from sentence-transformers' ``prompts`` (e5: 'query: ')."""
    file = checkpoint.path / "config_sentence_transformers.json"
    if checkpoint.kind != "embedder" or not file.is_file():
        return "", ""
    prompts = json.loads(file.read_text(encoding="utf-8")).get("prompts") or {}
    return str(prompts.get("query", "")), str(prompts.get("document", prompts.get("passage", "")))


def _build_int8(
    config: ExportConfig,
    steps: Steps,
    fp32_path: Path,
    work: Path,
    checkpoint: Checkpoint,
    search_items: _Batches,
    search_ref: np.ndarray,
    search_set: ValidationSet,
    threads: int,
) -> tuple[Path, Int8Recipe, list[MixTrial]]:
    """Quantize, choosing the fp32 nodes as ``config.int8_mix`` says; return file and recipe."""
    import onnx

    mix: Int8Mix = config.int8_mix
    recipe = preset_recipe(config.resolved_preset())
    nodes = weight_nodes(onnx.load(str(fp32_path), load_external_data=False), recipe.op_types)
    if mix.mode == "nodes":
        unknown = sorted(set(mix.nodes) - set(nodes))
        if unknown:
            raise ExportError(f"--int8-mix names unknown nodes: {', '.join(unknown)}", step="int8")
        recipe = replace(recipe.with_fp32(mix.nodes, len(nodes)), selection="named")
        path = work / "model.int8.onnx"
        quantize(fp32_path, path, recipe)
        return path, recipe, []
    ranked = nodes
    sensitivity: dict[str, float] = {}
    if mix.mode == "search" or mix.keep > 0:
        sensitivity = node_sensitivity(
            fp32_path,
            search_items.middle(SENSITIVITY_TEXTS),
            recipe,
            threads=threads,
        )
        ranked = list(sensitivity)
        top = ", ".join(f"{n} {e:.3f}" for n, e in list(sensitivity.items())[:3])
        steps.note(f"int8 sensitivity (relative error, most sensitive first): {top}")
    if mix.mode == "top":
        keep = tuple(ranked[: mix.keep])
        recipe = replace(
            recipe.with_fp32(keep, len(nodes)),
            selection=f"top {mix.keep} by sensitivity" if mix.keep else "all",
            sensitivity={n: round(sensitivity[n], 5) for n in keep},
        )
        path = work / "model.int8.onnx"
        quantize(fp32_path, path, recipe)
        return path, recipe, []

    from twostage.server.runtime.session import OnnxSession

    gates = config.thresholds.for_variant(checkpoint.kind, "int8")
    fp32_session = OnnxSession(fp32_path, intra_op_threads=threads)

    def evaluate(path: Path) -> tuple[dict[str, float], bool, float]:
        session = OnnxSession(path, intra_op_threads=threads)
        found = figures(checkpoint.kind, search_ref, search_items.run(session), search_set.groups)
        speed = search_items.speed_ratio(fp32_session, session)
        return found, not failures(found, gates, mix.margin), speed

    def show(trial: MixTrial) -> None:
        shown = ", ".join(
            f"{k} {v:.4f}" for k, v in trial.figures.items() if not k.startswith("max_")
        )
        steps.note(
            f"int8 mix with {len(trial.fp32_nodes)} fp32 nodes: {shown}, "
            f"{trial.speed_vs_fp32:.2f}x fp32, {'passes' if trial.passed else 'fails'}"
        )

    search = MixSearch(
        fp32_path=fp32_path,
        workdir=work,
        recipe=recipe,
        ranked=ranked,
        evaluate=evaluate,
        budget_s=mix.budget_s,
        on_trial=show,
    )
    best = search.run()
    trials = sorted(search.trials, key=lambda t: len(t.fp32_nodes))
    recipe = replace(
        recipe.with_fp32(best.fp32_nodes, len(nodes)),
        selection=f"search: fewest fp32 nodes passing with margin {mix.margin:g}",
        sensitivity={n: round(sensitivity[n], 5) for n in best.fp32_nodes},
    )
    return best.path, recipe, trials


def mix_table(trials: Sequence[MixTrial]) -> str:
    """The int8 trade-off: each candidate mix, its figures and its speed vs fp32 (same run)."""
    if not trials:
        return ""
    keys = [
        k
        for k in ("cosine_mean", "cosine_min", "rank_agreement", "class_agreement", "max_abs_error")
        if k in trials[0].figures
    ]
    lines = [
        "int8 mix search (figures vs PyTorch on the search texts; speed vs the fp32 file)",
        "fp32 nodes  " + "  ".join(f"{k:>15}" for k in keys) + "  speed vs fp32  passes",
    ]
    for t in trials:
        vals = "  ".join(f"{t.figures.get(k, float('nan')):>15.5f}" for k in keys)
        speed = f"{t.speed_vs_fp32:.2f}x"
        lines.append(f"{len(t.fp32_nodes):>10}  {vals}  {speed:>13}  {'yes' if t.passed else 'no'}")
    return "\n".join(lines)


def run_export(config: ExportConfig, echo: Callable[[str], None] | None = print) -> ExportResult:
    """Run every step of an export; return the committed bundle and its figures."""
    threads = config.threads or usable_cpus()
    precisions = config.precisions
    names = ["checkpoint", "onnx", "optimize", "reference"]
    names += [p for p in ("int8", "fp16") if p in precisions]
    names += ["validate", "write"]
    steps = Steps(names, config.progress)
    trials: list[MixTrial] = []
    try:
        with tempfile.TemporaryDirectory(prefix="twostage-export-") as tmp:
            work = Path(tmp)
            with steps.step("checkpoint"):
                ckpt = resolve_checkpoint(
                    config.model,
                    kind=config.kind,
                    revision=config.revision,
                    max_length=config.max_length,
                )
                fusion = read_fusion(ckpt.path)
                query_prefix, document_prefix = _read_prompts(ckpt)
            name = config.name or ckpt.name
            out = Path(config.out) if config.out is not None else Path("models") / name
            steps.note(
                f"{ckpt.id}: {ckpt.kind}, max length {ckpt.max_length}"
                + (f", {ckpt.pooling} pooling" if ckpt.pooling else "")
                + (f", {ckpt.num_labels} labels" if ckpt.num_labels else "")
            )
            with steps.step("onnx"):
                graph = export_onnx(ckpt, work, opset=config.opset)
            with StagedBundle(out) as staged:
                fp32_path = staged.path / VARIANT_FILES["fp32"]
                with steps.step("optimize"):
                    fused = optimize_fp32(graph.path, fp32_path, ckpt.config)
                    copy_tokenizer(graph.tokenizer_dir, staged.path)
                with steps.step("reference"):
                    search_n = config.int8_mix.search_texts
                    vset, sset = validation_sets(
                        count=config.validation_count,
                        search_count=search_n,
                        texts_file=config.validation_texts,
                        queries_file=config.validation_queries,
                    )
                    want_search = "int8" in precisions and config.int8_mix.mode == "search"
                    refs = reference_outputs(
                        ckpt.path,
                        ckpt.kind,
                        ckpt.max_length,
                        [vset, sset] if want_search else [vset],
                        threads=threads,
                    )
                recipes: dict[str, dict[str, Any]] = {
                    "fp32": {
                        "optimizer": "onnxruntime.transformers",
                        "opt_level": 1,
                        "fused": fused,
                        "opset": config.opset,
                    },
                }
                if "int8" in precisions:
                    with steps.step("int8"):
                        search_items = _Batches(
                            staged.path,
                            ckpt.max_length,
                            ckpt.kind,
                            sset.inputs(ckpt.kind),
                            graph.input_names,
                        )
                        int8_path, recipe, trials = _build_int8(
                            config,
                            steps,
                            fp32_path,
                            work,
                            ckpt,
                            search_items,
                            refs[1] if want_search else refs[0],
                            sset,
                            threads,
                        )
                        baked = work / "model.int8.baked.onnx"
                        cpu_ops = bake_cpu_graph(int8_path, baked)
                        staged.add_file(baked, VARIANT_FILES["int8"])
                        recipes["int8"] = recipe.to_dict()
                        recipes["int8"]["cpu_graph"] = {"ort_level": "extended", "ops": cpu_ops}
                        if trials:
                            recipes["int8"]["search"] = {
                                "texts": sset.source,
                                "margin": config.int8_mix.margin,
                                "trials": [t.row() for t in trials],
                            }
                if "fp16" in precisions:
                    with steps.step("fp16"):
                        recipes["fp16"] = convert_fp16(
                            fp32_path, staged.path / VARIANT_FILES["fp16"]
                        )

                def manifest_with(reports: dict[str, VariantReport]) -> Manifest:
                    variants: dict[str, Variant] = {}
                    for precision in precisions:
                        report = reports.get(precision)
                        recipe_data = dict(recipes.get(precision, {}))
                        if report is not None and report.note:
                            recipe_data["validation_note"] = report.note
                        variants[precision] = staged.variant(
                            precision,
                            validation=dict(report.figures) if report else {},
                            thresholds=dict(report.thresholds) if report else {},
                            recipe=recipe_data,
                        )
                    embedder = ckpt.kind == "embedder"
                    return Manifest(
                        kind=ckpt.kind,
                        source=Source(
                            id=ckpt.id, revision=ckpt.revision, weights_sha256=ckpt.weights_sha256
                        ),
                        max_length=ckpt.max_length,
                        variants=variants,
                        name=name,
                        dim=int(refs[0].shape[1]) if embedder else None,
                        pooling=ckpt.pooling,
                        normalize=ckpt.normalize,
                        query_prefix=query_prefix,
                        document_prefix=document_prefix,
                        num_labels=ckpt.num_labels,
                        label_names=ckpt.label_names,
                        activation=ckpt.activation,
                        fusion=fusion,
                        input_names=graph.input_names,
                        output_name=graph.output_name,
                        opset=config.opset,
                        versions=library_versions(),
                        created=utc_now(),
                    )

                with steps.step("validate"):
                    # the runtime loads bundles, so the staged folder gets a manifest first
                    staged.write_manifest(manifest_with({}))
                    reports: dict[str, VariantReport] = {}
                    for precision in precisions:
                        gates = config.thresholds.for_variant(ckpt.kind, precision)
                        report = validate_variant(
                            staged.path, precision, ckpt.kind, vset, refs[0], gates, threads=threads
                        )
                        report.size_bytes = (staged.path / VARIANT_FILES[precision]).stat().st_size
                        reports[precision] = report
                    manifest = manifest_with(reports)
                    staged.write_manifest(manifest)
                ordered = [reports[p] for p in precisions]
                table = format_table(ordered, vset.source)
                mix = mix_table(trials)
                if echo is not None:
                    if mix:
                        echo(mix)
                    echo(table)
                failed = [r for r in ordered if r.failures]
                if failed:
                    detail = "; ".join(f"{r.precision}: {', '.join(r.failures)}" for r in failed)
                    hint = ""
                    if any(r.precision == "int8" for r in failed):
                        hint = (
                            " (keep more nodes in fp32 with --int8-mix top:K, give the search "
                            "more time with --search-budget, or lower the thresholds)"
                        )
                    raise ValidationFailed(
                        f"refused, below threshold: {detail}{hint}", step="validate"
                    )
                with steps.step("write"):
                    path = staged.commit()
    finally:
        steps.close()
    if echo is not None:
        echo(f"bundle written to {path} ({sum(steps.seconds.values()):.0f}s)")
    return ExportResult(
        path=path,
        manifest=manifest,
        reports=ordered,
        trials=trials,
        seconds=dict(steps.seconds),
        table=table,
        mix_table=mix,
    )


def export_model(
    model: str | None = None,
    out: Path | str | None = None,
    kind: str | None = None,
    targets: Sequence[str] = ("cpu-int8",),
    *,
    max_length: int | None = None,
    quant_preset: str = "auto",
    int8_mix: str | Int8Mix = "search",
    thresholds: Thresholds | None = None,
    validation_texts: Path | str | None = None,
    validation_queries: Path | str | None = None,
    validation_count: int = 200,
    name: str | None = None,
    revision: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> Path:
    """Export ``model`` (hub id, local checkpoint, or ``None`` for the offline all-MiniLM-L6-v2)
    into a validated bundle at ``out`` (default ``./models/<name>``); return the bundle folder.

    Prints the validation table through ``echo``. Raises :class:`ExportError` when a step fails
    and :class:`ValidationFailed` when a variant is below its threshold (nothing is written).
    """
    mix = Int8Mix.parse(int8_mix) if isinstance(int8_mix, str) else int8_mix
    config = ExportConfig(
        model=model,
        out=Path(out) if out is not None else None,
        kind=kind,
        targets=tuple(targets),
        max_length=max_length,
        quant_preset=quant_preset,
        int8_mix=mix,
        thresholds=thresholds or Thresholds(),
        validation_texts=Path(validation_texts) if validation_texts else None,
        validation_queries=Path(validation_queries) if validation_queries else None,
        validation_count=validation_count,
        name=name,
        revision=revision,
        threads=threads,
        progress=progress,
    )
    return run_export(config, echo=echo).path
