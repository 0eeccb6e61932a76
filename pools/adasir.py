"""AdaSIR: per-user sample pools by importance resampling (Algorithm 1), and AdaSIR-W."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from pools.base import Capabilities, Negatives, NegativeSampler
from pools.config import ChunkedRefreshOptions, ResampledOptions, weighting_offset
from pools.draws import draw_rows
from pools.interactions import take_cells
from pools.proposals import UniformProposal
from pools.rank import estimate_rank, harmonic_table
from pools.registry import register


class AdaSIROptions(ResampledOptions, ChunkedRefreshOptions):
    """AdaSIR's pools (Algorithm 1) and the options that make them fresher, wider or more
    diverse (`--diagnostics` measures each)."""

    name: Literal["adasir-u", "adasir-p", "adasir-w"]
    """`adasir-u`/`adasir-p`: pools by importance resampling from a uniform / popularity
    proposal; `adasir-w`: adasir-u plus the Eq. (2)-(3) rank weight."""

    num_candidates: int = Field(200, ge=1, le=100_000)
    """|K|: candidates drawn per user from the proposal at each pool refresh."""

    pool_size: int = Field(200, ge=1, le=100_000)
    """|R|: entries kept per user in the pool negatives are drawn from."""

    reuse_pool: bool = True
    """Algorithm 1, line 10: the new pool is |R| entries drawn uniformly from the old pool ∪ the
    freshly resampled one. Off: every refresh replaces the pool."""

    rank_weight_norm: Literal["batch-mean", "none"] = "batch-mean"
    """AdaSIR-W: `batch-mean` divides J(rank) by its global batch mean, so the loss keeps the
    scale of plain BPR and the learning rate keeps its meaning; `none` is the authors'
    unnormalised harmonic sum (the loss grows ~10×)."""

    shared_candidates: bool = False
    """Draw the |K| candidates once per chunk of `refresh_chunk_users` users (distinct items,
    each user's own positives masked) and score them with one [C, d] × [d, K] GEMM instead of
    gathering [C, K, d]: |K| in the thousands then costs what 200 did. Each user's candidates
    are still a sample of Q, so Theorem 3.1 holds per user; users in a chunk share them."""

    pool_distinct: bool = False
    """Resample the |R| pool entries from the |K| candidates *without* replacement (Gumbel
    top-|R| on log w: successive draws ∝ w), so a pool never repeats an item. Needs |R| < |K|."""

    refreshes_per_epoch: int = Field(1, ge=1, le=1000)
    """Resample the pools this many times an epoch, evenly spaced in its steps (the paper:
    once, before the batches). Fresher pools, at this many times the refresh's cost."""

    pool_pick: Literal["uniform", "reweight", "max"] = "uniform"
    """How a negative is taken from the pool. `uniform`: one entry at random (the paper).
    `reweight`: `pool_pick_candidates` entries, one resampled ∝ exp((r_now − r_then)/τ) — the
    pool approximates softmax(r_then/τ) of the refresh; this corrects it towards the current
    model's softmax(r_now/τ). `max`: the best-scored of `pool_pick_candidates` entries now."""

    pool_pick_candidates: int = Field(4, ge=1, le=1000)
    """m: pool entries scored per negative by `pool_pick` = reweight or max."""

    @model_validator(mode="after")
    def _distinct_needs_room(self):
        if self.pool_distinct and self.pool_size >= self.num_candidates:
            raise ValueError(
                f"pool_distinct draws |R| = {self.pool_size} distinct entries from "
                f"|K| = {self.num_candidates} candidates: it needs |R| < |K|"
            )
        if self.rank_weight_norm != "batch-mean" and self.name != "adasir-w":
            raise ValueError(
                f"rank_weight_norm shapes AdaSIR-W's rank weight; {self.name!r} "
                "has none (use adasir-w)"
            )
        return self


@register("adasir-u", "uniform", options=AdaSIROptions, order=6)
@register("adasir-p", "popularity", options=AdaSIROptions, order=7)
@register("adasir-w", "uniform", options=AdaSIROptions, rank_weighted=True, order=8)
class AdaSIRSampler(NegativeSampler):
    """Pools refreshed once per epoch; negatives drawn uniformly from the pool.

    State on the device: `pool_items` [U, R] int32 (int64 past 2³¹ items) and `pool_log_w` [U, R] float (log w(i|c) of
    each entry, from the model at the refresh that produced it); `pool_score` [U, R], the
    entry's score at that refresh (for the staleness diagnostic); `candidates` [U, K] (ids like pool_items) for
    AdaSIR-W's rank estimate. `last_ess` holds the mean effective sample size of the
    resampling weights at the last refresh, (Σw)²/Σw² over a user's |K| candidates.
    """

    config: AdaSIROptions

    @classmethod
    def declared(cls, rank_weighted: bool = False, **options) -> Capabilities:
        return Capabilities(stateful=True, weights_positives=rank_weighted)

    def __init__(self, *args, rank_weighted: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.rank_weighted = rank_weighted
        self.capabilities = self.declared(rank_weighted=rank_weighted)
        self.pool_items: torch.Tensor | None = None
        self.pool_log_w: torch.Tensor | None = None
        self.pool_score: torch.Tensor | None = None
        self.candidates: torch.Tensor | None = None
        self.last_ess = 0.0  # until the first refresh
        if rank_weighted:
            self._harmonic = harmonic_table(self.num_items, self.device)

    @torch.no_grad()
    def refresh(self, model, generator):
        cfg = self.config
        R, K = cfg.pool_size, cfg.num_candidates
        if self.pool_items is None:
            self.pool_items = torch.empty(
                self.num_users, R, dtype=self.id_dtype, device=self.device
            )
            self.pool_log_w = torch.empty(self.num_users, R, device=self.device)
            self.pool_score = torch.empty(self.num_users, R, device=self.device)
            fresh = True
        else:
            fresh = False
        if self.rank_weighted:
            self.candidates = torch.empty(
                self.num_users, K, dtype=self.id_dtype, device=self.device
            )
        ess = torch.zeros((), device=self.device)
        for start in range(0, self.num_users, cfg.refresh_chunk_users):
            rows = slice(start, min(start + cfg.refresh_chunk_users, self.num_users))
            users = torch.arange(rows.start, rows.stop, device=self.device)
            items, log_w, score, cand, chunk_ess = self._resample(model, users, generator)
            ess += chunk_ess
            if not fresh and cfg.reuse_pool:
                self._merge_(rows, items, log_w, score, generator)
            else:
                self.pool_items[rows] = items.to(self.id_dtype)
                self.pool_log_w[rows] = log_w
                self.pool_score[rows] = score
            if self.rank_weighted:
                self.candidates[rows] = cand.to(self.id_dtype)
        self.last_ess = float(ess) / max(1, self.num_users)

    def _resample(self, model, users, generator):
        """Steps 1-3: K candidates from Q, w = softmax(r/τ − log Q), R draws with replacement.
        Returns the pool's items, their log w and scores [C, R], the candidates [C, K] and the
        chunk's sum of the weights' effective sample sizes."""
        cfg = self.config
        if cfg.shared_candidates:  # one draw of |K| for the chunk, scored with one GEMM
            shared, mask = self._draw_shared(users, cfg.num_candidates, generator)
            cand = shared.expand(users.numel(), -1)
            scores = model.score_shared(users, shared)
        else:
            cand = self.proposal.draw((users.numel(), cfg.num_candidates), generator)  # [C, K]
            scores = model.score(users, cand, scratch=self.scratch)
            mask = self.positives.contains(users, cand) if cfg.exclude_positives else None
        logits = scores / cfg.temperature
        if not isinstance(self.proposal, UniformProposal):  # a constant shift cancels below
            logits = logits - self.proposal.log_prob(cand)
        if mask is not None:
            # A user whose every candidate is a train item keeps them rather than an empty pool.
            mask &= ~mask.all(dim=1, keepdim=True)
            logits = logits.masked_fill(mask, float("-inf"))
        log_w = torch.log_softmax(logits, dim=1)
        w = log_w.exp()
        ess = w.square().sum(dim=1).reciprocal_().sum()  # Σ_users 1/Σw², Σw = 1
        if cfg.pool_distinct:  # Gumbel top-R: R successive draws ∝ w without replacement
            u = torch.rand(log_w.shape, device=self.device, generator=generator)
            idx = (log_w - torch.log(-torch.log(u.clamp_(min=1e-20)))).topk(cfg.pool_size).indices
        else:
            idx = draw_rows(w, cfg.pool_size, generator)
        return cand.gather(1, idx), log_w.gather(1, idx), scores.gather(1, idx), cand, ess

    def _merge_(self, rows: slice, items, log_w, score, generator) -> None:
        """Step 4, in place on the pools' `rows`: the new pool keeps each of the 2R entries of
        old pool ∪ new pool with probability 1/2, R in all. Slot j keeps its old entry or takes
        the new pool's j-th on a fair coin: the new entries are i.i.d. draws, so whichever of
        them fill the freed slots are a uniform choice, and every old entry survives with
        probability 1/2 whatever its slot. (A uniform R-subset of the 2R by random keys and
        top-k gives each entry the same 1/2 at a higher cost.)"""
        take_new = torch.rand(items.shape, device=self.device, generator=generator) < 0.5
        assert self.pool_items is not None and self.pool_log_w is not None
        assert self.pool_score is not None
        for pool, new in (
            (self.pool_items, items.to(self.id_dtype)),
            (self.pool_log_w, log_w),
            (self.pool_score, score),
        ):
            old = pool[rows]  # a view: written in place (an elementwise op may alias its input)
            torch.where(take_new, new, old, out=old)

    def sample(self, model, users, pos_items, generator):
        if self.pool_items is None:
            raise RuntimeError("AdaSIR pools are empty: call refresh(model, generator) first")
        cfg = self.config
        slot = self._pick_slots(model, users, generator)
        items = take_cells(self.pool_items, users, slot).long()
        log_w = take_cells(self.pool_log_w, users, slot)
        offset = weighting_offset(log_w, cfg.weighting)
        pos_weight = self._rank_weight(model, users, pos_items) if self.rank_weighted else None
        # A pool entry is item j with probability ≈ |K|·Q(j)·w(j|c): j is among the |K|
        # candidates with probability ≈ |K|·Q(j), and then resampled with weight w(j|c).
        log_q = math.log(cfg.num_candidates) + self.proposal.log_prob(items) + log_w
        return Negatives(items, logit_offset=offset, pos_weight=pos_weight, log_proposal=log_q)

    @torch.no_grad()
    def _pick_slots(self, model, users, generator) -> torch.Tensor:
        """Pool slots [B, n] of the negatives, by `pool_pick` (see AdaSIROptions)."""
        cfg = self.config
        B, n = users.numel(), cfg.num_negatives
        m = 1 if cfg.pool_pick == "uniform" else cfg.pool_pick_candidates
        slot = torch.randint(0, cfg.pool_size, (B, n * m), device=self.device, generator=generator)
        if m == 1:
            return slot
        assert self.pool_items is not None and self.pool_score is not None
        picked = take_cells(self.pool_items, users, slot).long()
        now = model.score(users, picked, scratch=self.scratch).view(B, n, m)
        if cfg.pool_pick == "max":
            pick = now.argmax(dim=2, keepdim=True)
        else:
            drift = (now - take_cells(self.pool_score, users, slot).view(B, n, m)) / cfg.temperature
            pick = torch.multinomial(
                torch.softmax(drift.view(B * n, m), dim=1), 1, generator=generator
            ).view(B, n, 1)
        return slot.view(B, n, m).gather(2, pick).squeeze(2)

    @torch.no_grad()
    def _rank_weight(self, model, users, pos_items):
        """Eq. (3)'s J(rank) with rank from Eq. (2) over the user's uniform candidates K_c."""
        cand = self.candidates[users].long()  # [B, K]
        pos = model.score(users, pos_items[:, None]).squeeze(1)
        rank = estimate_rank(pos, model.score(users, cand, scratch=self.scratch), self.num_items)
        weight = self._harmonic[rank]
        if self.config.rank_weight_norm == "batch-mean":
            # The global batch's mean: every worker's share has the same size under Ray, so it
            # is the mean of the workers' means.
            weight = weight / self.replicas.average_(weight.mean())
        return weight

    def refresh_due(self, step: int, steps: int) -> bool:
        every = -(-steps // self.config.refreshes_per_epoch)
        return self.config.refreshes_per_epoch > 1 and step % every == 0

    @torch.no_grad()
    def pool_diagnostics(self, model) -> dict[str, float]:
        """distinct items per pool ÷ |R|; ESS of the last refresh's w ÷ |K|; staleness: how
        much lower a pool entry scores now than when it was resampled (mean over entries)."""
        if self.pool_items is None:
            return {}
        assert self.pool_items is not None and self.pool_score is not None
        sorted_items = self.pool_items.sort(dim=1).values
        distinct = 1 + (sorted_items[:, 1:] != sorted_items[:, :-1]).sum(1).float()
        users = torch.arange(self.num_users, device=self.device)
        staleness = torch.zeros((), device=self.device)
        for start in range(0, self.num_users, self.config.refresh_chunk_users):
            chunk = users[start : start + self.config.refresh_chunk_users]
            now = model.score(chunk, self.pool_items[chunk].long())
            staleness += (self.pool_score[chunk] - now).sum()
        return {
            "pool_distinct_frac": float(distinct.mean()) / self.config.pool_size,
            "ess_frac": self.last_ess / self.config.num_candidates,
            "staleness": float(staleness) / self.pool_items.numel(),
        }

    def state_size_bytes(self) -> int:
        tensors = [self.pool_items, self.pool_log_w, self.pool_score, self.candidates]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)
