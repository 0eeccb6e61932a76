"""One schema at every boundary: a TrainConfig survives the CLI flags, `--config` JSON and
POST /jobs' command line unchanged, for every sampler."""

from __future__ import annotations

import shlex

import pytest

from pools import SAMPLER_NAMES
from pools.registry import capabilities_of, options_of
from service.jobs import JobRequest
from trainer.cli.flags import to_flags
from trainer.cli.train import build_parser, config_from_args
from trainer.core.config import TrainConfig


def _config(name: str) -> TrainConfig:
    """A config off the defaults in shared fields and in one of the sampler's own."""
    own = {
        "dns": {"dns_candidates": 7},
        "warp": {"warp_margin": 0.5, "warp_loss": "hinge"},
        "aobpr": {"aobpr_lambda": 100.0},
        "kernel": {"kernel_alpha": 3.0},
        "srns": {"srns_alpha": 2.5, "srns_memory": 10},
        "irgan": {"irgan_lr": 0.01},
        "adasir-u": {
            "pool_pick": "reweight",
            "shared_candidates": True,
            "num_candidates": 400,
            "pool_distinct": True,
        },
        "adasir-w": {"rank_weight_norm": "none", "reuse_pool": False},
        "uniform": {"shared_negatives": True, "num_negatives": 100},
    }.get(name, {})
    loss = "bpr" if name == "warp" else "softmax"
    keep = capabilities_of(name).can_keep_positives  # SRNS refuses exclude_positives=False
    if "temperature" in options_of(name).model_fields:
        own["temperature"] = 0.5
    return TrainConfig(
        preset="paper",
        model="gmf",
        lr=0.01,
        l2=0.0001,
        epochs=7,
        loss=loss,
        score="cosine",
        loss_temperature=0.2,
        diagnostics=True,
        sampler={"name": name, "exclude_positives": not keep, **own},
    )


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
    # The paper-era flags, on the paper's preset (the recommended one trains a softmax loss,
    # which has its own negative weights: --weighting reference is refused there).
    args = build_parser().parse_args(
        [
            "--preset",
            "paper",
            "--sampler",
            "adasir-p",
            "--negatives",
            "3",
            "--candidates",
            "50",
            "--pool-size",
            "40",
            "--no-reuse",
            "--keep-positives",
            "--temperature",
            "2",
            "--weighting",
            "reference",
        ]
    )
    s = config_from_args(args).sampler
    assert (
        s.name,
        s.num_negatives,
        s.num_candidates,
        s.pool_size,
        s.reuse_pool,
        s.exclude_positives,
        s.temperature,
        s.weighting,
    ) == ("adasir-p", 3, 50, 40, False, False, 2.0, "reference")


def test_an_option_the_sampler_does_not_take_is_refused_not_ignored():
    parser = build_parser()
    with pytest.raises(ValueError, match="pool_size: sampler 'dns' has none of these options"):
        config_from_args(parser.parse_args(["--sampler", "dns", "--pool-size", "40"]))
    with pytest.raises(ValueError, match="warp.num_negatives"):  # WARP takes one per pair
        config_from_args(parser.parse_args(["--sampler", "warp", "--negatives", "5"]))
    with pytest.raises(ValueError, match="contrastive_margin is not read by loss='bpr'"):
        config_from_args(parser.parse_args(["--loss", "bpr", "--contrastive-margin", "0.2"]))
    # Without --sampler the preset's sampler takes the options: the paper's is AdaSIR-U ...
    assert (
        config_from_args(
            parser.parse_args(["--preset", "paper", "--pool-size", "40"])
        ).sampler.pool_size
        == 40
    )
    # ... and the recommended one's is uniform, which has no pools.
    with pytest.raises(ValueError, match="pool_size: sampler 'uniform' has none"):
        config_from_args(parser.parse_args(["--pool-size", "40"]))


