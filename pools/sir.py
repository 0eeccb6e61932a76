"""AdaSIR-B: AdaSIR's importance resampling done for every batch, with no pools.

The pool diagnostics (README, "Why AdaSIR loses to DNS") say AdaSIR's pools lose to DNS on
freshness: one refresh an epoch leaves them ~200 steps behind the model, and refreshing them
more often costs a pass over every user each time. This sampler does steps 1-3 of Algorithm 1
for the batch's pairs only, at every step, and draws the n negatives straight from the
resampling weights:

1. |K| distinct candidates from the proposal for each group of `group_users` distinct users of
   the batch (shared within the group), each user's own train items masked out;
2. w(j|c) = softmax_j(r_cj/τ − log Q(j)) over them, with the current model: one batched GEMM
   [G, g, d] × [G, d, K] instead of gathering [B, K, d];
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
    """|K|: distinct uniform candidates each user of the batch is scored against."""

    group_users: int = Field(64, ge=1, le=1_000_000)
    """Distinct users of a batch that share one candidate set: the batch's users are split into
    groups of this size, each group draws its own |K| candidates, and each group is one GEMM of
    a batched [G, g, d] × [G, d, K] product. Same arithmetic for any size; smaller groups give a
    step more distinct candidates (ml-1m: one set for the whole batch pushed every user's
    negatives into the same 200 items and lost 0.03 validation NDCG@50 to DNS)."""

    weighting: Literal["paper", "reference", "none"] = "paper"
    """Eq. (1) weights over a pair's n negatives: `paper` softmax(r − log w), `reference`
    softmax(r + log w) (the authors' code), `none` a plain mean."""


@register("adasir-b", "uniform", options=BatchSIROptions, order=8.5)
class BatchSIRSampler(NegativeSampler):
    """Stateless: every `sample` resamples from a fresh candidate set with the current model."""

    @torch.no_grad()
    def sample(self, model, users, pos_items, generator):
        cfg = self.config
        # A batch repeats its users (ml-1m: ~2,400 distinct in 4,096 pairs): score, mask and
        # normalise once per distinct user, then draw per pair from its user's row.
        distinct, row = torch.unique(users, return_inverse=True)
        sets, group, logits = self._score_groups(model, distinct, generator)  # [G, K], [U_b], [U_b, K]
        logits /= cfg.temperature  # uniform Q: log Q is a constant
        full = None
        if cfg.exclude_positives:
            bad = self.positives.mask_groups(distinct, sets, group)
            # A user whose every candidate is a train item is resampled from all of them.
            full = bad.all(dim=1, keepdim=True)
            bad &= ~full
            logits.masked_fill_(bad, float("-inf"))
        log_w = torch.log_softmax(logits, dim=1)
        slot = _draw_rows(log_w.exp(), row, cfg.num_negatives, generator)  # [B, n]
        k = sets.shape[1]
        items = sets.view(-1).index_select(0, (group[row][:, None] * k + slot).view(-1))
        items = items.view(slot.shape)
        log_w = log_w.view(-1).index_select(0, (row[:, None] * k + slot).view(-1)).view(slot.shape)
        if full is not None and bool(full.any()):
            # Users whose every candidate is a train item drew one: a uniform non-positive.
            items = self._replace_positives(users, items, generator)
        offset = {"paper": -log_w, "reference": log_w, "none": None}[cfg.weighting]
        # j is among the K candidates with probability K/N, then drawn with probability w(j|c).
        log_q = math.log(k) + self.proposal.log_prob(items) + log_w
        return Negatives(items, logit_offset=offset, log_proposal=log_q)

    def _score_groups(self, model, distinct, generator):
        """Each group's candidates [G, K] (distinct uniform items), each user's group [U_b] and
        the users' scores of their group's candidates [U_b, K]."""
        k = min(self.config.num_candidates, self.num_items)
        size = min(self.config.group_users, distinct.numel())
        groups = -(-distinct.numel() // size)
        sets = torch.stack([torch.randperm(self.num_items, device=self.device,
                                           generator=generator)[:k] for _ in range(groups)])
        # Pad the last group with its own first user; the padded rows are cut off below.
        padded = torch.arange(groups * size, device=self.device).clamp_(max=distinct.numel() - 1)
        scores = model.score_groups(distinct[padded].view(groups, size), sets)
        group = torch.arange(distinct.numel(), device=self.device) // size
        return sets, group, scores.view(groups * size, k)[:distinct.numel()]


def _draw_rows(probs: torch.Tensor, row: torch.Tensor, n: int,
               generator: torch.Generator) -> torch.Tensor:
    """n indices drawn with replacement ∝ probs[row[b]] for each b → [B, n], probs [U, K]
    (inverse CDF: one cumsum per distinct row, a row gather and one batched searchsorted —
    cheaper than torch.multinomial for a few draws from wide rows)."""
    cdf = probs.cumsum(dim=1)
    # Dividing by the row's total makes its last step exactly 1, so a zero-weight tail (masked
    # positives) is never reached by u < 1.
    cdf /= cdf[:, -1:].clone()
    u = torch.rand(row.numel(), n, device=probs.device, generator=generator)
    at = torch.searchsorted(cdf.index_select(0, row), u, right=True)
    return at.clamp_(max=probs.shape[1] - 1)
