"""Which loss a run uses follows the data: one table for both encoders.

bi-encoder: binary -> OnlineContrastiveLoss, similarity -> CoSENTLoss, retrieval ->
MultipleNegativesRankingLoss. cross-encoder: similarity -> BinaryCrossEntropyLoss (one logit),
classes -> CrossEntropyLoss (N logits).
"""

from __future__ import annotations

from typing import Any

BI_ENCODER_LOSSES = {
    "binary": "OnlineContrastiveLoss",
    "similarity": "CoSENTLoss",
    "retrieval": "MultipleNegativesRankingLoss",
}
CROSS_ENCODER_LOSSES = {
    "similarity": "BinaryCrossEntropyLoss",
    "classes": "CrossEntropyLoss",
}


def _bi_encoder_losses_module() -> Any:
    # sentence-transformers 5.7 moved the losses; earlier 5.x only has the old path.
    try:
        from sentence_transformers.sentence_transformer import losses
    except ImportError:
        from sentence_transformers import losses
    return losses


def bi_encoder_batch_samplers() -> Any:
    """The ``BatchSamplers`` enum wherever this sentence-transformers version keeps it."""
    try:
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    except ImportError:
        from sentence_transformers.training_args import BatchSamplers
    return BatchSamplers


def bi_encoder_loss(model: Any, kind: str) -> Any:
    """The loss for a bi-encoder trained on ``kind`` data (binary, similarity or retrieval)."""
    if kind not in BI_ENCODER_LOSSES:
        raise ValueError(f"no bi-encoder loss for {kind!r} labels")
    return getattr(_bi_encoder_losses_module(), BI_ENCODER_LOSSES[kind])(model)


def cross_encoder_loss(model: Any, kind: str, pos_weight: float | None = None) -> Any:
    """The loss for a cross-encoder trained on ``kind`` labels (similarity or classes).

    ``pos_weight`` balances positives against negatives in BCE (retrieval: negatives per positive).
    """
    from sentence_transformers.cross_encoder import losses

    if kind not in CROSS_ENCODER_LOSSES:
        raise ValueError(f"no cross-encoder loss for {kind!r} labels")
    if kind == "similarity":
        if pos_weight is not None:
            import torch

            return losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(pos_weight)))
        return losses.BinaryCrossEntropyLoss(model)
    return losses.CrossEntropyLoss(model)