def test_the_recommended_preset_is_the_default_and_gives_way_to_what_the_user_names():
    parser = build_parser()
    cfg = config_from_args(parser.parse_args([]))
    assert (
        cfg.loss,
        cfg.score,
        cfg.loss_temperature,
        cfg.positive_temperature,
        cfg.l2,
        cfg.lr,
        cfg.epochs,
        cfg.early_stopping_patience,
    ) == ("bsl", "cosine", 0.08, 0.0976, 0.0, 0.01, 100, 3)
    assert (cfg.sampler.name, cfg.sampler.num_negatives, cfg.sampler.shared_negatives) == (
        "uniform",
        1000,
        True,
    )
    # Another sampler drops the preset's sampler options; the loss part stays.
    dns = config_from_args(parser.parse_args(["--sampler", "dns"]))
    assert (dns.sampler.name, dns.sampler.num_negatives, dns.loss, dns.score) == (
        "dns",
        5,
        "bsl",
        "cosine",
    )
    # Another loss drops the preset's loss part (score, temperatures, L2 back to the paper's).
    bpr = config_from_args(parser.parse_args(["--loss", "bpr"]))
    assert (bpr.score, bpr.loss_temperature, bpr.positive_temperature, bpr.l2) == (
        "dot",
        1.0,
        None,
        0.001,
    )
    mine = config_from_args(
        parser.parse_args(["--loss", "bpr", "--sampler", "adasir-b", "--temperature", "0.5"])
    )
    assert mine.sampler.temperature == 0.5
    assert config_from_args(parser.parse_args(["--preset", "paper"])) == TrainConfig(preset="paper")


def test_a_preset_too_wide_for_a_small_catalogue_is_fitted_and_a_users_value_is_not(tiny_data):
    from trainer.cli.train import given_options
    from trainer.core.config import check_against_data
    from trainer.core.presets import fit_to_data
    from trainer.data.dataset import PreparedData

    data = PreparedData.load(tiny_data)
    parser = build_parser()
    args = parser.parse_args([])
    assert fit_to_data(config_from_args(args), 5000, given_options(args)) == config_from_args(
        args
    )  # 1000 negatives fit 5000 items
    fitted = fit_to_data(config_from_args(args), data.num_items, given_options(args))
    assert fitted.sampler.num_negatives == data.num_items - 1  # every other item
    check_against_data(fitted, data.num_users, data.num_items, data.has_ratings)
    args = parser.parse_args(["--negatives", "1000"])
    kept = fit_to_data(config_from_args(args), data.num_items, given_options(args))
    with pytest.raises(ValueError, match="--negatives 1000"):
        check_against_data(kept, data.num_users, data.num_items, data.has_ratings)


def test_every_entry_point_gives_one_configuration_for_the_same_fields():
    from trainer.api import _fit_config
    from trainer.distributed.tune import TuneSpec

    parser = build_parser()
    tune = TuneSpec(name="t", dataset="d", search={"seed": {"grid": [0]}})
    for fields, flags in [
        ({"dim": 4}, ["--dim", "4"]),
        ({"dim": 4, "preset": "paper"}, ["--dim", "4", "--preset", "paper"]),
        ({"preset": "paper", "sampler": "dns"}, ["--preset", "paper", "--sampler", "dns"]),
    ]:
        cfg = TrainConfig(**fields)
        assert cfg.dim == 4 or cfg.sampler.name == "dns"
        assert _fit_config(None, None, fields) == cfg  # fit(df, dim=4)
        assert _fit_config(fields, None, {}) == cfg  # fit(df, {"dim": 4})
        assert _fit_config(cfg, None, {}) == cfg  # fit(df, TrainConfig(dim=4))
        assert config_from_args(parser.parse_args(flags)) == cfg  # adasir train --dim 4
        job = JobRequest(dataset="d", train=fields)  # POST /jobs {"train": {"dim": 4}}
        assert job.config() == cfg
        assert config_from_args(parser.parse_args(job.command("/d", "/o")[2:])) == cfg
        fixed = tune.model_copy(update={"fixed": fields})  # a Tune trial's fixed fields
        assert fixed.train_config({}) == cfg
    assert TrainConfig(dim=4).preset == "recommended" and TrainConfig(dim=4).loss == "bsl"
    assert TrainConfig(preset="paper", dim=4).loss == "bpr"


