"""Training options, validated at the boundary. A config starts from its `preset`
(trainer/core/presets.py: `recommended` unless named), and the fields given override it; a
field neither sets keeps the default written here, the paper's (section 4)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pools.config import DEFAULT_SAMPLER, SamplerOptions
from pools.registry import sampler_config, sampler_config_type
from trainer.core.loss import LOSSES, loss_options
from trainer.core.models import MODELS
from trainer.core.presets import DEFAULT_PRESET, PRESETS, PresetName, resolve

# The choices come from the registries (a model, loss or sampler registers itself), so the
# type checker sees what they are made of: a name, and the options every sampler shares.
if TYPE_CHECKING:
    ModelName = str
    LossName = str
    SamplerConfig = SamplerOptions
else:
    ModelName = Literal[tuple(MODELS)]
    LossName = Literal[tuple(LOSSES)]
    SamplerConfig = sampler_config_type()


class TrainConfig(BaseModel):
    """One training run. `sampler` holds the negative-sampling options: one options class per
    sampler (pools/<module>.py), chosen by `sampler.name`."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    preset: PresetName = DEFAULT_PRESET
    """Where the options start (trainer/core/presets.py): `recommended` (what won on
    validation) or `paper` (the paper's protocol: the defaults written here). The fields given
    override it, so `TrainConfig(dim=4)`, `fit(df, dim=4)` and `adasir train --dim 4` are one
    configuration."""

    model: ModelName = "mf"
    """Scoring model: MF r = p·q, or GMF r = h·(p ⊙ q)."""

    dim: int = Field(32, ge=1, le=4096)
    """Embedding dimension d (paper: 32)."""

    init: Literal["normal", "xavier"] = "normal"
    """How the embedding tables start: `normal` N(0, init_std²) per entry; `xavier` Glorot
    uniform per table, U(±√(6 / (rows + d))) (BSL's published code): rows of norm about
    √(2d / rows), so far smaller on a large catalogue."""

    init_std: float = Field(0.1, gt=0.0, le=10.0)
    """The standard deviation of the `normal` init."""

    user_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the user's raw embedding in the training loss (before a cosine normalises
    it; kept entries scaled by 1/(1 − rate)), as BSL's published run does with 0.1. Training
    only: the sampler's scores, evaluation, fold-in and serving use the whole vector."""

    lr: float = Field(0.001, gt=0.0, le=10.0)
    """Adam learning rate (paper: 0.001; the authors' code: 0.01)."""

    l2: float = Field(0.001, ge=0.0, le=100.0)
    """λ: L2 on the embeddings each batch touches, Σ||e||²/B (paper tunes {0.1 … 0.0001})."""

    loss: LossName = "bpr"
    """`bpr`: the paper's weighted pairwise loss, Eq. (1)/(3). `softmax`: sampled softmax over
    the positive and its negatives, corrected by the sampler's log-proposal (trainer/core/loss.py).
    `bsl`: the bilateral softmax loss, −r⁺/T⁺ + log mean_j e^{r⁻_j/T} (trainer/core/loss.py).
    `contrastive`: CCL (SimpleX), max(0, 1 − r⁺) + w·mean max(0, r⁻ − m); use with cosine."""

    score: Literal["dot", "cosine"] = "dot"
    """`dot`: r = query·v (the paper). `cosine`: r = cos(query, v), everywhere the model scores
    (training, sampling, evaluation, serving)."""

    loss_temperature: float = Field(1.0, gt=0.0, le=1e4)
    """T: scores are divided by T in the `softmax` and `bpr` losses (T = 1 is the paper's BPR).
    With cosine scores in [−1, 1] a small T (0.05–0.2) is what makes the loss sharp."""

    positive_temperature: float | None = Field(None, gt=0.0, le=1e4)
    """T⁺ of the `bsl` loss: the positive side's temperature (None: T, the plain sampled
    softmax without the positive in its normaliser; BSL's authors use about 1.2·T)."""

    positive_pooling: Literal["pair", "user"] = "pair"
    """The `bsl` loss's positive side. `pair`: each row's own, −r⁺/T⁺. `user`: pooled over
    the batch's rows of the same user, −(T/T⁺)·log mean_b e^{r⁺_b/T} (BSL's `multi` mode);
    the same as `pair` for a user with one row in the batch."""

    contrastive_margin: float = Field(0.5, ge=-1.0, le=1.0)
    """m of the contrastive loss: a negative's cosine below m costs nothing."""

    contrastive_weight: float = Field(1.0, gt=0.0, le=1e4)
    """w of the contrastive loss: weight of the negatives' mean term."""

    confidence: Literal["none", "linear", "log"] = "none"
    """How strongly each positive pair counts, from its rating (implicit's ALS confidence):
    `linear` c = 1 + α·r, `log` c = 1 + α·log(1 + r); each pair's loss is multiplied by its c
    over the batch's mean c, so the learning rate and L2 keep their meaning. `none`: every
    pair counts once (ratings, where the data has them, are information). Needs a dataset
    prepared from input with a rating column (a count, a rating, a dwell time)."""

    confidence_alpha: float = Field(1.0, gt=0.0, le=1e6)
    """α of `confidence`."""

    optimizer: Literal["adam", "sparse-adam"] = "adam"
    """`adam`: dense Adam over every parameter each step (the paper's setting). `sparse-adam`:
    lazy Adam on the embedding tables — only the rows a batch touches are updated (their
    moments too) — plus dense Adam on the rest (GMF's h). Much faster when tables are large."""

    batch_size: int = Field(4096, ge=1, le=1 << 22)
    """Positive pairs per step (paper: 4096)."""

    pair_sampling: Literal["pairs", "users"] = "pairs"
    """How an epoch's training pairs are drawn. `pairs`: a permutation of the train pairs (each
    once). `users`: as many draws of a user chosen uniformly, then one of their train items
    (LightGCN's sampler): light users weigh as much as heavy ones, as in per-user metrics."""

    epochs: int = Field(200, ge=1)
    """Training epochs (paper: 200)."""

    eval_every: int = Field(10, ge=1)
    """Validation every this many epochs (and after the last)."""

    early_stopping_patience: int = Field(0, ge=0, le=10_000)
    """Stop after this many validations without a new best `early_stopping_metric` (0: train
    every epoch); `epochs` is then the cap. The checkpoint and the test metrics are the best
    validated epoch's (metrics.json: `early_stopping.best_epoch`)."""

    lr_decay_on_plateau: float = Field(1.0, gt=0.0, le=1.0)
    """After a validation without a new best `early_stopping_metric`, multiply the learning
    rate by this (1: a constant rate)."""

    early_stopping_metric: str = "recall@20"
    """The validation metric early stopping watches: ndcg@k or recall@k, k in `topk`."""

    init_from: str | None = Field(None, min_length=1)
    """Warm start: the model (a run directory or its checkpoint) trained on an earlier copy of
    this dataset whose rows start the users and items it knew, matched by external id; new
    ones are initialised afresh (trainer/core/warm_start.py). Same model and dim. None: a
    fresh model."""

    @field_validator("init_from")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        """Resolved where the config is made: Ray's workers run in another directory."""
        return os.path.abspath(v) if v else v

    refit: bool = False
    """Once early stopping has chosen the best epoch on validation, train a fresh model on
    train + validation for that many epochs with the same learning-rate schedule, and keep it
    (the held-out pairs are data too), in-process and under Ray alike. metrics.json: `refit`,
    and `before_refit` with the validated model's test metrics."""

    eval_users: int | None = Field(None, ge=0)
    """Users ranked at each evaluation. None: every user, unless users × items is over 2·10¹⁰
    (then 10,000); 0: every user; N: a fixed seeded sample of N users, the same every epoch and
    on every worker. A sample's metrics come with 95% intervals (`valid_sample`, `test_sample`
    in metrics.json)."""

    valid_users: int | None = Field(None, ge=0)
    """Users ranked at each validation early stopping watches. None: a fixed seeded sample of
    10,000 users where a full validation would cost more than all the training between two
    validations (estimated from users × items against train pairs and negatives: a rule of
    the data and options, not of the machine, so a command trains the same model anywhere),
    else as `eval_users`; 0: as `eval_users`; N: a sample of N. When it is a sample, the model
    early stopping keeps is validated in full once more, at the end (`valid_full` in that
    epoch's record of metrics.json)."""

    topk: tuple[int, ...] = (10, 20, 50)
    """Cut-offs of NDCG@k and Recall@k."""

    seed: int = 0
    """Seeds model init, shuffling and sampling (explicit torch.Generators, no global state)."""

    device: Literal["cpu", "cuda"] = "cpu"
    """Where all training tensors live."""

    compile: Literal["auto", "on", "off"] = "auto"
    """Train on the step compiled by torch.compile (trainer/core/fused_step.py: the default's
    bilateral softmax over shared negatives with MF and lazy Adam as one fused pass; other
    recipes their loss and its backward). "auto": compiled on a run of at least 20,000 steps,
    where the compile's first cost pays back (docs/decisions.md); "on": always; "off": never.
    A failed compile trains eagerly and says why in one line."""

    diagnostics: bool = False
    """Record per epoch how hard, how stale and how often falsely negative the sampler's
    negatives are (trainer/core/diagnostics.py) under each epoch's `negatives` in metrics.json."""

    sampler: SamplerConfig = sampler_config()
    """Negative sampling options (without a `name`: the paper's adasir-u)."""

    @model_validator(mode="before")
    @classmethod
    def _start_from_preset(cls, data):
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", DEFAULT_PRESET)
        if preset not in PRESETS:
            return data  # the field refuses it, listing the presets
        return {**resolve(preset, data), "preset": preset}

    @field_validator("sampler", mode="before")
    @classmethod
    def _default_sampler_name(cls, v):
        if isinstance(v, dict) and "name" not in v:
            return {"name": DEFAULT_SAMPLER} | v
        return v

    @model_validator(mode="after")
    def _loss_fits_sampler(self):
        s, spec = self.sampler, LOSSES[self.loss]
        weighting = getattr(s, "weighting", "paper")
        if not spec.weights_negatives and weighting != "paper":
            raise ValueError(
                f"weighting={weighting!r} weights the BPR loss's negatives; the "
                f"{self.loss} loss has its own (use weighting='paper' or loss='bpr')"
            )
        if self.loss != "bpr" and getattr(s, "warp_loss", None) == "hinge":
            raise ValueError("warp_loss='hinge' is WARP's own loss: use it with loss='bpr'")
        return self

    @model_validator(mode="after")
    def _loss_options_read(self):
        ignored = loss_options() - set(LOSSES[self.loss].options)
        for option in sorted(ignored):
            if getattr(self, option) != type(self).model_fields[option].default:
                raise ValueError(
                    f"{option} is not read by loss={self.loss!r}; drop it or "
                    f"choose a loss that reads it"
                )
        return self

    @model_validator(mode="after")
    def _early_stopping_metric_known(self):
        known = [f"{m}@{k}" for m in ("ndcg", "recall") for k in self.topk]
        if self.early_stopping_metric not in known:
            raise ValueError(
                f"early_stopping_metric {self.early_stopping_metric!r} is not "
                f"computed; choose one of {', '.join(known)} (topk sets the k)"
            )
        return self

    @field_validator("topk", mode="before")
    @classmethod
    def _list_as_tuple(cls, v):
        return tuple(v) if isinstance(v, list) else v  # JSON has no tuple

    @field_validator("topk")
    @classmethod
    def _positive_k(cls, v):
        if not v or any(k < 1 for k in v):
            raise ValueError("topk needs at least one k ≥ 1")
        return tuple(sorted(set(v)))


