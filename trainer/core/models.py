"""Scoring models by name: MF (r = p·q) and GMF (r = h·(p ⊙ q)).

Both are "user query · item vector": GMF's query is h ⊙ p. User-side and item-side
parameters are kept apart because under Ray the user table is sharded and never leaves its
worker, while item-side parameters are replicated and all-reduced.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pools.scratch import RowScratch


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (cosine scores); a zero row stays zero."""
    return _Unit.apply(x)


class _Unit(torch.autograd.Function):
    """y = x / max(‖x‖, ε) over the last dim, as F.normalize, with a hand-written backward:
    ∂L/∂x = (g − y (g·y)) / max(‖x‖, ε). Autograd's chain through norm, clamp and division took
    about ten passes over [B, n, d] (the sampled softmax's negatives); this takes four."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y, norm = unit_rows(x)
        ctx.save_for_backward(y, norm)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        return unit_rows_backward(g, *ctx.saved_tensors)


def unit_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(y = x / max(‖x‖, ε) over the last dim, the clamped norms [..., 1]): _Unit's forward,
    also the compiled step's (trainer/core/fused_step.py), which writes its gradient out."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_(min=1e-12)
    return x / norm, norm


def unit_rows_backward(g: torch.Tensor, y: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """∂L/∂x = (g − y (g·y)) / max(‖x‖, ε) for y, norm from `unit_rows`."""
    along = (g * y).sum(dim=-1, keepdim=True)
    return (g - y * along).div_(norm)


class FactorModel(nn.Module):
    """users [B], items [B, K] → scores [B, K]; `num_users` are local indices.

    score "dot": r = query · v (MF, GMF as in the paper). "cosine": r = cos(query, v) ∈ [−1, 1]
    — query and item vectors are normalised wherever they meet, in training, sampling,
    evaluation and serving alike (the loss temperature then sets the scale).
    """

    name = "base"

    def __init__(
        self,
        num_users: int,
        num_items: int,
        dim: int,
        generator: torch.Generator,
        init_std: float = 0.1,
        score: str = "dot",
        init: str = "normal",
    ):
        super().__init__()
        if score not in ("dot", "cosine"):
            raise ValueError(f"unknown score {score!r}; choose 'dot' or 'cosine'")
        self.num_users, self.num_items, self.dim = num_users, num_items, dim
        self.cosine = score == "cosine"
        self.user_emb = nn.Parameter(initial_table(num_users, dim, generator, init, init_std))
        self.item_emb = nn.Parameter(initial_table(num_items, dim, generator, init, init_std))

    def query(self, users: torch.Tensor) -> torch.Tensor:
        """users [B] → [B, d], the vector an item vector is dotted with."""
        return self.query_vectors(F.embedding(users, self.user_emb))

    def query_vectors(self, user_vectors: torch.Tensor) -> torch.Tensor:
        """User embeddings [B, d] → the vectors item vectors are dotted with."""
        q = self.to_query(user_vectors)
        return _unit(q) if self.cosine else q

    def item_vectors(self, v: torch.Tensor) -> torch.Tensor:
        """Item embeddings [..., d] → the vectors queries are dotted with."""
        return _unit(v) if self.cosine else v

    def serving_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries [U, d], items [N, d]) whose dot products are this model's scores."""
        with torch.no_grad():
            return (
                self.query_vectors(self.user_emb.detach()).contiguous(),
                self.item_vectors(self.item_emb.detach()).contiguous(),
            )

    def to_query(self, user_vectors: torch.Tensor) -> torch.Tensor:
        """User embeddings [B, d] → query vectors [B, d] (MF: themselves)."""
        return user_vectors

    def score(
        self, users: torch.Tensor, items: torch.Tensor, scratch: RowScratch | None = None
    ) -> torch.Tensor:
        """users [B], items [B, K] → scores [B, K]. `scratch` (no grad only): a buffer the
        gathered [B, K, d] item rows are written to instead of a fresh tensor."""
        q = self.query(users)
        if items.shape[1] * 16 >= self.num_items:
            # Many candidates per user: one GEMM over all items and a gather beats gathering
            # [B, K, d] item vectors (memory-bound).
            return (q @ self.item_vectors(self.item_emb).T).gather(1, items)
        if scratch is None:
            rows = F.embedding(items, self.item_emb)
        else:
            rows = scratch.gather(self.item_emb, items)
        # [B, 1, d] × [B, d, K] rather than [B, K, d] × [B, d, 1]: the same products, several
        # times faster on CPU at K ≥ 50 (one row of K outputs per batch entry, not K rows of
        # one; benchmarks/kernels.py).
        return torch.bmm(q.unsqueeze(1), self.item_vectors(rows).transpose(1, 2)).squeeze(1)

    def score_shared(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users [C], items [K] shared by all of them → scores [C, K], one GEMM."""
        return self.query(users) @ self.item_vectors(F.embedding(items, self.item_emb)).T

    def score_groups(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users [G, g], items [G, K]: each group's users score its items → [G, g, K], one
        batched GEMM."""
        q = self.query(users.reshape(-1)).view(*users.shape, -1)
        if self.cosine and items.numel() > self.num_items:
            # Normalise the N table rows once rather than G·K gathered copies (ml-1m, |K| =
            # 1000: 256k rows against 3,125).
            v = F.embedding(items, self.item_vectors(self.item_emb))
        else:
            v = self.item_vectors(F.embedding(items, self.item_emb))
        return torch.bmm(q, v.transpose(1, 2))

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.query(users) @ self.item_vectors(self.item_emb).T

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
        """A training batch: users [B], pos [B], neg [B, n] (or [n], shared by the batch) →
        (pos scores [B], neg scores [B, n], the embeddings the batch touched, for L2)."""
        # F.embedding rather than tensor[index]: a much faster gather and scatter-add on CPU.
        p = F.embedding(users, self.user_emb)
        pos_v, neg_v = F.embedding(pos, self.item_emb), F.embedding(neg, self.item_emb)
        pos_s, neg_s = self.score_vectors(p, pos_v, neg_v)
        return pos_s, neg_s, (p, pos_v, neg_v)

    def score_vectors(self, p: torch.Tensor, pos_v: torch.Tensor, neg_v: torch.Tensor):
        """Gathered rows p [B, d], pos_v [B, d], neg_v [B, n, d] → scores [B], [B, n].
        neg_v [n, d] (negatives shared by the batch) is scored with one GEMM."""
        q = self.to_query(p)
        if self.cosine:
            q, pos_v, neg_v = _unit(q), _unit(pos_v), _unit(neg_v)
        if neg_v.dim() == 2:
            return (q * pos_v).sum(dim=1), q @ neg_v.T
        # Broadcast multiply-sum, not bmm: B tiny [n, d]×[d, 1] products run slowly as a bmm.
        return (q * pos_v).sum(dim=1), (neg_v * q.unsqueeze(1)).sum(dim=2)

    def user_parameters(self) -> list[nn.Parameter]:
        return [self.user_emb]

    def item_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "user_emb"]


