"""Sampler options, validated once at the boundary (CLI, HTTP, Tune YAML).

Each sampler's module declares its options class, a subclass of `SamplerOptions` whose `name`
is a Literal of the names it registers, and passes it to `@register`. The sampler config of a
run is the discriminated union of those classes (`pools.registry.sampler_config_type`), so an
option a sampler does not read is refused instead of ignored. Shared fields and the field
groups several samplers use (pools, temperature) live here so their docstrings are written once.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

DEFAULT_SAMPLER = "adasir-u"
"""The sampler a config without a `name` gets (the paper's)."""


class SamplerOptions(BaseModel):
    """What every sampler takes. Defaults follow the paper (section 4)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str
    """Which sampler (each options class narrows this to the names it registers)."""

    num_negatives: int = Field(5, ge=1, le=100_000)
    """n: negatives drawn per training pair."""

    exclude_positives: bool = True
    """Never hand out one of the user's own train items as a negative (the authors' code does)."""

    @model_validator(mode="before")
    @classmethod
    def _only_own_options(cls, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                raise PydanticCustomError(
                    "extra_forbidden",
                    "Extra inputs are not permitted: {unknown}: sampler "
                    "'{name}' has none of these options (it takes {takes})",
                    {
                        "unknown": ", ".join(unknown),
                        "name": data.get("name"),
                        "takes": ", ".join(cls.model_fields),
                    },
                )
        return data

    def check_against_catalogue(self, num_items: int) -> None:
        """Refuse (ValueError naming the option) what only the catalogue's size rules out;
        called before training starts. Most samplers have nothing to check."""

    @model_validator(mode="after")
    def _keep_positives_supported(self):
        from pools.registry import capabilities_of  # the registry imports this module

        if not self.exclude_positives and not capabilities_of(self.name).can_keep_positives:
            raise ValueError(
                f"sampler {self.name!r} draws from non-positives only: "
                "exclude_positives=False (--keep-positives) is not supported"
            )
        return self


class TemperatureOptions(SamplerOptions):
    """Samplers that draw ∝ exp(r/τ)."""

    temperature: float = Field(1.0, gt=0.0, le=1e4)
    """τ in the sampler's softmax over scores, ∝ exp(r/τ − log Q). τ = 1 is the paper; larger τ
    gives softer, less 'hard' negatives."""


class ResampledOptions(TemperatureOptions):
    """Samplers that resample negatives ∝ w and hand the loss their log-weights."""

    weighting: Literal["paper", "reference", "none"] = "paper"
    """Eq. (1) weights over a pair's n negatives: `paper` softmax(r − log w), `reference`
    softmax(r + log w) (what the authors' code does), `none` a plain mean."""


def weighting_offset(log_w: torch.Tensor, weighting: str) -> torch.Tensor | None:
    """The logit offset Eq. (1) adds for resampling weights log w, under `weighting`."""
    return {"paper": -log_w, "reference": log_w, "none": None}[weighting]


class ChunkedRefreshOptions(SamplerOptions):
    """Samplers that rebuild per-user state in chunks of users."""

    refresh_chunk_users: int = Field(2048, ge=1)
    """Users scored together during a refresh: bounds memory at chunk × candidates scores."""
