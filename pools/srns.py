"""SRNS (Ding et al., NeurIPS '20): variance-aware hard negatives from a per-user memory."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from pools.base import Capabilities, Negatives, NegativeSampler
from pools.config import ChunkedRefreshOptions, TemperatureOptions
from pools.registry import register


class SRNSOptions(TemperatureOptions, ChunkedRefreshOptions):
    """SRNS: variance-aware hard negatives; `temperature` is the memory's softmax(r/τ) (the
    authors' default 1)."""

    name: Literal["srns"]
    """Simplify-and-robustify negative sampling."""

    srns_memory: int = Field(20, ge=1, le=10_000)
    """S1, memory slots per user, renewed every batch (the authors' 20)."""

    srns_tracked: int = Field(300, ge=1, le=100_000)
    """V, items per user whose score history is tracked and from which the memory is refilled
    (the authors' `varset_size`, 3000). Costs U·V·(T + 2) floats of state."""

    srns_candidates: int = Field(5, ge=1, le=10_000)
    """S2, memory entries considered per negative."""

    srns_history: int = Field(5, ge=2, le=100)
    """Epochs of score history used for the variance."""

    srns_alpha: float = Field(1.0, ge=0.0)
    """Weight of the likelihood's standard deviation in the selection score (the authors' 1)."""

    srns_warmup: float = Field(1.0, ge=0.0)
    """α ramps linearly from 0 over this many epochs (the authors' default 1: off for the first
    epoch, when no history exists); 0 disables the ramp."""


