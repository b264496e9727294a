"""Bounded admission and the token-budget dynamic batcher (layer L1, no runtime imports)."""

from twostage.server.batching.admission import Admission, DeadlineAdmission, Permit, Ticket
from twostage.server.batching.batcher import DROP_REASONS, BatchedResult, DynamicBatcher

__all__ = [
    "DROP_REASONS",
    "Admission",
    "BatchedResult",
    "DeadlineAdmission",
    "DynamicBatcher",
    "Permit",
    "Ticket",
]
