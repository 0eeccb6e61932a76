"""Static proposal distributions Q over items: uniform and popularity ∝ log(1 + f)."""

from __future__ import annotations

import math

import numpy as np
import torch

from pools.interactions import take


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
    """Q(i) ∝ log(1 + f_i), f_i = the item's train count (the paper's choice, after [27]).

    Drawn through Walker's alias table (Vose's construction, built once): a draw is a uniform
    column and one coin against that column's threshold, O(1) whatever N, where an inverse
    CDF is a binary search over N (benchmarks/kernels.py times both)."""

    def __init__(self, item_counts: torch.Tensor):
        self.num_items = item_counts.numel()
        mass = torch.log1p(item_counts.double())
        if float(mass.sum()) <= 0:
            raise ValueError("popularity proposal needs at least one item with a train count")
        probs = mass / mass.sum()
        self.log_p = torch.log(probs).float()
        keep, alias = _alias_table(probs.cpu().numpy())
        self.keep = torch.as_tensor(keep, dtype=torch.float32, device=item_counts.device)
        self.alias = torch.as_tensor(alias, device=item_counts.device)

    def draw(self, shape, generator):
        device = self.keep.device
        column = torch.randint(0, self.num_items, shape, device=device, generator=generator)
        coin = torch.rand(shape, device=device, generator=generator)
        return torch.where(coin < take(self.keep, column), column, take(self.alias, column))

    def log_prob(self, items):
        return self.log_p[items]


def _alias_table(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias method: column i keeps item i with probability keep[i], else gives
    alias[i]; a uniform column then yields item j with probability probs[j]. Zero-mass
    items keep 0 (never drawn), whatever rounding leaves over."""
    n = probs.size
    scaled = probs * n
    keep = np.ones(n)
    alias = np.arange(n)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        keep[s], alias[s] = scaled[s], g
        scaled[g] += scaled[s] - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    # What is left holds mass 1 up to rounding: it keeps itself (keep = 1, alias = itself),
    # unless rounding left a zero-mass item there.
    stuck = (probs <= 0) & (alias == np.arange(n))
    keep[stuck], alias[stuck] = 0.0, int(np.argmax(probs))
    return keep, alias
