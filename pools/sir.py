"""AdaSIR-B: AdaSIR's importance resampling done for every batch, with no pools.

The pool diagnostics (README, "Why AdaSIR loses to DNS") say AdaSIR's pools lose to DNS on
freshness: one refresh an epoch leaves them ~200 steps behind the model, and refreshing them
more often costs a pass over every user each time. This sampler does steps 1-3 of Algorithm 1
for the batch's pairs only, at every step, and draws the n negatives straight from the
resampling weights:

1. |K| distinct candidates K from the proposal, drawn once for the batch (shared by its rows),
   each row's own train items masked out;
2. w(j|c) = softmax_j(r_cj/τ − log Q(j)) over K, with the current model: one [B, d] × [d, K]
   GEMM instead of gathering [B, K, d];
3. n draws per pair from w, with replacement (inverse CDF: one cumsum and one searchsorted).

The loss then weights them as Eq. (1) does (`weighting`). Per step this costs O(B·|K|·d), the
cost of scoring |K| / n uniform negatives per negative — DNS scores m = 10 per negative.
Theorem 3.1 holds per pair as for the pools: K is a sample of Q for every row (rows share it).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from pools.base import Negatives, NegativeSampler
from pools.config import TemperatureOptions
from pools.registry import register


class BatchSIROptions(TemperatureOptions):
    """Importance resampling per batch from candidates the batch shares."""

    name: Literal["adasir-b"]
    """AdaSIR's resampling (steps 1-3 of Algorithm 1) at every step, no pools."""

    num_candidates: int = Field(200, ge=1, le=100_000)
    """|K|: distinct uniform candidates drawn per batch and scored for every row."""

    weighting: Literal["paper", "reference", "none"] = "paper"
    """Eq. (1) weights over a pair's n negatives: `paper` softmax(r − log w), `reference`
    softmax(r + log w) (the authors' code), `none` a plain mean."""


@register("adasir-b", "uniform", options=BatchSIROptions, order=8.5)
class BatchSIRSampler(NegativeSampler):
    """Stateless: every `sample` resamples from a fresh candidate set with the current model."""

    @torch.no_grad()
    def sample(self, model, users, pos_items, generator):
        cfg = self.config
        k = min(cfg.num_candidates, self.num_items)
        cand = torch.randperm(self.num_items, device=self.device, generator=generator)[:k]
        # A batch repeats its users (ml-1m: ~2,400 distinct in 4,096 pairs): score, mask and
        # normalise once per distinct user, then draw per pair from its user's row.
        distinct, row = torch.unique(users, return_inverse=True)
        logits = model.score_shared(distinct, cand) / cfg.temperature  # [U_b, K]; uniform Q
        if cfg.exclude_positives:
            bad = self.positives.mask_shared(distinct, cand)
            # A user whose every candidate is a train item is resampled from all of them.
            full = bad.all(dim=1, keepdim=True)
            bad &= ~full
            logits.masked_fill_(bad, float("-inf"))
        log_w = torch.log_softmax(logits, dim=1)
        slot = _draw_rows(log_w.exp(), row, cfg.num_negatives, generator)  # [B, n]
        items = cand[slot]
        log_w = log_w[row[:, None], slot]
        if cfg.exclude_positives and bool(full.any()):
            # Users whose every candidate is a train item drew one: a uniform non-positive.
            items = self._replace_positives(users, items, generator)
        offset = {"paper": -log_w, "reference": log_w, "none": None}[cfg.weighting]
        # j is among the K candidates with probability K/N, then drawn with probability w(j|c).
        log_q = math.log(k) + self.proposal.log_prob(items) + log_w
        return Negatives(items, logit_offset=offset, log_proposal=log_q)


def _draw_rows(probs: torch.Tensor, row: torch.Tensor, n: int,
               generator: torch.Generator) -> torch.Tensor:
    """n indices drawn with replacement ∝ probs[row[b]] for each b → [B, n], probs [U, K] with
    rows summing to 1 (inverse CDF over one flat monotone array: row r's cumulative weights
    are shifted by r, so one 1-D searchsorted serves every row without a [B, K] copy)."""
    num_rows, k = probs.shape
    # float64: the shift reaches U, and float32 would round away the small weights' steps.
    # Dividing by the row's total makes its last step exactly 1, so a zero-weight tail is never
    # reached.
    cdf = probs.double().cumsum(dim=1)
    cdf /= cdf[:, -1:]
    flat = (cdf + torch.arange(num_rows, device=probs.device, dtype=torch.float64)[:, None]).view(-1)
    u = torch.rand(row.numel(), n, device=probs.device, generator=generator, dtype=torch.float64)
    at = torch.searchsorted(flat, row[:, None].double() + u, right=True)
    return (at - row[:, None] * k).clamp_(0, k - 1)
