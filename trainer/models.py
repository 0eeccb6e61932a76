"""Scoring models by name: MF (r = p·q) and GMF (r = h·(p ⊙ q)).

Both are "user query · item vector": GMF's query is h ⊙ p. User-side and item-side
parameters are kept apart because under Ray the user table is sharded and never leaves its
worker, while item-side parameters are replicated and all-reduced.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FactorModel(nn.Module):
    """users [B], items [B, K] → scores [B, K]; `num_users` are local indices."""

    name = "base"

    def __init__(self, num_users: int, num_items: int, dim: int, generator: torch.Generator,
                 init_std: float = 0.1):
        super().__init__()
        self.num_users, self.num_items, self.dim = num_users, num_items, dim
        self.user_emb = nn.Parameter(torch.randn(num_users, dim, generator=generator) * init_std)
        self.item_emb = nn.Parameter(torch.randn(num_items, dim, generator=generator) * init_std)

    def query(self, users: torch.Tensor) -> torch.Tensor:
        """users [B] → [B, d], the vector an item embedding is dotted with."""
        return self.to_query(F.embedding(users, self.user_emb))

    def to_query(self, user_vectors: torch.Tensor) -> torch.Tensor:
        """User embeddings [B, d] → query vectors [B, d] (MF: themselves)."""
        return user_vectors

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        q = self.query(users)
        if items.shape[1] * 16 >= self.num_items:
            # Many candidates per user: one GEMM over all items and a gather beats gathering
            # [B, K, d] item vectors (memory-bound).
            return (q @ self.item_emb.T).gather(1, items)
        return torch.bmm(F.embedding(items, self.item_emb), q.unsqueeze(2)).squeeze(2)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.query(users) @ self.item_emb.T

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
        """A training batch: users [B], pos [B], neg [B, n] → (pos scores [B], neg scores
        [B, n], the embeddings the batch touched, for L2)."""
        # F.embedding rather than tensor[index]: a much faster gather and scatter-add on CPU.
        p = F.embedding(users, self.user_emb)
        pos_v, neg_v = F.embedding(pos, self.item_emb), F.embedding(neg, self.item_emb)
        pos_s, neg_s = self.score_vectors(p, pos_v, neg_v)
        return pos_s, neg_s, (p, pos_v, neg_v)

    def score_vectors(self, p: torch.Tensor, pos_v: torch.Tensor, neg_v: torch.Tensor):
        """Gathered rows p [B, d], pos_v [B, d], neg_v [B, n, d] → scores [B], [B, n]."""
        q = self.to_query(p)
        # Broadcast multiply-sum, not bmm: B tiny [n, d]×[d, 1] products run slowly as a bmm.
        return (q * pos_v).sum(dim=1), (neg_v * q.unsqueeze(1)).sum(dim=2)

    def user_parameters(self) -> list[nn.Parameter]:
        return [self.user_emb]

    def item_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "user_emb"]


class MF(FactorModel):
    name = "mf"


class GMF(FactorModel):
    """GMF (He et al., NCF): r = h · (p ⊙ q), h initialised to ones so training starts as MF."""

    name = "gmf"

    def __init__(self, num_users, num_items, dim, generator, init_std: float = 0.1):
        super().__init__(num_users, num_items, dim, generator, init_std)
        self.h = nn.Parameter(torch.ones(dim))

    def to_query(self, user_vectors):
        return user_vectors * self.h


MODELS: dict[str, type[FactorModel]] = {"mf": MF, "gmf": GMF}


def build_model(name: str, num_users: int, num_items: int, dim: int, seed: int) -> FactorModel:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    generator = torch.Generator().manual_seed(seed)
    return MODELS[name](num_users, num_items, dim, generator)
