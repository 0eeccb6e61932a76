"""Build a sampler by name."""

from __future__ import annotations

import torch

from pools.adasir import AdaSIRSampler
from pools.aobpr import AOBPRSampler
from pools.base import NegativeSampler
from pools.config import SamplerConfig
from pools.interactions import InteractionIndex
from pools.irgan import IRGANSampler
from pools.kernel import KernelSampler
from pools.proposals import PopularityProposal, UniformProposal
from pools.replicas import Replicas
from pools.srns import SRNSSampler
from pools.static import DNSSampler, PRISSampler, ProposalSampler, SoftmaxSampler
from pools.warp import WARPSampler

# name → (sampler class, proposal, extra keyword arguments)
_REGISTRY: dict[str, tuple[type[NegativeSampler], str, dict]] = {
    "uniform": (ProposalSampler, "uniform", {}),
    "popularity": (ProposalSampler, "popularity", {}),
    "softmax": (SoftmaxSampler, "uniform", {}),
    "dns": (DNSSampler, "uniform", {}),
    "pris-u": (PRISSampler, "uniform", {}),
    "pris-p": (PRISSampler, "popularity", {}),
    "adasir-u": (AdaSIRSampler, "uniform", {}),
    "adasir-p": (AdaSIRSampler, "popularity", {}),
    "adasir-w": (AdaSIRSampler, "uniform", {"rank_weighted": True}),
    "warp": (WARPSampler, "uniform", {}),
    "aobpr": (AOBPRSampler, "uniform", {}),
    "kernel": (KernelSampler, "uniform", {}),
    "srns": (SRNSSampler, "uniform", {}),
    "irgan": (IRGANSampler, "uniform", {}),
}


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
    cls, proposal_name, extra = _REGISTRY[config.name]
    if proposal_name == "uniform":
        proposal = UniformProposal(positives.num_items, positives.device)
    else:
        proposal = PopularityProposal(item_counts.to(positives.device))
    return cls(config, positives.num_users, positives.num_items, positives, proposal, replicas,
               **extra)
