"""AdaSIR-W's rank estimate (Eq. 2) and rank weight J (Eq. 3)."""

from __future__ import annotations

import torch


def estimate_rank(
    pos_scores: torch.Tensor, candidate_scores: torch.Tensor, num_items: int
) -> torch.Tensor:
    """Eq. (2): rank ≈ ⌊(N − 1) · #{j ∈ K : r_j > r_pos} / |K|⌋ + 1.

    pos_scores [B], candidate_scores [B, K] (uniform candidates) → ranks [B] in [1, N], long.
    Candidates scoring *above* the positive are counted, so a positive the model ranks low gets
    a large rank (the authors' code counts those below, inverting the weight).
    """
    above = (candidate_scores > pos_scores[:, None]).sum(dim=1)
    k = candidate_scores.shape[1]
    return torch.div((num_items - 1) * above, k, rounding_mode="floor") + 1


def harmonic_table(num_items: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """J(k) = Σ_{t=1..k} 1/t for k = 0..N, as a lookup table [N + 1] (J(0) = 0)."""
    steps = torch.arange(1, num_items + 1, dtype=torch.float64, device=device).reciprocal()
    table = torch.zeros(num_items + 1, dtype=torch.float64, device=device)
    table[1:] = torch.cumsum(steps, 0)
    return table.float()
