"""Command-line flags generated from TrainConfig and every sampler's options class, so every
field has one.

Each field `some_field` becomes `--some-field` (booleans `--some-field/--no-some-field`,
Literal fields with their choices), its docstring the help. A sampler field shared by several
options classes is one flag; one the chosen sampler does not take is refused by validation.
ALIASES keeps the short names the docs and the paper use; NEGATIONS the two historical
switches. Parsing gives a nested dict that pydantic then validates, the same dict `--config`,
POST /jobs and Tune's `fixed` hold.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Literal

from pydantic.fields import FieldInfo

from pools.registry import options_of, registered
from trainer.core.config import TrainConfig

# flag → field path (the sampler's fields live under "sampler.").
ALIASES = {"negatives": "sampler.num_negatives", "candidates": "sampler.num_candidates"}
NEGATIONS = {"no-reuse": "sampler.reuse_pool", "keep-positives": "sampler.exclude_positives"}
_SKIPPED = {"sampler", "topk"}  # the nested config itself; a tuple (set it with --config)


def _fields() -> dict[str, FieldInfo | None]:
    """field path → pydantic FieldInfo: TrainConfig's, then every sampler options class's (the
    first class to declare a field gives its help; `sampler.name` lists every sampler)."""
    out: dict[str, FieldInfo | None] = {
        name: f for name, f in TrainConfig.model_fields.items() if name not in _SKIPPED
    }
    out["sampler.name"] = None
    for name in registered():
        for field_name, f in options_of(name).model_fields.items():
            out.setdefault(f"sampler.{field_name}", f)
    return out


def _add_sampler_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--sampler",
        dest="cfg:sampler.name",
        default=None,
        choices=registered(),
        help="the negative sampler (its options: pools/<module>.py)",
    )


def _flag_of(path: str) -> str:
    if path == "sampler.name":
        return "sampler"
    name = path.removeprefix("sampler.")
    flag = name.replace("_", "-")
    return (
        f"sampler-{flag}"
        if path.startswith("sampler.") and name in TrainConfig.model_fields
        else flag
    )


def _kind(annotation) -> dict:
    """argparse keywords for a field's annotation."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return {"choices": list(typing.get_args(annotation))}
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _kind(inner[0])
    return {"type": annotation}


def add_config_flags(ap: argparse.ArgumentParser) -> None:
    by_path = {path: flag for flag, path in ALIASES.items()}
    _add_sampler_flag(ap)
    for path, field in _fields().items():
        if field is None:
            continue
        names = [f"--{_flag_of(path)}"]
        if path in by_path:
            names.insert(0, f"--{by_path[path]}")
        help_text = (field.description or "").split(". ")[0].replace("%", "%%")
        kind = _kind(field.annotation)
        if "type" in kind:
            kind["metavar"] = path.rsplit(".", 1)[-1].upper()
        ap.add_argument(*names, dest=f"cfg:{path}", default=None, help=help_text, **kind)
    for flag, path in NEGATIONS.items():
        ap.add_argument(
            f"--{flag}",
            dest=f"cfg:{path}",
            action="store_const",
            const=False,
            default=None,
            help=f"{path} = false",
        )


def config_overrides(args: argparse.Namespace) -> dict:
    """The config fields given on the command line, as a nested dict."""
    top: dict = {}
    for dest, value in vars(args).items():
        if not dest.startswith("cfg:") or value is None:
            continue
        path = dest.removeprefix("cfg:")
        if path.startswith("sampler."):
            top.setdefault("sampler", {})[path.removeprefix("sampler.")] = value
        else:
            top[path] = value
    return top


def to_flags(config: TrainConfig) -> list[str]:
    """The flags that rebuild `config`: its preset, its loss and sampler (naming another than
    the preset's drops that part of the preset), then every field off what those three give."""
    base = {"preset": config.preset, "loss": config.loss, "sampler": config.sampler.name}
    out = ["--preset", config.preset, "--loss", config.loss, "--sampler", config.sampler.name]
    dumped, defaults = config.model_dump(), TrainConfig(**base).model_dump()
    sampler_fields = type(config.sampler).model_fields
    for path in _fields():
        name = path.removeprefix("sampler.")
        if path in ("sampler.name", "preset", "loss"):
            continue
        if path.startswith("sampler."):
            if name not in sampler_fields:
                continue
            value, default = dumped["sampler"][name], defaults["sampler"][name]
        else:
            value, default = dumped[path], defaults[path]
        if value == default:
            continue
        flag = f"--{_flag_of(path)}"
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{flag[2:]}")
        else:
            out += [flag, str(value)]
    return out
