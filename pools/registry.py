"""Build a sampler by name."""

from __future__ import annotations

import torch

from pools.base import NegativeSampler
from pools.config import SamplerConfig
from pools.interactions import InteractionIndex
from pools.proposals import PopularityProposal, UniformProposal
from pools.replicas import Replicas

# name → (sampler class, proposal, extra keyword arguments), filled by @register in each
# sampler's module: adding a sampler is its module (and its name in SamplerName) plus its test.
_REGISTRY: dict[str, tuple[type[NegativeSampler], str, dict]] = {}


def register(name: str, proposal: str = "uniform", **extra):
    """Class decorator: `name` builds this class with that proposal and keyword arguments."""
    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(f"sampler {name!r} is registered twice")
        _REGISTRY[name] = (cls, proposal, extra)
        return cls
    return wrap


def registered() -> tuple[str, ...]:
    _load_builtin()
    return tuple(_REGISTRY)


def capabilities_of(name: str):
    """What the sampler registered as `name` declares at class level (before it is built)."""
    _load_builtin()
    cls, _, extra = _REGISTRY[name]
    return cls.declared(**extra)


def _load_builtin() -> None:
    """Import the built-in samplers' modules (each registers itself on import)."""
    from pools import adasir, aobpr, irgan, kernel, srns, static, warp  # noqa: F401


def build_sampler(
    config: SamplerConfig | str,
    positives: InteractionIndex,
    item_counts: torch.Tensor,
    replicas: Replicas | None = None,
) -> NegativeSampler:
    """A sampler for the users and items of `positives` (the train pairs it must avoid).

    item_counts [num_items]: train interactions per item, for the popularity proposal.
    replicas: how data-parallel workers keep replicated sampler state identical (None: one process).
    """
    if isinstance(config, str):
        config = SamplerConfig(name=config)
    _load_builtin()
    cls, proposal_name, extra = _REGISTRY[config.name]
    if proposal_name == "uniform":
        proposal = UniformProposal(positives.num_items, positives.device)
    else:
        proposal = PopularityProposal(item_counts.to(positives.device))
    return cls(config, positives.num_users, positives.num_items, positives, proposal, replicas,
               **extra)
