"""One schema at every boundary: a TrainConfig survives the CLI flags, `--config` JSON and
POST /jobs' command line unchanged, for every sampler."""

from __future__ import annotations

import shlex

import pytest

from pools import SAMPLER_NAMES
from pools.registry import capabilities_of, options_of
from service.jobs import JobRequest
from trainer.config import TrainConfig
from trainer.flags import to_flags
from trainer.run import build_parser, config_from_args


def _config(name: str) -> TrainConfig:
    """A config off the defaults in shared fields and in one of the sampler's own."""
    own = {"dns": {"dns_candidates": 7}, "warp": {"warp_margin": 0.5, "warp_loss": "hinge"},
           "aobpr": {"aobpr_lambda": 100.0}, "kernel": {"kernel_alpha": 3.0},
           "srns": {"srns_alpha": 2.5, "srns_memory": 10}, "irgan": {"irgan_lr": 0.01},
           "adasir-u": {"pool_pick": "reweight", "shared_candidates": True,
                        "num_candidates": 400, "pool_distinct": True},
           "adasir-w": {"rank_weight_norm": "none", "reuse_pool": False},
           "uniform": {"shared_negatives": True, "num_negatives": 100}}.get(name, {})
    loss = "bpr" if name == "warp" else "softmax"
    keep = capabilities_of(name).can_keep_positives  # SRNS refuses exclude_positives=False
    if "temperature" in options_of(name).model_fields:
        own["temperature"] = 0.5
    return TrainConfig(model="gmf", lr=0.01, l2=0.0001, epochs=7, loss=loss, score="cosine",
                       loss_temperature=0.2, diagnostics=True,
                       sampler={"name": name, "exclude_positives": not keep, **own})


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_a_config_round_trips_through_flags_json_and_jobs(name):
    cfg = _config(name)
    parser = build_parser()
    assert config_from_args(parser.parse_args(to_flags(cfg))) == cfg
    assert config_from_args(parser.parse_args(["--config", cfg.model_dump_json()])) == cfg
    command = JobRequest(dataset="d", workers=2, train=cfg).command("/data/d", "/models/jobs/x")
    args = parser.parse_args(shlex.split(shlex.join(command))[2:])
    assert config_from_args(args) == cfg and args.workers == 2


def test_historical_flags_still_parse():
    args = build_parser().parse_args(["--sampler", "adasir-p", "--negatives", "3", "--candidates",
                                      "50", "--pool-size", "40", "--no-reuse", "--keep-positives",
                                      "--temperature", "2", "--weighting", "reference"])
    s = config_from_args(args).sampler
    assert (s.name, s.num_negatives, s.num_candidates, s.pool_size, s.reuse_pool,
            s.exclude_positives, s.temperature, s.weighting) == \
        ("adasir-p", 3, 50, 40, False, False, 2.0, "reference")


def test_an_option_the_sampler_does_not_take_is_refused_not_ignored():
    parser = build_parser()
    with pytest.raises(ValueError, match="pool_size: sampler 'dns' has none of these options"):
        config_from_args(parser.parse_args(["--sampler", "dns", "--pool-size", "40"]))
    with pytest.raises(ValueError, match="warp.num_negatives"):  # WARP takes one per pair
        config_from_args(parser.parse_args(["--sampler", "warp", "--negatives", "5"]))
    with pytest.raises(ValueError, match="contrastive_margin is not read by loss='bpr'"):
        config_from_args(parser.parse_args(["--loss", "bpr", "--contrastive-margin", "0.2"]))
    # Without --sampler the paper's AdaSIR-U takes the pool options.
    assert config_from_args(parser.parse_args(["--pool-size", "40"])).sampler.pool_size == 40
