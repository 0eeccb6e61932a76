"""Deterministic synthetic implicit feedback with latent structure and power-law popularity.

Each user draws her items without replacement from softmax((p_u·q_i)·signal/√d + α·log π_i),
π a Zipf law over items (Gumbel-top-k, chunked over users). The latent part rewards models
that learn it and hard negatives that find it; the popularity part gives a long tail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa

from trainer.data.formats import DataError, RawInteractions

# Bounds on what one machine generates (the interactions are held in memory while written):
# 10^7 users or items, 2·10^8 interactions (~5 GB of int64 pairs at the peak).
MAX_USERS = MAX_ITEMS = 10_000_000
MAX_DIM = 1024
MAX_PAIRS = 200_000_000


@dataclass(frozen=True)
class SyntheticSpec:
    users: int = 3000
    """Number of users."""
    items: int = 2000
    """Number of items."""
    dim: int = 16
    """Latent dimension of the generating model."""
    mean: float = 30.0
    """Mean interactions per user (log-normal, at least `minimum`)."""
    minimum: int = 8
    """Fewest interactions a user gets (so k-core filtering keeps nearly everyone)."""
    signal: float = 3.0
    """Scale of the latent affinity; larger = more predictable users."""
    zipf: float = 1.0
    """Exponent of the item popularity law π_i ∝ rank^(−zipf)."""
    alpha: float = 1.0
    """Weight of log-popularity in the choice logits."""
    seed: int = 0
    """Seed of the generator: same spec ⇒ same interactions."""

    @classmethod
    def parse(cls, text: str) -> SyntheticSpec:
        """'users=3000,items=2000,seed=1' → SyntheticSpec; unknown keys are errors."""
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or key not in known:
                raise DataError(f"--synthetic: cannot read {part!r}; keys are {sorted(known)}")
            try:
                values[key] = (int if known[key] in ("int", int) else float)(value)
            except ValueError:
                raise DataError(f"--synthetic: {key}={value!r} is not a number") from None
        spec = cls(**values)
        if spec.users < 1 or spec.items < 2 or spec.dim < 1 or spec.mean <= 0:
            raise DataError("--synthetic: needs users ≥ 1, items ≥ 2, dim ≥ 1, mean > 0")
        if not math.isfinite(spec.mean + spec.signal + spec.zipf + spec.alpha):
            raise DataError("--synthetic: mean, signal, zipf and alpha must be finite")
        limits = {"users": MAX_USERS, "items": MAX_ITEMS, "dim": MAX_DIM}
        for key, limit in limits.items():
            if getattr(spec, key) > limit:
                raise DataError(
                    f"--synthetic: {key}={getattr(spec, key)} is over the limit {limit:,}"
                )
        if spec.users * max(spec.mean, spec.minimum) > MAX_PAIRS:
            raise DataError(
                f"--synthetic: users × mean ≈ {spec.users * spec.mean:,.0f} "
                f"interactions is over the limit {MAX_PAIRS:,}"
            )
        return spec

    def describe(self) -> str:
        return ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


def generate(spec: SyntheticSpec, chunk_users: int = 512) -> RawInteractions:
    rng = np.random.default_rng(spec.seed)
    p = rng.standard_normal((spec.users, spec.dim)).astype(np.float32)
    q = rng.standard_normal((spec.items, spec.dim)).astype(np.float32)
    popularity = np.arange(1, spec.items + 1, dtype=np.float64) ** -spec.zipf
    item_bias = (spec.alpha * np.log(popularity / popularity.sum())).astype(np.float32)
    item_bias = item_bias[rng.permutation(spec.items)]  # popularity unrelated to item index
    sigma = 0.6
    counts = rng.lognormal(np.log(spec.mean) - sigma**2 / 2, sigma, spec.users)
    counts = np.clip(np.rint(counts), spec.minimum, spec.items - 1).astype(np.int64)
    scale = spec.signal / np.sqrt(spec.dim)
    users, items = [], []
    for start in range(0, spec.users, chunk_users):
        stop = min(start + chunk_users, spec.users)
        logits = (p[start:stop] @ q.T) * scale + item_bias
        gumbel = -np.log(-np.log(rng.random(logits.shape, dtype=np.float32) + 1e-12) + 1e-12)
        noisy = -(logits + gumbel)
        top = int(counts[start:stop].max())
        # Only the best `top` of each row matter: partition, then sort just those.
        part = np.argpartition(noisy, top - 1, axis=1)[:, :top]
        order = np.take_along_axis(part, np.argsort(np.take_along_axis(noisy, part, 1), 1), 1)
        take = np.arange(top) < counts[start:stop, None]  # each row's first counts[u]
        users.append(np.nonzero(take)[0] + start)
        items.append(order[take])
    u = np.concatenate(users)
    i = np.concatenate(items)
    return RawInteractions(
        pa.array(np.char.add("u", u.astype(str))), pa.array(np.char.add("i", i.astype(str))), None
    )
