"""Draws from per-row categorical distributions, with replacement, by inverse CDF."""

from __future__ import annotations

import torch


def draw_rows(weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """weights [B, K] ≥ 0, each row with a positive sum → indices [B, n], each drawn
    independently ∝ its row's weights (what torch.multinomial(weights, n, replacement=True)
    draws, from another random stream).

    One cumulative sum per row and a batched binary search: for many draws from short rows
    (AdaSIR's refresh: [4,096, 200] → 200 a row) cheaper than torch.multinomial on CPU; for a
    few draws from long rows (5 from 41k items) multinomial is the cheaper one. An entry of
    weight 0 is never drawn: `right=True` finds the first cumulative sum above u, and a zero
    weight repeats its predecessor's sum."""
    cdf = weights.cumsum(dim=1)
    u = torch.rand(weights.shape[0], n, device=weights.device, generator=generator)
    u *= cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=weights.shape[1] - 1)
