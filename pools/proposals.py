"""Static proposal distributions Q over items: uniform and popularity ∝ log(1 + f)."""

from __future__ import annotations

import math

import torch


class Proposal:
    """A fixed distribution over `num_items` items that can be drawn from and evaluated."""

    num_items: int

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class UniformProposal(Proposal):
    def __init__(self, num_items: int, device: torch.device):
        self.num_items = num_items
        self.device = device
        self._log_p = -math.log(num_items)

    def draw(self, shape, generator):
        return torch.randint(0, self.num_items, shape, device=self.device, generator=generator)

    def log_prob(self, items):
        return torch.full(items.shape, self._log_p, device=items.device)


class PopularityProposal(Proposal):
    """Q(i) ∝ log(1 + f_i), f_i = the item's train count (the paper's choice, after [27])."""

    def __init__(self, item_counts: torch.Tensor):
        self.num_items = item_counts.numel()
        mass = torch.log1p(item_counts.double())
        if float(mass.sum()) <= 0:
            raise ValueError("popularity proposal needs at least one item with a train count")
        probs = mass / mass.sum()
        self.log_p = torch.log(probs).float()
        # Inverse-CDF sampling: one searchsorted per draw, any output shape, no alias tables.
        self.cdf = torch.cumsum(probs, 0).float()
        self.cdf[-1] = 1.0

    def draw(self, shape, generator):
        u = torch.rand(shape, device=self.cdf.device, generator=generator)
        # Items with zero mass have a flat CDF step and are never returned.
        return torch.searchsorted(self.cdf, u, right=True).clamp_(max=self.num_items - 1)

    def log_prob(self, items):
        return self.log_p[items]
