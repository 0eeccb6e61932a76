"""Samplers register themselves here; the sampler config type is built from what registered.

A sampler is one module: its `NegativeSampler` subclass, its `SamplerOptions` subclass, and
`@register(name, proposal, options=...)`. The built-in modules are imported on first use;
a third-party package adds its own through the `adasir.samplers` entry-point group (each entry
a module that registers on import).
"""

from __future__ import annotations

import functools
import typing
from importlib.metadata import entry_points
from typing import Annotated, Union

import torch
from pydantic import ConfigDict, Field, TypeAdapter

from pools.base import NegativeSampler
from pools.config import DEFAULT_SAMPLER, SamplerOptions
from pools.interactions import InteractionIndex
from pools.proposals import PopularityProposal, Proposal, UniformProposal
from pools.replicas import Replicas


class _Entry(typing.NamedTuple):
    cls: type[NegativeSampler]
    proposal: str
    options: type[SamplerOptions]
    extra: dict
    order: float


_REGISTRY: dict[str, _Entry] = {}


def register(
    name: str,
    proposal: str = "uniform",
    *,
    options: type[SamplerOptions],
    order: float = 1000.0,
    **extra,
):
    """Class decorator: `name` builds this class with that proposal ("uniform" or
    "popularity"), options class and keyword arguments. `options.name` must accept `name`;
    `order` places it in listings and tables (the built-ins: the paper's Table 2 order)."""

    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(f"sampler {name!r} is registered twice")
        if name not in typing.get_args(options.model_fields["name"].annotation):
            raise TypeError(f"{options.__name__}.name does not accept {name!r}")
        _REGISTRY[name] = _Entry(cls, proposal, options, extra, order)
        return cls

    return wrap


def registered() -> tuple[str, ...]:
    """Every sampler name, in listing order."""
    _load_plugins()
    return tuple(sorted(_REGISTRY, key=lambda name: _REGISTRY[name].order))


def options_of(name: str) -> type[SamplerOptions]:
    """The options class of the sampler registered as `name`."""
    _load_plugins()
    return _REGISTRY[name].options


def capabilities_of(name: str):
    """What the sampler registered as `name` declares at class level (before it is built)."""
    _load_plugins()
    entry = _REGISTRY[name]
    return entry.cls.declared(**entry.extra)


@functools.cache
def _load_plugins() -> None:
    """Import the built-in samplers' modules and the installed plug-ins (each registers itself
    on import)."""
    from pools import adasir, aobpr, irgan, kernel, sir, srns, static, warp  # noqa: F401

    for entry in entry_points(group="adasir.samplers"):
        entry.load()


@functools.cache
def sampler_config_type():
    """Annotated[Union[every registered options class], discriminated by `name`]."""
    _load_plugins()
    classes = tuple(dict.fromkeys(_REGISTRY[name].options for name in registered()))
    return Annotated[Union[classes], Field(discriminator="name")]  # noqa: UP007


@functools.cache
def _adapter() -> TypeAdapter:
    return TypeAdapter(sampler_config_type(), config=ConfigDict(title="SamplerConfig"))


def sampler_config(**fields) -> SamplerOptions:
    """A validated sampler config: the options class of `fields["name"]` (default: the paper's
    AdaSIR-U) built from `fields`. Unknown names and options a sampler does not take raise
    pydantic's ValidationError (a ValueError)."""
    return _adapter().validate_python({"name": DEFAULT_SAMPLER} | fields)


def build_sampler(
    config: SamplerOptions | str,
    positives: InteractionIndex,
    item_counts: torch.Tensor,
    replicas: Replicas | None = None,
) -> NegativeSampler:
    """A sampler for the users and items of `positives` (the train pairs it must avoid).

    item_counts [num_items]: train interactions per item, for the popularity proposal.
    replicas: how data-parallel workers keep replicated sampler state identical (None: one process).
    """
    if isinstance(config, str):
        config = sampler_config(name=config)
    entry = _REGISTRY[config.name]
    proposal: Proposal
    if entry.proposal == "uniform":
        proposal = UniformProposal(positives.num_items, positives.device)
    else:
        proposal = PopularityProposal(item_counts.to(positives.device))
    return entry.cls(
        config,
        positives.num_users,
        positives.num_items,
        positives,
        proposal,
        replicas,
        **entry.extra,
    )
