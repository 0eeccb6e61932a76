"""The sampler contract shared by every negative sampler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from pools.config import SamplerConfig
from pools.interactions import InteractionIndex
from pools.proposals import Proposal, UniformProposal


class ScoringModel(Protocol):
    """What a sampler needs from a model: scores of chosen items for a batch of users."""

    num_items: int

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users [B], items [B, K] → scores [B, K]."""
        ...

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """users [B] → scores [B, num_items]."""
        ...


@dataclass
class Negatives:
    """Negatives for a batch of B positive pairs.

    items: [B, n] item indices.
    logit_offset: [B, n] or None. The loss weights a pair's negatives by
        softmax_j(r_cj + logit_offset_j) (detached); None means a plain mean (1/n each).
        AdaSIR `paper`: −log w; `reference`: +log w; PRIS: −log Q.
    pos_weight: [B] or None. Per-pair loss multiplier (AdaSIR-W's J(rank)); None means 1.
    """

    items: torch.Tensor
    logit_offset: torch.Tensor | None = None
    pos_weight: torch.Tensor | None = None


class NegativeSampler:
    """Base class. Subclasses override `sample` and, if they keep per-user state, `refresh`.

    Users are indices local to whoever owns the sampler (one Ray worker owns a shard of users);
    `positives` is indexed the same way.
    """

    name: str = "base"

    def __init__(
        self,
        config: SamplerConfig,
        num_users: int,
        num_items: int,
        positives: InteractionIndex,
        proposal: Proposal,
    ):
        if num_items < 2:
            raise ValueError("negative sampling needs at least 2 items")
        self.config = config
        self.num_users = num_users
        self.num_items = num_items
        self.positives = positives
        self.proposal = proposal
        self.device = positives.device

    def refresh(self, model: ScoringModel, generator: torch.Generator) -> None:
        """Once per epoch, before the batches. Static samplers keep no state."""

    def sample(
        self,
        model: ScoringModel,
        users: torch.Tensor,
        pos_items: torch.Tensor,
        generator: torch.Generator,
    ) -> Negatives:
        """users [B], pos_items [B] → Negatives with items [B, n]."""
        raise NotImplementedError

    def state_size_bytes(self) -> int:
        """Device memory held between epochs (pools, candidates)."""
        return 0

    # -- helpers shared by the static samplers ------------------------------------------------

    def _draw_from_proposal(
        self, users: torch.Tensor, per_user: int, generator: torch.Generator
    ) -> torch.Tensor:
        """[B, per_user] draws from Q, never a train positive when `exclude_positives` is on.

        Uniform Q draws from the complement exactly. Any other Q rejects and redraws a fixed
        number of rounds (no host sync), then replaces what is still a positive by a uniform
        non-positive, so the promise holds exactly at a tiny bias for users whose positives
        carry most of Q's mass.
        """
        if self.config.exclude_positives and isinstance(self.proposal, UniformProposal):
            return self.positives.sample_complement(users, per_user, generator)
        items = self.proposal.draw((users.numel(), per_user), generator)
        if not self.config.exclude_positives:
            return items
        for _ in range(3):
            bad = self.positives.contains(users, items)
            items = torch.where(bad, self.proposal.draw(items.shape, generator), items)
        return self._replace_positives(users, items, generator)

    def _replace_positives(self, users, items, generator, bad=None):
        """Swap any train positive left in items [B, m] for a uniform non-positive (exact)."""
        if bad is None:
            bad = self.positives.contains(users, items)
        fallback = self.positives.sample_complement(users, items.shape[1], generator)
        return torch.where(bad, fallback, items)
