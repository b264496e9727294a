"""The server applies exactly the fusion the training run fitted its weight for."""

from __future__ import annotations

import numpy as np
import pytest

from twostage.server.fusion import fuse, zscore
from twostage.train import fusion as trained


@pytest.mark.parametrize("weight", [0.0, 0.35, 0.65, 1.0])
def test_server_fusion_equals_training_fusion(weight: float) -> None:
    rng = np.random.default_rng(7)
    for n in (1, 2, 100):
        dense = rng.normal(0.5, 0.1, n)
        logits = rng.normal(0.0, 3.0, n)
        assert np.allclose(fuse(dense, logits, weight), trained.fuse(dense, logits, weight))


def test_zscore_of_constant_scores_is_zero() -> None:
    assert np.all(zscore(np.full(5, 0.3)) == 0)
    z = zscore(np.array([1.0, 2.0, 3.0]))
    assert abs(z.mean()) < 1e-12 and abs(z.std() - 1.0) < 1e-12
