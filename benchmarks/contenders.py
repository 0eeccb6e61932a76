"""Loss × sampler × score configurations ("contenders"), tuned on validation like Table 2.

Each contender fixes some TrainConfig fields and tunes others by coordinate search: the first
field's values with the rest at their first value, then the next field at the best so far, and
so on (Table 2 does the same for L2 then τ). The choice is made on validation NDCG@50 with the
first seed; the choice is then run on every seed. Dotted names (`sampler.num_negatives`) set
sampler fields. Runs share Table 2's cache (OUT/table2-<model>/runs.jsonl).
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field

import torch

from benchmarks.report_utils import mean_sd
from benchmarks.samplers import RunCache
from trainer.core.config import TrainConfig
from trainer.data.dataset import PreparedData


@dataclass(frozen=True)
class Contender:
    fixed: dict
    """TrainConfig fields this configuration sets (dotted for sampler fields)."""
    search: list[tuple[str, list]] = field(default_factory=list)
    """(field, values) tuned in this order on validation; the first value is the start."""
    about: str = ""


def _softmax_adasir_b5(**sampler) -> dict:
    """The default's loss (softmax, cosine, T = 0.2, no L2) over `adasir-b` draws, 5 per pair
    unless `num_negatives` says otherwise, with these sampler options."""
    return {
        "loss": "softmax",
        "score": "cosine",
        "l2": 0.0,
        "loss_temperature": 0.2,
        "sampler.name": "adasir-b",
        "sampler.num_negatives": 5,
    } | {f"sampler.{name}": value for name, value in sampler.items()}


# n = 1000 shared negatives is a third of ml-1m's catalogue and 2.5% of Gowalla's.
_SHARED = {
    "sampler.name": "uniform",
    "sampler.num_negatives": 1000,
    "sampler.shared_negatives": True,
}

CONTENDERS: dict[str, Contender] = {
    "bpr+uniform": Contender(
        {"sampler.name": "uniform"},
        [("l2", [0.01, 0.001, 0.1, 0.0001])],
        "Table 2's uniform BPR (AdaSIR's baseline), L2 searched as there",
    ),
    "bpr+dns": Contender(
        {"sampler.name": "dns"},
        [("l2", [0.01, 0.001, 0.1])],
        "Table 2's leader: BPR with DNS negatives",
    ),
    "bpr+adasir-u+max": Contender(
        {"sampler.name": "adasir-u", "sampler.pool_pick": "max"},
        [("l2", [0.01, 0.001]), ("sampler.pool_pick_candidates", [4, 10, 2])],
        "AdaSIR-U pools, each negative the best-scored now of m pool entries",
    ),
    "bpr+adasir-u+reweight": Contender(
        {"sampler.name": "adasir-u", "sampler.pool_pick": "reweight"},
        [
            ("l2", [0.01, 0.001]),
            ("sampler.temperature", [1.0, 0.5, 0.25]),
            ("sampler.pool_pick_candidates", [4, 10]),
        ],
        "AdaSIR-U pools, each negative resampled from m entries by exp((r_now − r_then)/τ)",
    ),
    "bpr+adasir-u+wide": Contender(
        {
            "sampler.name": "adasir-u",
            "sampler.shared_candidates": True,
            "sampler.num_candidates": 2000,
        },
        [
            ("l2", [0.01, 0.001]),
            ("sampler.temperature", [1.0, 0.5, 0.25]),
            ("sampler.pool_size", [200, 1000]),
        ],
        "AdaSIR-U with |K| = 2000 candidates shared per chunk of users (one GEMM)",
    ),
    "bpr+adasir-u+wide+reweight": Contender(
        {
            "sampler.name": "adasir-u",
            "sampler.shared_candidates": True,
            "sampler.num_candidates": 2000,
            "sampler.pool_pick": "reweight",
        },
        [
            ("l2", [0.01]),
            ("sampler.temperature", [1.0, 2.0]),
            ("sampler.pool_pick_candidates", [4, 10]),
        ],
        "wide AdaSIR-U pools, negatives reweighted for staleness at draw time",
    ),
    "bpr+adasir-u+wide+distinct": Contender(
        {
            "sampler.name": "adasir-u",
            "sampler.shared_candidates": True,
            "sampler.num_candidates": 2000,
            "sampler.pool_distinct": True,
        },
        [("l2", [0.01]), ("sampler.temperature", [1.0, 0.5, 0.25])],
        "wide AdaSIR-U pools of 200 distinct items from |K| = 2000",
    ),
    "bpr+adasir-u+fresh": Contender(
        {"sampler.name": "adasir-u"},
        [
            ("l2", [0.01]),
            ("sampler.refreshes_per_epoch", [4, 10]),
            ("sampler.pool_pick", ["uniform", "reweight"]),
        ],
        "AdaSIR-U pools resampled several times an epoch",
    ),
    "bpr+adasir-u+wide+fresh": Contender(
        {
            "sampler.name": "adasir-u",
            "sampler.shared_candidates": True,
            "sampler.num_candidates": 2000,
        },
        [
            ("l2", [0.01]),
            ("sampler.refreshes_per_epoch", [4, 10]),
            ("sampler.temperature", [1.0, 0.5]),
        ],
        "wide AdaSIR-U pools (|K| = 2000, shared) resampled several times an epoch",
    ),
    "bpr+adasir-b": Contender(
        {"sampler.name": "adasir-b"},
        [
            ("l2", [0.01, 0.001]),
            ("sampler.temperature", [1.0, 0.5]),
            ("sampler.group_users", [16, 64]),
            ("sampler.num_candidates", [200, 100]),
        ],
        "AdaSIR's resampling at every step for the batch's users (|K| candidates per group of "
        "users, one batched GEMM), no pools: the freshness of DNS, the weights of Eq. (1)",
    ),
    "bpr+adasir-b+ess": Contender(
        {"sampler.name": "adasir-b"},
        [("sampler.ess_target", [0.5, 0.2, 0.05]), ("l2", [0.01, 0.001])],
        "adasir-b with adaptive hardness: τ steered every step to a target ESS of w",
    ),
    "bpr+adasir-b+hard": Contender(
        {"sampler.name": "adasir-b", "sampler.weighting": "none"},
        [("sampler.temperature", [0.5, 0.25, 0.1]), ("l2", [0.01, 0.001])],
        "adasir-b made harder (τ < 1) without Eq. (1)'s weights, which at τ < 1 favour the "
        "pair's easier negatives (softmax(r − log w) = softmax((1 − 1/τ)·r))",
    ),
    "softmax+shared1000+cosine": Contender(
        {"loss": "softmax", "score": "cosine", **_SHARED},
        [("loss_temperature", [0.2, 0.1, 0.3, 0.05, 0.5]), ("l2", [0.0, 0.001, 0.01])],
        "sampled softmax over 1000 uniform negatives shared by the batch, cosine scores",
    ),
    "softmax+shared1000+dot": Contender(
        {"loss": "softmax", **_SHARED},
        [("l2", [0.01, 0.001, 0.1]), ("loss_temperature", [1.0, 0.5, 2.0])],
        "sampled softmax over 1000 shared uniform negatives, dot scores",
    ),
    "contrastive+shared1000+cosine": Contender(
        {"loss": "contrastive", "score": "cosine", **_SHARED},
        [
            ("contrastive_margin", [0.5, 0.3]),
            ("contrastive_weight", [1.0, 10.0]),
            ("l2", [0.0, 0.001]),
        ],
        "CCL (SimpleX) over 1000 shared uniform negatives, cosine scores",
    ),
    "softmax+adasir-u+cosine": Contender(
        {
            "loss": "softmax",
            "score": "cosine",
            "l2": 0.0,
            "loss_temperature": 0.2,
            "sampler.name": "adasir-u",
            "sampler.shared_candidates": True,
            "sampler.num_candidates": 2000,
        },
        [("sampler.temperature", [0.2, 0.5]), ("sampler.num_negatives", [50, 20])],
        "sampled softmax over n negatives per pair from wide AdaSIR-U pools resampled at the "
        "cosine scale (log-proposal |K|·Q·w), cosine scores: the pools approximate the softmax "
        "the loss estimates, the proposal with the least variance",
    ),
    "softmax+adasir-b5k200+cosine": Contender(
        _softmax_adasir_b5(num_candidates=200),
        [("sampler.temperature", [0.2, 0.5])],
        "softmax+adasir-b5+cosine at adasir-b's default |K| = 200: the cheaper end",
    ),
    "softmax+adasir-b5k200g32+cosine": Contender(
        _softmax_adasir_b5(num_candidates=200, group_users=32),
        [("sampler.temperature", [0.2])],
        "softmax+adasir-b5k200+cosine with 32 users sharing a candidate set, not 16: half the "
        "candidate rows to gather and score per step (τ as chosen at 16)",
    ),
    "softmax+adasir-b5k200+keep+cosine": Contender(
        _softmax_adasir_b5(num_candidates=200, exclude_positives=False),
        [("sampler.temperature", [0.2])],
        "softmax+adasir-b5k200+cosine without redrawing the user's own train items (at ml-1m "
        "they are a quarter of the first draws, and redrawing them is most of the sampling's "
        "extra cost): the full softmax counts them in its normaliser too",
    ),
    "softmax+adasir-b5k200+mask+cosine": Contender(
        _softmax_adasir_b5(num_candidates=200, positive_draws="mask"),
        [("sampler.temperature", [0.2])],
        "softmax+adasir-b5k200+cosine with drawn train items masked out of the loss instead of "
        "redrawn: no redraw rounds, and the unbiased estimate of the normaliser over the "
        "non-positives",
    ),
    "softmax+adasir-b5k250+mask+cosine": Contender(
        _softmax_adasir_b5(num_candidates=250, positive_draws="mask"),
        [("sampler.temperature", [0.2])],
        "softmax+adasir-b5k200+mask+cosine with |K| = 250: some of the time masking saves "
        "spent on candidates",
    ),
    "softmax+adasir-b5k200+drop+cosine": Contender(
        _softmax_adasir_b5(num_candidates=200, positive_draws="drop"),
        [("sampler.temperature", [0.2])],
        "softmax+adasir-b5k200+mask+cosine with the normaliser averaged over the kept draws "
        "(log(kept/n) added to their log-proposal): redraw's estimate in expectation, at "
        "mask's cost",
    ),
    "softmax+adasir-b5k250+drop+cosine": Contender(
        _softmax_adasir_b5(num_candidates=250, positive_draws="drop"),
        [("sampler.temperature", [0.2])],
        "softmax+adasir-b5k200+drop+cosine with |K| = 250",
    ),
    "softmax+adasir-b5+mask+cosine": Contender(
        _softmax_adasir_b5(num_candidates=1000, positive_draws="mask"),
        [("sampler.temperature", [0.2])],
        "the default (|K| = 1000) with drawn train items masked out of the loss, not redrawn",
    ),
    "softmax+adasir-b5k100+cosine": Contender(
        _softmax_adasir_b5(num_candidates=100),
        [("sampler.temperature", [0.2])],
        "softmax+adasir-b5+cosine at |K| = 100 (τ as chosen at 200 and 1000): cheaper still",
    ),
    "softmax+adasir-b50+cosine": Contender(
        _softmax_adasir_b5(num_negatives=50),
        [("sampler.temperature", [0.2, 0.5])],
        "sampled softmax over n = 50 negatives per pair drawn fresh by adasir-b at the cosine "
        "scale (log-proposal log(|K|/N) + log w): AdaSIR's resampling as the loss's proposal, "
        "with none of the pools' staleness",
    ),
    "softmax+adasir-b5+cosine": Contender(
        _softmax_adasir_b5(),
        [("sampler.temperature", [0.2, 0.5]), ("sampler.num_candidates", [200, 1000])],
        "softmax+adasir-b+cosine with BPR's n = 5 negatives per pair: a proposal close to the "
        "loss's softmax needs few draws (each corrected logit r/T − log(n·Q) is then ≈ log Z/n)",
    ),
    "softmax+adasir-u20+dot": Contender(
        {"loss": "softmax", "sampler.name": "adasir-u", "sampler.num_negatives": 20},
        [("l2", [0.01, 0.001]), ("sampler.temperature", [1.0, 2.0])],
        "sampled softmax over 20 negatives per pair from AdaSIR-U's pools (log-proposal "
        "|K|·Q·w), dot scores",
    ),
}


LR_GRID = [0.01, 0.005, 0.0025, 0.00125, 0.02, 0.04]
"""Learning rates tried by the `+lr` contenders, after their own search (0.01, Table 2's lr,
first: its runs are cached), then the lower rates, then the higher. At Gowalla size the +lr
contenders run with --max-grid 4 (0.01 down to 0.00125): 0.02 lost there for every contender."""

for _name in (
    "bpr+uniform",
    "bpr+dns",
    "softmax+adasir-b5+cosine",
    "softmax+adasir-b5k200+cosine",
    "softmax+adasir-b5k250+mask+cosine",
    "softmax+adasir-b5k200+mask+cosine",
):
    _base = CONTENDERS[_name]
    CONTENDERS[f"{_name}+lr"] = Contender(
        _base.fixed,
        [*_base.search, ("lr", LR_GRID)],
        f"{_name} with the learning rate tuned on validation too ({LR_GRID}, same 20 epochs)",
    )


# Table 2's MF protocol, which the quiet-machine benchmarks read tuned settings for.
TABLE2_MF = {"model": "mf", "epochs": 20, "eval_every": 20, "lr": 0.01, "batch_size": 4096}


def cached_mf_setup(data_path: str, out: str, threads: int) -> tuple[PreparedData, RunCache]:
    """For the quiet-machine benchmarks: torch threads set, the data, and Table 2's MF run
    cache under OUT (read only: a configuration it does not hold raises Unfinished)."""
    torch.set_num_threads(threads)
    data = PreparedData.load(data_path)
    return data, RunCache(data, os.path.join(out, "table2-mf"), summary_only=True)


def make_config(common: dict, settings: dict) -> TrainConfig:
    top, sampler = dict(common), {}
    for name, value in settings.items():
        if name.startswith("sampler."):
            sampler[name.removeprefix("sampler.")] = value
        else:
            top[name] = value
    return TrainConfig(preset="paper", **top, sampler=sampler)


def tune_contender(
    cache: RunCache,
    name: str,
    contender: Contender,
    common: dict,
    seeds: list[int],
    max_grid: int = 0,
) -> tuple[str, dict, list[dict]]:
    """Coordinate search on validation with seeds[0], then the choice on every seed.
    max_grid > 0 keeps only the first values of each search (lists start with the likeliest).
    Returns (name, chosen settings, final runs); raises Unfinished with a summary-only cache."""
    search = [(f, values[:max_grid] if max_grid else values) for f, values in contender.search]
    chosen = dict(contender.fixed) | {f: values[0] for f, values in search}

    def valid(settings):
        run = cache.measure(make_config(common | {"seed": seeds[0]}, settings), name)
        return run["valid"]["ndcg@50"]

    for fname, values in search:
        best = max(values, key=lambda v: valid(chosen | {fname: v}))
        chosen[fname] = best
    finals = [cache.measure(make_config(common | {"seed": s}, chosen), name) for s in seeds]
    return name, chosen, finals


def contender_table(rows, uniform_epoch: float | None) -> list[str]:
    lines = [
        "| configuration | tuned on validation | test NDCG@50 | test Recall@50 | "
        "s/epoch (sample + train) | epoch ÷ uniform BPR |",
        "|---|---|---|---|---|---|",
    ]
    for name, chosen, finals in rows:
        tuned = ", ".join(f"{f}={_show(chosen[f])}" for f in _searched(name))
        epoch = statistics.mean(f["sample_s"] + f["train_s"] for f in finals)
        ratio = f"{epoch / uniform_epoch:.2f}" if uniform_epoch else "–"
        lines.append(
            f"| {name} | {tuned} | {mean_sd([f['test']['ndcg@50'] for f in finals])} | "
            f"{mean_sd([f['test']['recall@50'] for f in finals])} | {epoch:.2f} | {ratio} |"
        )
    return lines


def _show(value) -> str:
    return (
        f"{value:g}"
        if isinstance(value, float | int) and not isinstance(value, bool)
        else str(value)
    )


def _searched(name: str) -> list[str]:
    return [f for f, _ in CONTENDERS[name].search]
