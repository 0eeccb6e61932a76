"""Negative samplers for implicit-feedback recommenders: AdaSIR and its baselines.

Everything is batched tensor code on the device of the `InteractionIndex` it is built with.
"""

from pools.adasir import AdaSIRSampler
from pools.base import Capabilities, Negatives, NegativeSampler, ScoringModel
from pools.config import SamplerOptions
from pools.interactions import InteractionIndex
from pools.rank import estimate_rank, harmonic_table
from pools.registry import (
    build_sampler,
    capabilities_of,
    options_of,
    registered,
    sampler_config,
    sampler_config_type,
)

SAMPLER_NAMES: tuple[str, ...] = registered()

__all__ = [
    "AdaSIRSampler",
    "Capabilities",
    "InteractionIndex",
    "Negatives",
    "NegativeSampler",
    "SAMPLER_NAMES",
    "SamplerOptions",
    "ScoringModel",
    "build_sampler",
    "capabilities_of",
    "estimate_rank",
    "harmonic_table",
    "options_of",
    "registered",
    "sampler_config",
    "sampler_config_type",
]
