"""The weighted pairwise loss of Eq. (1) and Eq. (3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pools.base import Negatives


def negative_weights(neg_scores: torch.Tensor, negatives: Negatives) -> torch.Tensor:
    """ŵ(j|c) over a pair's n negatives, detached: [B, n], rows sum to 1.

    softmax_j(r_cj + logit_offset_j) when the sampler gives an offset (AdaSIR: ∓ log w,
    PRIS: −log Q), else 1/n.
    """
    if negatives.logit_offset is None:
        n = neg_scores.shape[1]
        return torch.full_like(neg_scores, 1.0 / n)
    return torch.softmax(neg_scores.detach() + negatives.logit_offset, dim=1)


def pairwise_loss(
    pos_scores: torch.Tensor, neg_scores: torch.Tensor, negatives: Negatives
) -> torch.Tensor:
    """Mean over the batch of J(c,i) · Σ_j ŵ(j|c) · −log σ(r_ci − r_cj).

    pos_scores [B], neg_scores [B, n] → scalar. −log σ(x) is softplus(−x), stable for any x.
    With `negatives.hinge_margin` = m the pair term is max(0, m − r_ci + r_cj) instead.
    """
    gap = neg_scores - pos_scores[:, None]
    if negatives.hinge_margin is None:
        per_neg = F.softplus(gap)
    else:
        per_neg = F.relu(gap + negatives.hinge_margin)
    per_pair = (negative_weights(neg_scores, negatives) * per_neg).sum(dim=1)
    if negatives.pos_weight is not None:
        per_pair = per_pair * negatives.pos_weight
    return per_pair.mean()


def l2_penalty(*embeddings: torch.Tensor, batch_size: int) -> torch.Tensor:
    """λ-free L2 on the embeddings a batch touched: Σ ||e||² / B (the usual BPR coupling)."""
    return sum(e.pow(2).sum() for e in embeddings) / batch_size
