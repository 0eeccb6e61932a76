"""Training options, validated at the boundary. Defaults follow the paper (section 4)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pools.config import SamplerConfig


class TrainConfig(BaseModel):
    """One training run. `sampler` holds the negative-sampling options."""

    model_config = ConfigDict(extra="forbid")

    model: Literal["mf", "gmf"] = "mf"
    """Scoring model: MF r = p·q, or GMF r = h·(p ⊙ q)."""

    dim: int = Field(32, ge=1, le=4096)
    """Embedding dimension d (paper: 32)."""

    lr: float = Field(0.001, gt=0.0, le=10.0)
    """Adam learning rate (paper: 0.001; the authors' code: 0.01)."""

    l2: float = Field(0.001, ge=0.0, le=100.0)
    """λ: L2 on the embeddings each batch touches, Σ||e||²/B (paper tunes {0.1 … 0.0001})."""

    optimizer: Literal["adam", "sparse-adam"] = "adam"
    """`adam`: dense Adam over every parameter each step (the paper's setting). `sparse-adam`:
    lazy Adam on the embedding tables — only the rows a batch touches are updated (their
    moments too) — plus dense Adam on the rest (GMF's h). Much faster when tables are large."""

    batch_size: int = Field(4096, ge=1)
    """Positive pairs per step (paper: 4096)."""

    epochs: int = Field(200, ge=1)
    """Training epochs (paper: 200)."""

    eval_every: int = Field(10, ge=1)
    """Validation every this many epochs (and after the last)."""

    topk: tuple[int, ...] = (10, 20, 50)
    """Cut-offs of NDCG@k and Recall@k."""

    seed: int = 0
    """Seeds model init, shuffling and sampling (explicit torch.Generators, no global state)."""

    device: Literal["cpu", "cuda"] = "cpu"
    """Where all training tensors live."""

    sampler: SamplerConfig = SamplerConfig()
    """Negative sampling options."""

    @field_validator("topk")
    @classmethod
    def _positive_k(cls, v):
        if not v or any(k < 1 for k in v):
            raise ValueError("topk needs at least one k ≥ 1")
        return tuple(sorted(set(v)))
