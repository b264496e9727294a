"""Bounded admission and the token-budget dynamic batcher (layer L1, no runtime imports)."""

from twostage.server.batching.admission import Admission, Permit
from twostage.server.batching.batcher import DROP_REASONS, BatchedResult, DynamicBatcher

__all__ = ["DROP_REASONS", "Admission", "BatchedResult", "DynamicBatcher", "Permit"]
