"""Hyper-parameters of a training run and their translation into sentence-transformers arguments.

Also the hardware facts that change how a run goes: bf16 autocast only where the CPU has
AVX512-BF16 or AMX (elsewhere torch emulates it, about 6x slower), detected at run time.
"""

from __future__ import annotations

import platform
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """What a training run does, all of it written into ``training_report.json``."""

    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 256  # tokens per training example (serving length is the model's own)
    seed: int = 12
    max_steps: int = -1  # > 0 overrides epochs (tests, quick runs)
    bf16: str = "auto"  # auto | on | off
    # learning rate of a cross-encoder's fresh classification head. Adam moves a weight by about
    # the lr per step, so at the encoder's 2e-5 a head initialised at std 0.02 barely changes in
    # a few hundred steps and the loss stays at chance; the head needs its own, larger rate.
    head_learning_rate: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty where it does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def use_bf16(mode: str) -> bool:
    """Whether to train under bf16 autocast: on a GPU that has it, or a CPU with native bf16."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"bf16 must be auto, on or off, got {mode!r}")
    if mode != "auto":
        return mode == "on"
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def hardware() -> dict[str, Any]:
    """Facts about the machine a run used, for the report."""
    import torch

    flags = cpu_flags()
    return {
        "machine": platform.machine(),
        "cuda": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
        "cpu_features": sorted(
            f for f in flags if f in {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"}
        ),
    }


HEAD_PARAMETERS = r"classifier\.(weight|bias)$"


def trainer_arguments(recipe: Recipe, cls: type, scratch: str) -> Any:
    """sentence-transformers training arguments for ``recipe``: no checkpoints, tqdm on, seeded."""
    import dataclasses

    import torch

    extra: dict[str, Any] = {}
    if recipe.head_learning_rate:
        if "learning_rate_mapping" not in {f.name for f in dataclasses.fields(cls)}:
            raise ValueError(
                "a separate head learning rate needs sentence-transformers >= 5.1 "
                "(learning_rate_mapping); pass --head-lr 0 to train the head at --lr"
            )
        extra["learning_rate_mapping"] = {HEAD_PARAMETERS: recipe.head_learning_rate}
    return cls(
        **extra,
        output_dir=scratch,
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        warmup_ratio=recipe.warmup_ratio,
        weight_decay=recipe.weight_decay,
        lr_scheduler_type="linear",
        seed=recipe.seed,
        data_seed=recipe.seed,
        bf16=use_bf16(recipe.bf16),
        use_cpu=not torch.cuda.is_available(),
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=50,
        report_to=[],
        disable_tqdm=False,
        dataloader_num_workers=0,
    )


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for the trainer's own output (we save the model ourselves)."""
    return tempfile.TemporaryDirectory(prefix="twostage-train-")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch before a model is built, so fresh heads match."""
    from transformers import set_seed

    set_seed(seed)