# name → model class, filled by @register_model: a new model is its class here or in a module
# imported before trainer.core.config (which builds TrainConfig.model's choices from this).
MODELS: dict[str, type[FactorModel]] = {}


def register_model(name: str):
    """Class decorator: TrainConfig(model=name) builds this FactorModel subclass."""

    def wrap(cls):
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        cls.name = name
        MODELS[name] = cls
        return cls

    return wrap


@register_model("mf")
class MF(FactorModel):
    """MF: r = p · q."""


@register_model("gmf")
class GMF(FactorModel):
    """GMF (He et al., NCF): r = h · (p ⊙ q), h initialised to ones so training starts as MF."""

    def __init__(
        self,
        num_users,
        num_items,
        dim,
        generator,
        init_std: float = 0.1,
        score: str = "dot",
        init: str = "normal",
    ):
        super().__init__(num_users, num_items, dim, generator, init_std, score, init)
        self.h = nn.Parameter(torch.ones(dim))

    def to_query(self, user_vectors):
        return user_vectors * self.h


def initial_table(
    rows: int, dim: int, generator: torch.Generator, init: str, std: float
) -> torch.Tensor:
    """A fresh [rows, dim] embedding table: `normal` N(0, std²) entries, or `xavier` Glorot
    uniform U(±√(6 / (rows + dim))) (nn.init.xavier_uniform_'s bound for this shape)."""
    if init == "normal":
        return torch.randn(rows, dim, generator=generator) * std
    if init == "xavier":
        bound = math.sqrt(6.0 / (rows + dim))
        return (torch.rand(rows, dim, generator=generator) * 2.0 - 1.0) * bound
    raise ValueError(f"unknown init {init!r}; choose 'normal' or 'xavier'")


def build_model(
    name: str,
    num_users: int,
    num_items: int,
    dim: int,
    seed: int,
    shard: np.ndarray | None = None,
    score: str = "dot",
    init: str = "normal",
    init_std: float = 0.1,
) -> FactorModel:
    """The model a one-process run starts from; with `shard` (sorted global user ids), only
    those users' rows, as local indices 0..len(shard)−1.

    The shard's model is cut from the full-size one rather than drawn at its own size: the item
    table is drawn after the user table from the same generator, so a model drawn at the shard's
    size would get an item table that depends on the shard's size, and Ray workers would start
    from different item tables (and never converge, since they apply the same averaged update).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    generator = torch.Generator().manual_seed(seed)
    model = MODELS[name](
        num_users, num_items, dim, generator, init_std=init_std, score=score, init=init
    )
    if shard is not None:
        rows = model.user_emb.detach()[torch.as_tensor(shard, dtype=torch.long)].clone()
        model.user_emb = nn.Parameter(rows)
        model.num_users = rows.shape[0]
    return model


def item_digest(model: FactorModel) -> str:
    """SHA-256 of the item-side parameters' bytes: equal digests mean bit-identical replicas."""
    h = hashlib.sha256()
    for p in model.item_parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
