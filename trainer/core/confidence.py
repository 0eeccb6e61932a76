"""Interaction strength (TrainConfig.confidence): each positive pair's weight in the loss,
from its rating, as implicit's ALS turns a count into a confidence.

c = 1 + α·r (`linear`) or 1 + α·log(1 + r) (`log`). A batch's pairs are weighted by c over
the batch's mean c: the weights only say which pairs count more, the loss keeps its scale, so
the learning rate and the L2 weight mean what they mean without weights.
"""

from __future__ import annotations

import numpy as np
import torch


def pair_confidence(config, ratings: np.ndarray | None, device) -> torch.Tensor | None:
    """c for each train pair, ratings [nnz] → float32 [nnz] on `device`; None: unweighted."""
    if config.confidence == "none":
        return None
    assert ratings is not None, "config.check_confidence refuses confidence without ratings"
    r = np.nan_to_num(ratings.astype(np.float64), nan=0.0)
    scaled = r if config.confidence == "linear" else np.log1p(r)
    return torch.as_tensor(1.0 + config.confidence_alpha * scaled, dtype=torch.float32).to(device)


def batch_weights(confidence: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The batch's pair weights [B]: c over the batch's mean c (idx [B] pair indices)."""
    c = confidence.index_select(0, idx)
    return c / c.mean()