def test_a_preset_named_twice_must_agree_and_a_config_object_keeps_its_own():
    from trainer.api import _fit_config
    from trainer.errors import UsageError

    job = JobRequest(dataset="d", preset="paper", train={"dim": 4})
    assert job.config() == TrainConfig(preset="paper", dim=4)
    with pytest.raises(ValueError, match="disagree"):
        JobRequest(dataset="d", preset="paper", train={"preset": "recommended"})
    with pytest.raises(ValueError, match="preset"):
        JobRequest(dataset="d", preset="fastest")
    with pytest.raises(UsageError, match="already holds its preset"):
        _fit_config(TrainConfig(dim=4), "paper", {})
    paper = TrainConfig(preset="paper", dim=4)
    assert _fit_config(paper, None, {"lr": 0.1}) == paper.model_copy(update={"lr": 0.1})
    assert TrainConfig.model_validate(paper.model_dump()) == paper  # a checkpoint's config


def _refused(capsys, tmp_path, *argv) -> str:
    """run.py's main on the tiny dataset: exit 2, one line on stderr, nothing written."""
    from trainer.cli.train import main

    out = tmp_path / "out"
    code = main(["--out", str(out), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert not out.exists()
    return err[0]


@pytest.mark.parametrize(
    "config, message",
    [
        ("[1]", "expected a JSON object"),
        (" [1]", "expected a JSON object"),
        ('"text"', "expected a JSON object"),
        ("nowhere.json", "neither a JSON file"),
        ('{"sampler": null}', "give a sampler name"),
        ('{"sampler": "adasir"}', "'adasir-u'"),
        ('{"dim": true}', "dim"),
        ('{"diagnostics": "yes"}', "diagnostics"),
        ('{"epochs": "1"}', "epochs"),
        ('{"lr": "0.1"}', "lr"),
    ],
)
def test_a_config_option_is_json_of_the_right_types_or_refused(
    config, message, tiny_data, tmp_path, capsys
):
    assert message in _refused(capsys, tmp_path, "--data", tiny_data, "--config", config)


def test_other_impossible_options_are_one_line_each(tiny_data, tmp_path, capsys):
    (tmp_path / "confdir").mkdir()
    assert "is a directory" in _refused(
        capsys, tmp_path, "--data", tiny_data, "--config", str(tmp_path / "confdir")
    )
    assert "num_negatives" in _refused(
        capsys,
        tmp_path,
        "--data",
        tiny_data,
        "--sampler",
        "uniform",
        "--sampler-opt",
        "num_negatives=true",
    )
    assert "--threads" in _refused(capsys, tmp_path, "--data", tiny_data, "--threads", "-1")
    assert "batch_size" in _refused(
        capsys, tmp_path, "--data", tiny_data, "--batch-size", str(10**12)
    )


@pytest.mark.parametrize("manifest", ["null", '{"counts": [1, 2]}', '{"counts": {"users": "3"}}'])
def test_a_damaged_manifest_is_one_line(manifest, tiny_data, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "manifest.json").write_text(manifest)
    assert "manifest.json: not a manifest" in _refused(capsys, tmp_path, "--data", str(data))


@pytest.mark.parametrize(
    "field, value", [("gpu", "yes"), ("workers", "2"), ("workers", True), ("checkpoint_every", 1.5)]
)
def test_a_job_request_takes_no_coerced_values(field, value):
    with pytest.raises(ValueError, match=field):
        JobRequest(**{"dataset": "tiny", field: value})
    with pytest.raises(ValueError, match="epochs"):
        JobRequest(dataset="tiny", train={"epochs": "3"})


def test_a_sampler_name_is_taken_as_a_string_at_every_entry_point(tiny_data):
    """`"sampler": "adasir-u"` means `{"name": "adasir-u"}` in Python, a --config, POST /jobs
    and Tune alike; an unknown name is refused listing the known ones."""
    from service.jobs import JobRequest
    from trainer.cli.train import build_parser, config_from_args
    from trainer.core.presets import build_config

    named = build_config("recommended", {"sampler": "adasir-u"})
    assert named == build_config("recommended", {"sampler": {"name": "adasir-u"}})
    args = build_parser().parse_args(["--config", '{"sampler": "adasir-u"}'])
    assert config_from_args(args) == named
    assert JobRequest(dataset="tiny", train={"sampler": "adasir-u"}).config() == named
    with pytest.raises(ValueError, match="'adasir-u', 'adasir-p'"):
        build_config("recommended", {"sampler": "adasir"})
