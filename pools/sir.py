"""AdaSIR-B: AdaSIR's importance resampling done for every batch, with no pools.

AdaSIR's pools go stale: the pool diagnostics (benchmarks/pages/previous-defaults.md, "Why AdaSIR loses to DNS")
show that one refresh an epoch leaves them ~200 steps behind the model, and refreshing them
more often costs a pass over every user each time. This sampler does steps 1-3 of Algorithm 1
for the batch's pairs only, at every step, and draws the n negatives straight from the
resampling weights:

1. |K| candidates from the proposal (with replacement) for each group of `group_users`
   distinct users of the batch (shared within the group);
2. w(j|c) = softmax_j(r_cj/τ − log Q(j)) over them, with the current model: one batched GEMM
   [G, g, d] × [G, d, K] instead of gathering [B, K, d];
3. n draws per pair from w, with replacement (a two-level inverse CDF, `_RowDraws`);
   a draw that is one of the user's train items is redrawn from the same row (rejection: exact
   for w conditioned on the non-positives), so only the [B, n] draws are looked up.

The loss then weights them as Eq. (1) does (`weighting`). Per step this costs O(B·|K|·d), the
cost of scoring |K| / n uniform negatives per negative — DNS scores m = 10 per negative.
Theorem 3.1 holds per pair as for the pools: K is a sample of Q for every row (rows share it).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from pools.base import Capabilities, Negatives, NegativeSampler
from pools.config import ResampledOptions, weighting_offset
from pools.interactions import take_cells
from pools.registry import register


class BatchSIROptions(ResampledOptions):
    """Importance resampling per batch from candidates the batch shares."""

    name: Literal["adasir-b"]
    """AdaSIR's resampling (steps 1-3 of Algorithm 1) at every step, no pools."""

    num_candidates: int = Field(200, ge=1, le=100_000)
    """|K|: uniform candidates (drawn with replacement) each user of the batch is scored
    against."""

    group_users: int = Field(16, ge=1, le=1_000_000)
    """Distinct users of a batch that share one candidate set: the batch's users are split into
    groups of this size, each group draws its own |K| candidates, and each group is one GEMM of
    a batched [G, g, d] × [G, d, K] product. Same arithmetic for any size; smaller groups give a
    step more distinct candidates (one set for the whole batch pushes every user's negatives
    into the same few items; benchmarks/pages/previous-defaults.md has the comparison that chose 16)."""

    ess_target: float | None = Field(None, gt=0.0, lt=1.0)
    """Adaptive hardness: when set, τ is not fixed but steered after every step so
    that the batch's mean effective sample size of w, (Σw)²/Σw² over the |K| candidates, is
    this fraction of |K| (`temperature` is where τ starts). Score scales drift with training
    and L2; a fixed ESS keeps the resampling equally selective throughout. τ is the sampler's
    only state and is not checkpointed: a resumed run starts it again from `temperature`."""

    ess_rate: float = Field(0.5, gt=0.0, le=10.0)
    """How fast τ follows `ess_target`: τ ← τ · exp(rate · (target − ESS/|K|)) each step."""

    positive_draws: Literal["redraw", "mask", "drop"] = "redraw"
    """What happens to a draw that is one of the user's train items (with `exclude_positives`).
    `redraw`: drawn again from the same row, up to 3 rounds (rejection: the kept draws follow w
    over the non-positives), then a uniform non-positive. `mask`: kept in place and marked
    `Negatives.invalid`, so the loss leaves it out and the pair has fewer than n negatives; no
    redraw rounds, one look-up. Under the sampled softmax, `mask` is the unbiased estimate of
    the normaliser over the non-positives: (1/n)·Σ over the kept draws of e^{r/T}/Q, with Q
    the probability of the draw itself; `redraw` keeps that Q while the kept draws come from w
    renormalised over the non-positives, which inflates the estimate by 1 / (1 − P), P the
    row's mass of w on train items (tests/test_sir.py measures both). `drop`: masked as with
    `mask`, but the pair's kept draws stand for its sample: their log-proposal gains
    log(kept / n), so the estimate is (1/kept)·Σ over the kept draws. Given `kept`, those draws
    follow w over the non-positives, so its mean (given kept ≥ 1) is redraw's, 1 / (1 − P)
    times the normaliser, at mask's cost; a pair with no draw kept has only its positive. Only
    the sampled softmax reads the log-proposal: under `bpr` and `contrastive`, `drop` is
    `mask`."""

    @model_validator(mode="after")
    def _mask_needs_exclusion(self):
        if self.positive_draws != "redraw" and not self.exclude_positives:
            raise ValueError(
                f"positive_draws={self.positive_draws!r} leaves the user's train "
                "items out of the loss, but --keep-positives keeps them in: drop "
                "one of the two"
            )
        return self