def check_against_data(
    config: TrainConfig, num_users: int, num_items: int, has_ratings: bool
) -> None:
    """What a config can only be checked against once the dataset is known (before any
    training or Ray worker starts): raises ValueError naming the option. A warm start's
    model is read and checked too."""
    check_against_catalogue(config, num_items)
    check_confidence(config, has_ratings)
    if config.init_from:
        from trainer.core.warm_start import load_source

        load_source(config.init_from, config.model, config.dim)  # a model that can seed this


def check_confidence(config: TrainConfig, has_ratings: bool) -> None:
    """Refuse a confidence (pair weights from ratings) on a dataset without ratings."""
    if config.confidence != "none" and not has_ratings:
        raise ValueError(
            f"confidence {config.confidence!r} weights pairs by their ratings, and the dataset "
            "has none: give it a rating column (a file's rating, score or value; a "
            "DataFrame's rating), or leave confidence at 'none'"
        )


def check_against_catalogue(config: TrainConfig, num_items: int) -> None:
    """check_against_data's checks of the options against the catalogue's size (what an
    Engine checks; it reads a warm start's model itself)."""
    s: SamplerOptions = config.sampler
    if num_items < 2:
        raise ValueError(
            f"the dataset has {num_items} item: training ranks a positive above other items, "
            "so it needs at least 2"
        )
    if s.num_negatives >= num_items:
        raise ValueError(
            f"--negatives {s.num_negatives}: the dataset has {num_items} items, so "
            f"a pair has at most {num_items - 1} other items to draw from"
        )
    s.check_against_catalogue(num_items)
