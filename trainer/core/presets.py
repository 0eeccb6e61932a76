"""Named starting points for a TrainConfig: its `preset` field, applied before the fields given,
the same wherever a config is made (TrainConfig(...), fit(), `adasir train`, POST /jobs, Tune).

- `recommended` (the default): what won on validation on the public
  Gowalla split and ml-1m (benchmarks/pages/default.md) — the bilateral softmax loss (BSL) over
  1,000 uniform negatives shared by each batch of 1,024 pairs, cosine scores, T = 0.08 on the
  negatives and T⁺ = 1.22·T on the positives, no L2, lazy (sparse) Adam at lr 0.01 halved
  after each validation without a new best, validation Recall@20 every 3 epochs, stopping
  after 3 without a new best (100 epochs at most); then a fresh model is trained on train +
  validation for the best epoch's count with the same lr schedule (`refit`).
- `paper`: TrainConfig's own defaults, the paper's protocol (AdaSIR-U, BPR, lr 0.001, 200
  epochs): the reproduction.

A preset is two parts, the loss and the sampler. Options a user gives override the preset's;
naming another sampler drops the preset's sampler options, and naming another loss drops its
loss options (score, temperatures, L2), so `--preset recommended --sampler dns` is DNS with its
own defaults under the preset's loss, not DNS with the preset's 1,000 shared negatives.
"""

from __future__ import annotations

import copy
from typing import Literal

PresetName = Literal["recommended", "paper"]
DEFAULT_PRESET: PresetName = "recommended"

PRESETS: dict[str, dict] = {
    "paper": {},
    "recommended": {
        "loss": "bsl",
        "score": "cosine",
        "loss_temperature": 0.08,
        "positive_temperature": 0.0976,
        "l2": 0.0,
        "lr": 0.01,
        "batch_size": 1024,
        "optimizer": "sparse-adam",
        "epochs": 100,
        "eval_every": 3,
        "early_stopping_patience": 3,
        "lr_decay_on_plateau": 0.5,
        "refit": True,
        "sampler": {"name": "uniform", "shared_negatives": True, "num_negatives": 1000},
    },
}

# The preset's loss part: dropped when the user names another loss.
_LOSS_PART = (
    "loss",
    "score",
    "loss_temperature",
    "positive_temperature",
    "l2",
    "contrastive_margin",
    "contrastive_weight",
)
# The sampler's τ was tuned to equal the loss's T on cosine scores (the proposal is then the
# softmax the loss estimates); under another loss it goes back to the sampler's default.
_LOSS_PART_OF_SAMPLER = ("temperature",)


def sampler_options(value) -> dict:
    """The sampler as given: a name ("adasir-u", what --sampler takes) or an object of
    sampler options ({"name": "adasir-u", "pool_size": 200})."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict):
        return dict(value)
    if hasattr(value, "model_dump"):  # an options object (pools/<module>.py)
        return value.model_dump()
    raise ValueError(
        f'sampler: give a sampler name (e.g. "adasir-u") or an object of sampler options, '
        f"not {'null' if value is None else type(value).__name__}"
    )


def resolve(preset: str, given: dict) -> dict:
    """The TrainConfig fields of `preset` overridden by `given` (a nested dict: sampler options
    under "sampler"), before validation."""
    base = copy.deepcopy(PRESETS[preset])
    mine = sampler_options(given["sampler"]) if "sampler" in given else {}
    preset_sampler = base.get("sampler", {})
    if "name" in mine and mine["name"] != preset_sampler.get("name", mine["name"]):
        base.pop("sampler", None)
    if "loss" in given and given["loss"] != base.get("loss", given["loss"]):
        for field in _LOSS_PART:
            base.pop(field, None)
        for field in _LOSS_PART_OF_SAMPLER:
            base.get("sampler", {}).pop(field, None)
    sampler = {**base.pop("sampler", {}), **mine}
    out = {**base, **{k: v for k, v in given.items() if k != "sampler"}}
    if sampler:
        out["sampler"] = sampler
    return out


def build_config(preset: str | None, given: dict):
    """The TrainConfig of the fields `given`, validated strictly as JSON: what a user sends
    (a --config file, POST /jobs, a Tune spec, keyword options) is never coerced —
    `"epochs": "1"`, `"dim": true` and `"diagnostics": "yes"` are refused, naming the field.
    `preset`: the preset named outside the fields (POST /jobs' and Tune's top-level `preset`,
    fit's keyword); None leaves it to `given` (default `recommended`), and naming two
    different ones is refused."""
    import json

    from trainer.core.config import TrainConfig

    given = dict(given)
    if preset is not None:
        if given.setdefault("preset", preset) != preset:
            raise ValueError(
                f"preset {preset!r} and train's preset {given['preset']!r} disagree: name it once"
            )
    try:
        text = json.dumps(given)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"options must be JSON values ({exc})") from None
    return TrainConfig.model_validate_json(text, strict=True)


def fit_to_data(config, num_items: int, given: dict, log=None):
    """A preset's negative count that the catalogue cannot hold (a catalogue of ≤ 5 items for
    `recommended`) becomes num_items − 1 (every other item); a count the user gave is left for
    check_against_data to refuse."""
    s = config.sampler
    user_set = "num_negatives" in sampler_options(given.get("sampler") or {})
    if user_set or s.num_negatives < num_items:
        return config
    n = max(1, num_items - 1)
    if log:
        log(
            f"note: the catalogue has {num_items} items, so each pair is ranked against the "
            f"{n} others instead of the preset's {s.num_negatives} negatives"
        )
    return config.model_copy(update={"sampler": s.model_copy(update={"num_negatives": n})})