@register("adasir-b", "uniform", options=BatchSIROptions, order=8.5)
class BatchSIRSampler(NegativeSampler):
    """Every `sample` resamples from a fresh candidate set with the current model. The only
    state is τ, and only with `ess_target` (then `sample` changes it: not a pure sample)."""

    config: BatchSIROptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tau = self.config.temperature
        self.capabilities = Capabilities(pure_sample=self.config.ess_target is None)
        self.last_ess = None

    @torch.no_grad()
    def sample(self, model, users, pos_items, generator):
        cfg = self.config
        # A batch repeats its users (ml-1m: ~2,400 distinct in 4,096 pairs): score and normalise
        # once per distinct user, then draw per pair from its user's row.
        distinct, row = torch.unique(users, return_inverse=True)
        sets, group, logits = self._score_groups(
            model, distinct, generator
        )  # [G, K], [U_b], [U_b, K]
        if cfg.ess_target is not None:
            self._steer_tau(torch.log_softmax(logits / self.tau, dim=1))
        # w = softmax(r/τ) (uniform Q: log Q is a constant), kept unnormalised: only the drawn
        # entries' log w is needed, from the logits and the row's normaliser.
        top = logits.amax(dim=1, keepdim=True)
        draws = _RowDraws(((logits - top) / self.tau).exp_())
        slot = draws.draw(row, cfg.num_negatives, generator)  # [B, n]
        k = sets.shape[1]
        set_of_pair = group.index_select(0, row)
        items = take_cells(sets, set_of_pair, slot)
        invalid = None
        if cfg.exclude_positives and cfg.positive_draws != "redraw":
            invalid = self.positives.contains(users, items)
        elif cfg.exclude_positives:
            # A drawn train item is redrawn from the same row: w over the non-positives, exactly
            # (rejection), with only the [B, n] draws looked up, not all B·|K| candidates (at
            # Gowalla size that look-up was half the sampler's time). A uniform fallback (still
            # a positive after the redraws, rare) keeps its slot's log w: an approximation.
            def redraw(rows, g):
                fresh = draws.draw(row.index_select(0, rows), 1, g)  # [k, 1]
                return take_cells(sets, set_of_pair.index_select(0, rows), fresh).squeeze(
                    1
                ), fresh.squeeze(1)

            items, _, slot = self._redraw_positives(users, items, redraw, generator, carry=slot)
        log_w = (
            take_cells(logits, row, slot) - top.index_select(0, row)
        ) / self.tau - draws.log_total.index_select(0, row)[:, None]
        offset = weighting_offset(log_w, cfg.weighting)
        # j is among the K candidates with probability K/N, then drawn with probability w(j|c).
        log_q = math.log(k) + self.proposal.log_prob(items) + log_w
        if invalid is not None and cfg.positive_draws == "drop":
            kept = cfg.num_negatives - invalid.sum(dim=1, keepdim=True)
            log_q = log_q + (kept.clamp(min=1) / cfg.num_negatives).log()
        return Negatives(items, logit_offset=offset, log_proposal=log_q, invalid=invalid)

    def _steer_tau(self, log_w: torch.Tensor) -> None:
        """One controller step towards ESS/|K| = ess_target; ESS grows with τ."""
        ess = float((-torch.logsumexp(2 * log_w, dim=1)).exp().mean()) / log_w.shape[1]
        self.last_ess = ess
        target = self.config.ess_target
        assert target is not None  # steered only when a target is set
        step = math.exp(self.config.ess_rate * (target - ess))
        self.tau = min(1e3, max(1e-3, self.tau * step))

    def pool_diagnostics(self, model) -> dict[str, float]:
        """ESS of the last step's w ÷ |K| and the τ in use (with `ess_target`)."""
        if self.last_ess is None:
            return {}
        return {"ess_frac": self.last_ess, "tau": self.tau}

    def _score_groups(self, model, distinct, generator):
        """Each group's candidates [G, K] (uniform draws), each user's group [U_b] and
        the users' scores of their group's candidates [U_b, K]."""
        k = self.config.num_candidates
        size = min(self.config.group_users, distinct.numel())
        groups = -(-distinct.numel() // size)
        # With replacement, as Algorithm 1 draws K_c: one randint for every group (a randperm of
        # the catalogue per group cost more than everything else at 36k items).
        sets = self.proposal.draw((groups, k), generator)
        # Pad the last group by repeating the last distinct user; the padded rows are cut off
        # below.
        padded = torch.arange(groups * size, device=self.device).clamp_(max=distinct.numel() - 1)
        scores = model.score_groups(distinct[padded].view(groups, size), sets)
        group = torch.arange(distinct.numel(), device=self.device) // size
        return sets, group, scores.view(groups * size, k)[: distinct.numel()]


class _RowDraws:
    """Draws with replacement from the rows of unnormalised weights [U, K], by a two-level
    inverse CDF: a block of `block` columns ∝ its mass, then a column of it ∝ its weight.

    The one-level search gathered each pair's whole CDF row, [B, K] floats per step (16 MB at
    |K| = 1000), and cumulated all U·K weights; this gathers [B, K/block] block sums and the
    [B·n, block] weights of the drawn blocks. Zero weights and zero blocks are never drawn.
    """

    def __init__(self, weights: torch.Tensor):
        users, k = weights.shape
        # A block size that divides K saves padding (a copy of the weights); else 32, padded.
        self.block = next((b for b in range(16, 65) if k % b == 0), 32)
        blocks = -(-k // self.block)
        if blocks * self.block != k:
            weights = torch.nn.functional.pad(weights, (0, blocks * self.block - k))
        self.k, self.blocks = k, blocks
        self.cells = weights.view(users * blocks, self.block)  # [U·nb, block]
        self.block_cdf = self.cells.sum(dim=1).view(users, blocks).cumsum_(dim=1)  # [U, nb]
        self.log_total = self.block_cdf[:, -1].log()  # [U]

    def draw(self, row: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        """n column indices drawn from weights[row[b]] for each b → [B, n]."""
        cdf = self.block_cdf.index_select(0, row)  # [B, nb]
        u = torch.rand(row.numel(), n, device=cdf.device, generator=generator) * cdf[:, -1:]
        blk = torch.searchsorted(cdf, u, right=True).clamp_(max=self.blocks - 1)  # [B, n]
        cells = self.cells.index_select(0, (row[:, None] * self.blocks + blk).view(-1))
        within = cells.cumsum_(dim=1)  # [B·n, block]
        v = torch.rand(within.shape[0], 1, device=cdf.device, generator=generator) * within[:, -1:]
        at = torch.searchsorted(within, v, right=True).clamp_(max=self.block - 1)
        return (blk * self.block + at.view(blk.shape)).clamp_(max=self.k - 1)
