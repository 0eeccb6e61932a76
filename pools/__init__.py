"""Negative samplers for implicit-feedback recommenders: AdaSIR and its baselines.

Everything is batched tensor code on the device of the `InteractionIndex` it is built with.
"""

from pools.adasir import AdaSIRSampler
from pools.base import Negatives, NegativeSampler, ScoringModel
from pools.config import SAMPLER_NAMES, SamplerConfig
from pools.interactions import InteractionIndex
from pools.rank import estimate_rank, harmonic_table
from pools.registry import build_sampler

__all__ = [
    "AdaSIRSampler",
    "InteractionIndex",
    "Negatives",
    "NegativeSampler",
    "SAMPLER_NAMES",
    "SamplerConfig",
    "ScoringModel",
    "build_sampler",
    "estimate_rank",
    "harmonic_table",
]
