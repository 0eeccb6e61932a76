"""AOBPR (Rendle & Freudenthaler, WSDM '14): adaptive oversampling by factor rankings."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from pools.base import Capabilities, Negatives, NegativeSampler
from pools.config import SamplerOptions
from pools.registry import register


class AOBPROptions(SamplerOptions):
    """AOBPR: negatives at geometric ranks of a factor's item ordering."""

    name: Literal["aobpr"]
    """Adaptive oversampling BPR."""

    aobpr_lambda: float = Field(500.0, gt=0.0)
    """λ of the geometric rank distribution p(r) ∝ exp(−r/λ) (the paper's 500)."""


@register("aobpr", options=AOBPROptions, order=10)
class AOBPRSampler(NegativeSampler):
    """A negative for user u: draw a rank r with p(r) ∝ exp(−r/λ), a factor f with
    p(f|u) ∝ |q_uf| · σ_f (σ_f the spread of item factor f), and take the item at rank r of
    factor f's ordering — descending if q_uf > 0, ascending otherwise. The orderings and σ
    are recomputed at every refresh (the paper refreshes every few hundred draws; once per
    epoch is this implementation's choice). Needs a factor model (`query`, `item_emb`).
    """

    config: AOBPROptions

    capabilities = Capabilities(stateful=True)
    order: torch.Tensor | None = None  # [d, N]: items by descending factor value

    @torch.no_grad()
    def refresh(self, model, generator):
        items = model.item_emb.detach()
        self.order = torch.argsort(items, dim=0, descending=True).T.contiguous()
        self.spread = items.std(dim=0)

    def draw_ranks(self, shape, generator) -> torch.Tensor:
        """Truncated geometric ranks in [0, N): inverse CDF of p(r) ∝ exp(−r/λ)."""
        lam, n = self.config.aobpr_lambda, self.num_items
        u = torch.rand(shape, device=self.device, generator=generator, dtype=torch.float64)
        mass = -math.expm1(-n / lam)  # 1 − exp(−N/λ)
        r = torch.floor(-lam * torch.log1p(-u * mass))
        return r.long().clamp_(0, n - 1)

    @torch.no_grad()
    def sample(self, model, users, pos_items, generator):
        if self.order is None:
            raise RuntimeError("AOBPR needs refresh(model, generator) first")
        q = model.query(users)  # [B, d]
        items = self._draw(q, self.config.num_negatives, generator)
        if self.config.exclude_positives:
            # A drawn positive is redrawn from AOBPR's own distribution, not from uniform.
            items, _, _ = self._redraw_positives(
                users, items, lambda rows, g: self._draw(q[rows], 1, g).squeeze(1), generator
            )
        return Negatives(items)

    def _draw(self, q: torch.Tensor, n: int, generator) -> torch.Tensor:
        """q [B, d] → items [B, n]: a factor by |q_f|·σ_f, a geometric rank, its item."""
        assert self.order is not None and self.spread is not None, "refresh() ranks first"
        factor_weight = q.abs() * self.spread + 1e-12
        f = torch.multinomial(factor_weight, n, replacement=True, generator=generator)  # [B, n]
        r = self.draw_ranks(f.shape, generator)
        descending = q.gather(1, f) > 0
        r = torch.where(descending, r, self.num_items - 1 - r)
        return self.order[f, r]
