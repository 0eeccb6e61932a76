"""Sampler options, validated once at the boundary (CLI, HTTP, Tune YAML)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SamplerName = Literal[
    "uniform",
    "popularity",
    "softmax",
    "dns",
    "pris-u",
    "pris-p",
    "adasir-u",
    "adasir-p",
    "adasir-w",
    "warp",
    "aobpr",
    "kernel",
    "srns",
    "irgan",
]

SAMPLER_NAMES: tuple[str, ...] = SamplerName.__args__  # type: ignore[attr-defined]


class SamplerConfig(BaseModel):
    """How negatives are drawn and weighted. Defaults follow the paper (section 4)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: SamplerName = "adasir-u"
    """Which sampler: `uniform` (BPR), `popularity` (Q ∝ log(1+f)), `softmax` (exact, O(items)
    per user), `dns` (max-scored of m uniform candidates), `pris-u`/`pris-p` (per-batch
    importance sampling), `adasir-u`/`adasir-p` (pools by importance resampling from a uniform /
    popularity proposal), `adasir-w` (adasir-u plus the Eq. (2)-(3) rank weight)."""

    num_negatives: int = Field(5, ge=1, le=1024)
    """n: negatives drawn per training pair."""

    num_candidates: int = Field(200, ge=1, le=100_000)
    """|K|: candidates drawn per user from the proposal at each pool refresh."""

    pool_size: int = Field(200, ge=1, le=100_000)
    """|R|: entries kept per user in the pool negatives are drawn from."""

    reuse_pool: bool = True
    """Algorithm 1, line 10: the new pool is |R| entries drawn uniformly from the old pool ∪ the
    freshly resampled one. Off: every refresh replaces the pool."""

    weighting: Literal["paper", "reference", "none"] = "paper"
    """Eq. (1) weights over a pair's n negatives: `paper` softmax(r − log w), `reference`
    softmax(r + log w) (what the authors' code does), `none` a plain mean. Used by the AdaSIR
    samplers; PRIS always uses its own softmax(r − log Q)."""

    exclude_positives: bool = True
    """Never hand out one of the user's own train items as a negative (the authors' code does)."""

    temperature: float = Field(1.0, gt=0.0, le=1e4)
    """τ in the resampling softmax, w ∝ exp(r/τ − log Q). τ = 1 is the paper; larger τ gives
    softer, less 'hard' negatives. Also used by the exact `softmax` sampler, and by `srns`, whose
    memory keeps items ∝ softmax(r/τ) (the SRNS authors' default is 1 too)."""

    dns_candidates: int = Field(10, ge=1, le=10_000)
    """m: uniform candidates per negative for `dns`, the best-scored of which is kept."""

    warp_max_trials: int = Field(10, ge=1, le=10_000)
    """WARP: uniform draws per pair before giving up on finding a violator (LightFM: 10)."""

    warp_margin: float = Field(1.0, ge=0.0)
    """WARP: a negative violates when r_j > r_i − margin."""

    warp_loss: Literal["logistic", "hinge"] = "logistic"
    """WARP: `logistic` weights −log σ(r_i − r_j) by the harmonic J(rank) (this project's form,
    used in Table 2); `hinge` is LightFM's WARP, the paper's baseline: weight
    log(max(1, ⌊(N−1)/V⌋)) on max(0, margin − r_i + r_j)."""

    aobpr_lambda: float = Field(500.0, gt=0.0)
    """AOBPR: λ of the geometric rank distribution p(r) ∝ exp(−r/λ) (the paper's 500)."""

    kernel_alpha: float = Field(100.0, gt=0.0)
    """Kernel: q(i|u) ∝ α·(p_u·q_i)² + 1, the quadratic kernel of Blanc & Rendle."""

    srns_memory: int = Field(20, ge=1, le=10_000)
    """SRNS: S1, memory slots per user, renewed every batch (the authors' 20)."""

    srns_tracked: int = Field(300, ge=1, le=100_000)
    """SRNS: V, items per user whose score history is tracked and from which the memory is
    refilled (the authors' `varset_size`, 3000). Costs U·V·(T + 2) floats of state."""

    srns_candidates: int = Field(5, ge=1, le=10_000)
    """SRNS: S2, memory entries considered per negative."""

    srns_history: int = Field(5, ge=2, le=100)
    """SRNS: epochs of score history used for the variance."""

    srns_alpha: float = Field(1.0, ge=0.0)
    """SRNS: weight of the likelihood's standard deviation in the selection score (the
    authors' default 1)."""

    srns_warmup: float = Field(1.0, ge=0.0)
    """SRNS: α ramps linearly from 0 over this many epochs (the authors' default 1: off for the
    first epoch, when no history exists); 0 disables the ramp."""

    irgan_lr: float = Field(0.001, gt=0.0)
    """IRGAN: learning rate of the generator (REINFORCE)."""

    rank_weight_norm: Literal["batch-mean", "none"] = "batch-mean"
    """AdaSIR-W: `batch-mean` divides J(rank) by its batch mean, so the loss keeps the scale of
    plain BPR and the learning rate keeps its meaning; `none` is the authors' unnormalised
    harmonic sum (the loss grows ~10×)."""

    shared_candidates: bool = False
    """AdaSIR: draw the |K| candidates once per chunk of `refresh_chunk_users` users (distinct
    items, each user's own positives masked) and score them with one [C, d] × [d, K] GEMM
    instead of gathering [C, K, d]: |K| in the thousands then costs what 200 did. Each user's
    candidates are still a sample of Q, so Theorem 3.1 holds per user; users in a chunk share
    them. (`--diagnostics`: at |K| = 200 the pools trade hardness for diversity.)"""

    pool_distinct: bool = False
    """AdaSIR: resample the |R| pool entries from the |K| candidates *without* replacement
    (Gumbel top-|R| on log w: successive draws ∝ w), so a pool never repeats an item. Needs
    |R| < |K| — with wide `shared_candidates`, hard pools that stay diverse."""

    refreshes_per_epoch: int = Field(1, ge=1, le=1000)
    """AdaSIR: resample the pools this many times an epoch, evenly spaced in its steps (the
    paper: once, before the batches). Fresher pools, at this many times the refresh's cost."""

    pool_pick: Literal["uniform", "reweight", "max"] = "uniform"
    """AdaSIR: how a negative is taken from the pool. `uniform`: one entry at random (the
    paper). `reweight`: `pool_pick_candidates` entries, one resampled ∝ exp((r_now − r_then)/τ)
    — the pool approximates softmax(r_then/τ) of the refresh; this corrects it towards the
    current model's softmax(r_now/τ) (pools go stale within an epoch: `--diagnostics`).
    `max`: the best-scored of `pool_pick_candidates` entries now (DNS within the pool)."""

    pool_pick_candidates: int = Field(4, ge=1, le=1000)
    """m: pool entries scored per negative by `pool_pick` = reweight or max."""

    shared_negatives: bool = False
    """`uniform` and `popularity` only: draw the n negatives once per batch and share them by
    every pair, so the batch is scored with one [B, d] × [d, n] GEMM and n can be in the
    hundreds or thousands (for the softmax and contrastive losses). A shared negative that is
    one of a user's train items is masked out of that user's loss rather than redrawn."""

    refresh_chunk_users: int = Field(2048, ge=1)
    """Users scored together during a pool refresh: bounds memory at chunk × |K| scores."""

    @model_validator(mode="after")
    def _pool_options_need_pools(self):
        pooled = self.name.startswith("adasir")
        if self.pool_distinct and self.pool_size >= self.num_candidates:
            raise ValueError(f"pool_distinct draws |R| = {self.pool_size} distinct entries from "
                             f"|K| = {self.num_candidates} candidates: it needs |R| < |K|")
        if not pooled and (self.shared_candidates or self.pool_pick != "uniform"
                           or self.pool_distinct or self.refreshes_per_epoch > 1):
            raise ValueError(f"shared_candidates and pool_pick shape AdaSIR's pools; sampler "
                             f"{self.name!r} has none (use adasir-u, adasir-p or adasir-w)")
        return self

    @model_validator(mode="after")
    def _shared_only_for_static_proposals(self):
        from pools.registry import capabilities_of  # the registry imports this module

        if not self.exclude_positives and not capabilities_of(self.name).can_keep_positives:
            raise ValueError(f"sampler {self.name!r} draws from non-positives only: "
                             "exclude_positives=False (--keep-positives) is not supported")
        if self.shared_negatives and not capabilities_of(self.name).shares_negatives:
            raise ValueError(f"shared_negatives draws one set per batch from a fixed proposal: "
                             f"sampler {self.name!r} draws per user (use uniform or popularity)")
        return self
