"""WARP (Weston et al., IJCAI '11): uniform trials until a violator; rank from the trial count."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from pools.base import Capabilities, Negatives, NegativeSampler
from pools.config import SamplerOptions
from pools.rank import harmonic_table
from pools.registry import register


class WARPOptions(SamplerOptions):
    """WARP: uniform trials until a violator, the pair weighted by its estimated rank."""

    name: Literal["warp"]
    """Weighted approximate-rank pairwise."""

    num_negatives: Literal[1] = 1
    """WARP takes one negative per pair: the first violator."""

    warp_max_trials: int = Field(10, ge=1, le=10_000)
    """Uniform draws per pair before giving up on finding a violator (LightFM: 10)."""

    warp_margin: float = Field(1.0, ge=0.0)
    """A negative violates when r_j > r_i − margin."""

    warp_loss: Literal["logistic", "hinge"] = "logistic"
    """`logistic` weights −log σ(r_i − r_j) by the harmonic J(rank) (this project's form, used
    in Table 2); `hinge` is LightFM's WARP, the paper's baseline: weight
    log(max(1, ⌊(N−1)/V⌋)) on max(0, margin − r_i + r_j)."""

    rank_weight_norm: Literal["batch-mean", "none"] = "batch-mean"
    """`batch-mean` divides the rank weight by its global batch mean, so the loss keeps plain
    BPR's scale; `none` leaves it raw."""


@register("warp", options=WARPOptions, order=9)
class WARPSampler(NegativeSampler):
    """Per pair: up to `warp_max_trials` uniform non-positives; the first j with
    r_j > r_i − margin is the negative, V its trial number, rank ≈ ⌊(N−1)/V⌋ and the pair's
    weight J(rank) (divided by the batch mean of the pairs that found one). A pair with no
    violator gets weight 0, as in WARP. The trials are drawn and scored all at once.

    `warp_loss="hinge"` is LightFM's form: weight log(max(1, ⌊(N−1)/V⌋)) on the hinge
    max(0, margin − r_i + r_j); `"logistic"` (the default) uses J(rank) on −log σ(r_i − r_j).

    Deliberate difference: WARP draws sequentially and stops at the violator; drawing the
    capped number of trials in one batch gives the same V and costs `warp_max_trials` scores
    per pair. One negative per pair (WARP's): its options refuse `num_negatives` ≠ 1.
    """

    config: WARPOptions

    capabilities = Capabilities(negatives_per_pair=1, weights_positives=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._harmonic = harmonic_table(self.num_items, self.device)

    @torch.no_grad()
    def sample(self, model, users, pos_items, generator):
        cfg = self.config
        trials = self._draw_from_proposal(users, cfg.warp_max_trials, generator)  # [B, T]
        pos = model.score(users, pos_items[:, None])  # [B, 1]
        violates = model.score(users, trials) > pos - cfg.warp_margin
        found = violates.any(dim=1)
        first = violates.float().argmax(dim=1)  # index of the first violator (0 if none)
        rank = torch.div(self.num_items - 1, first + 1, rounding_mode="floor").clamp(min=1)
        hinge = cfg.warp_loss == "hinge"
        weight = (torch.log(rank.float()) if hinge else self._harmonic[rank]) * found
        if cfg.rank_weight_norm == "batch-mean":
            # Mean over the global batch's pairs that found a violator (sums averaged over
            # workers keep their ratio).
            totals = self.replicas.average_(torch.stack([weight.sum(), found.sum().float()]))
            weight = weight / (totals[0] / totals[1].clamp(min=1)).clamp(min=1e-12)
        return Negatives(
            trials.gather(1, first[:, None]),
            pos_weight=weight,
            hinge_margin=cfg.warp_margin if hinge else None,
        )