@register("srns", options=SRNSOptions, order=12)
class SRNSSampler(NegativeSampler):
    """Per user: V tracked non-positive items with a score history, and a memory of S1 of them.

    Tracked items (the authors' "varset"): each refresh (once per epoch) scores them and
    appends σ(r_uj − m_u) to their T-epoch history, m_u being the user's mean train-positive
    score that epoch; every item is tracked for T epochs, then replaced by a fresh uniform
    non-positive (a rolling 1/T of the set per epoch).

    Memory: every batch, each user's S1 memory slots plus S1 random tracked slots are scored
    and S1 of the 2·S1 are kept, drawn without replacement ∝ softmax(r_uj / τ) — so the
    memory leans to hard items, keeps turning over, and a user's negatives reach far beyond S1
    items per epoch.

    A negative: S2 entries of the renewed memory drawn uniformly, the one maximising
    σ(r_uj − r_ui) + α_t·std(history of j). The first term is how hard j is against this
    positive, on a bounded scale; the second favours items whose standing moves from epoch to
    epoch — SRNS's sign of a true negative, since an unobserved positive ranks high steadily.
    α_t ramps from 0 to α over `srns_warmup` epochs, while histories are short.

    Deliberate differences from the authors' code: V is 300 by default (theirs 3,000, which is
    all of ml-1m's items but U·V·T floats on Gowalla); histories are taken against m_u rather
    than each positive's own past score; tracked items roll over 1/T per epoch rather than as
    a whole set every T epochs; n negatives per pair pick from S2 memory entries each (theirs:
    one negative, the argmax of the whole memory).

    State: `tracked` [U, V] items (int32), `history` [U, V, T], `seen` [U, V] epochs recorded
    (≤ T, uint8), `memory` [U + 1, S1] int32 slots into `tracked` (row U absorbs writes of duplicate batch users).
    """

    config: SRNSOptions

    capabilities = Capabilities(stateful=True, pure_sample=False, can_keep_positives=False)

    memory: torch.Tensor | None = None

    @torch.no_grad()
    def refresh(self, model, generator):
        cfg = self.config
        v, t = cfg.srns_tracked, cfg.srns_history
        if self.memory is None:
            users = torch.arange(self.num_users, device=self.device)
            # Compact state: item ids and memory slots int32, epochs seen uint8 (T ≤ 100).
            self.tracked = self.positives.sample_complement(users, v, generator).to(self.id_dtype)
            self.history = torch.zeros(self.num_users, v, t, device=self.device)
            self.seen = torch.zeros(self.num_users, v, dtype=torch.uint8, device=self.device)
            self.memory = torch.randint(
                0, v, (self.num_users + 1, cfg.srns_memory), device=self.device, generator=generator
            ).to(torch.int32)
            self.epoch = 0
        else:
            self.epoch += 1
        renew = (torch.arange(v, device=self.device) % t) == (self.epoch % t)  # this epoch's 1/T
        for start in range(0, self.num_users, cfg.refresh_chunk_users):
            users = torch.arange(
                start, min(start + cfg.refresh_chunk_users, self.num_users), device=self.device
            )
            tracked, seen = self.tracked[users], self.seen[users]
            if self.epoch > 0:
                fresh = self.positives.sample_complement(users, v, generator)
                tracked = torch.where(renew, fresh, tracked)
                seen = seen.masked_fill(renew, 0)
            m_u = self._mean_positive_score(model, users)
            likelihood = torch.sigmoid(model.score(users, tracked.long()).float() - m_u[:, None])
            self.history[users] = torch.cat(
                [self.history[users, :, 1:], likelihood[:, :, None]], dim=2
            )
            self.tracked[users] = tracked.to(self.id_dtype)
            self.seen[users] = (seen + 1).clamp_(max=t)

    def _mean_positive_score(self, model, users: torch.Tensor) -> torch.Tensor:
        """m_u: the mean score of each user's train positives, users [c] → [c] (0 if none)."""
        rows, items = self.positives.rows_of(users)
        total = torch.zeros(users.numel(), device=self.device)
        if rows.numel():
            total.index_add_(0, rows, model.score(users[rows], items[:, None]).squeeze(1).float())
        return total / self.positives.degree[users].clamp(min=1)

    def _std(self, users, slots):
        """std over the recorded epochs of each (user, tracked slot): slots [B, m] → [B, m]."""
        t = self.config.srns_history
        hist = self.history[users[:, None], slots]  # [B, m, T]
        k = self.seen[users[:, None], slots].clamp(min=1)
        valid = torch.arange(t, device=self.device) >= (t - k)[..., None]
        mean = (hist * valid).sum(-1) / k
        return (((hist - mean[..., None]) ** 2 * valid).sum(-1) / k).sqrt()

    def _renew_memory(self, model, users, generator):
        """Memory ∪ S1 random tracked slots → keep S1 ∝ softmax(r/τ) (Gumbel top-k).
        users [B] → (kept slots [B, S1], their scores [B, S1])."""
        cfg = self.config
        s1 = cfg.srns_memory
        fresh = torch.randint(
            0, cfg.srns_tracked, (users.numel(), s1), device=self.device, generator=generator
        )
        slots = torch.cat([self.memory[users], fresh], dim=1)  # [B, 2·S1]
        scores = model.score(users, self.tracked[users[:, None], slots].long()).float()
        u = torch.rand(scores.shape, device=self.device, generator=generator).clamp_(
            1e-12, 1.0 - 1e-7
        )
        keep = (scores / cfg.temperature - torch.log(-torch.log(u))).topk(s1, dim=1).indices
        slots, scores = slots.gather(1, keep), scores.gather(1, keep)
        # A user can appear in several rows of a batch: only its last row writes its memory,
        # the others write to the spare row, so the result does not depend on write order.
        rows = torch.arange(users.numel(), device=self.device)
        last = torch.full((self.num_users,), -1, dtype=torch.long, device=self.device)
        last.scatter_reduce_(0, users, rows, reduce="amax")
        target = torch.where(last[users] == rows, users, self.num_users)
        self.memory[target] = slots.to(self.memory.dtype)
        return slots, scores

    @torch.no_grad()
    def sample(self, model, users, pos_items, generator):
        if self.memory is None:
            raise RuntimeError("SRNS needs refresh(model, generator) first")
        cfg = self.config
        n, s2 = cfg.num_negatives, cfg.srns_candidates
        slots, scores = self._renew_memory(model, users, generator)
        pick = torch.randint(
            0, cfg.srns_memory, (users.numel(), n * s2), device=self.device, generator=generator
        )
        slots, scores = slots.gather(1, pick), scores.gather(1, pick)
        hardness = torch.sigmoid(scores - model.score(users, pos_items[:, None]).float())
        ramp = min(1.0, self.epoch / cfg.srns_warmup) if cfg.srns_warmup > 0 else 1.0
        select = hardness + cfg.srns_alpha * ramp * self._std(users, slots)
        best = select.view(-1, n, s2).argmax(dim=2, keepdim=True)
        chosen = slots.view(-1, n, s2).gather(2, best).squeeze(2)
        return Negatives(self.tracked[users[:, None], chosen].long())

    def state_size_bytes(self) -> int:
        if self.memory is None:
            return 0
        return sum(
            t.numel() * t.element_size()
            for t in (self.tracked, self.history, self.seen, self.memory)
        )
