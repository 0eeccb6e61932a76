"""The engine and `trainer/run.py` end to end, on small synthetic data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from trainer.core.config import TrainConfig
from trainer.core.engine import DivergenceError, Engine
from trainer.data.dataset import PreparedData
from trainer.data.prepare import PrepareOptions, prepare
from trainer.outputs.checkpoint import CheckpointError, load_checkpoint

RUN = os.path.join(ROOT, "trainer", "run.py")
# A large catalogue, no popularity bias and a sharp latent signal: uniform negatives are
# mostly easy here, which is the regime adaptive samplers are for (measured: README).
HARD_SPEC = "users=800,items=2000,mean=30,alpha=0,zipf=0.5,signal=6,seed=1"


def _run(*args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, RUN, "--threads", "1", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def hard_data(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data") / "hard")
    prepare(out, PrepareOptions(seed=0), synthetic=HARD_SPEC)
    return out


@pytest.mark.slow
def test_run_adasir_beats_uniform_end_to_end(hard_data, tmp_path):
    results = {}
    for sampler in ("uniform", "adasir-u"):
        out = tmp_path / sampler
        proc = _run(
            "--data",
            hard_data,
            "--preset",
            "paper",
            "--sampler",
            sampler,
            "--epochs",
            "15",
            "--lr",
            "0.01",
            "--l2",
            "0.001",
            "--batch-size",
            "1024",
            "--eval-every",
            "5",
            "--seed",
            "0",
            "--out",
            str(out),
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("\nepoch ") >= 14  # one progress line per epoch
        metrics = json.loads((out / "metrics.json").read_text())
        assert set(metrics) >= {"config", "epochs", "test"}
        assert len(metrics["epochs"]) == 15
        first = metrics["epochs"][0]
        assert set(first) >= {"epoch", "loss", "sample_s", "train_s", "eval_s"}
        assert set(metrics["epochs"][4]["valid"]) >= {"ndcg@50", "recall@50"}
        assert metrics["config"]["sampler"]["name"] == sampler
        ckpt = load_checkpoint(str(out / "checkpoint"))
        assert ckpt["epoch"] == 15 and ckpt["metrics"]["test"] == metrics["test"]
        results[sampler] = metrics["test"]["ndcg@50"]
    assert results["adasir-u"] > results["uniform"], results


def test_checkpoint_scores_match_the_engine(tiny_data, tmp_path):
    from trainer.core.training import train_in_process

    data = PreparedData.load(tiny_data)
    cfg = TrainConfig(preset="paper", model="gmf", epochs=2, eval_every=1, lr=0.01, batch_size=512)
    metrics = train_in_process(cfg, data, str(tmp_path), log=lambda s: None)
    assert metrics["epochs"][1]["valid"]["ndcg@50"] > 0
    ckpt = load_checkpoint(str(tmp_path / "checkpoint"))
    assert ckpt["model"] == "gmf" and len(ckpt["user_ids"]) == data.num_users
    assert (
        ckpt["seen_users"].size == data.splits["train"].users.size + data.splits["valid"].users.size
    )
    # Truncation is detected and named.
    blob = (tmp_path / "checkpoint" / "model.pt").read_bytes()
    (tmp_path / "checkpoint" / "model.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(str(tmp_path / "checkpoint"))
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(str(tmp_path))


def test_divergence_fails_loudly(tiny_data):
    engine = Engine(
        TrainConfig(preset="paper", epochs=1, batch_size=512), PreparedData.load(tiny_data)
    )
    with torch.no_grad():
        engine.model.item_emb[:5] = float("nan")
    with pytest.raises(DivergenceError, match="Lower the learning rate"):
        engine.train_epoch()


def _one_per_family() -> list[str]:
    """A sampler per (options class, declared capabilities): every family, from the registry."""
    from pools.registry import capabilities_of, options_of, registered

    return sorted({(options_of(n), capabilities_of(n)): n for n in reversed(registered())}.values())


@pytest.mark.parametrize("sampler", _one_per_family())
def test_loss_falls_for_every_sampler_family(tiny_data, sampler):
    cfg = TrainConfig(preset="paper", epochs=4, lr=0.01, batch_size=512, sampler={"name": sampler})
    engine = Engine(cfg, PreparedData.load(tiny_data))
    losses = [engine.train_epoch()["loss"] for _ in range(4)]
    assert losses[-1] < losses[0]


def test_fixed_steps_cycle_a_small_shard(tiny_data):
    """Ray gives every worker the same step count; a shard smaller than that cycles."""
    data = PreparedData.load(tiny_data)
    engine = Engine(TrainConfig(preset="paper", batch_size=512), data, steps_per_epoch=50)
    order = engine._epoch_order()
    assert order.numel() == 50 * 512 > engine.train_users.numel()
    assert torch.bincount(order).min() >= 1  # every pair used at least once


@pytest.mark.slow
def test_bad_cli_input_gives_clear_errors(tmp_path, tiny_data):
    proc = _run("--data", str(tmp_path), "--epochs", "1")
    assert proc.returncode == 2 and "not a prepared dataset" in proc.stderr
    proc = _run("--data", tiny_data, "--lr", "-1")
    assert proc.returncode == 2 and "lr" in proc.stderr
    proc = _run("--data", tiny_data, "--sampler", "magic")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = _run("--data", tiny_data, "--workers", "-1")
    assert proc.returncode == 2 and "--workers" in proc.stderr
    proc = _run("--data", tiny_data, "--sampler-opt", "srns_tempreature=2")
    assert (
        proc.returncode == 2 and "srns_tempreature" in proc.stderr and "Extra inputs" in proc.stderr
    )
    proc = _run("--data", tiny_data, "--sampler-opt", "srns_alpha=-1")
    assert proc.returncode == 2 and "srns_alpha" in proc.stderr
    proc = _run("--data", tiny_data, "--sampler-opt", "srns_alpha")
    assert proc.returncode == 2 and "KEY=VALUE" in proc.stderr


def test_sampler_options_reach_the_config():
    from trainer.cli.train import build_parser, config_from_args

    args = build_parser().parse_args(
        [
            "--sampler",
            "srns",
            "--sampler-opt",
            "srns_alpha=2.5",
            "--sampler-opt",
            "temperature=3",
            "--negatives",
            "3",
        ]
    )
    cfg = config_from_args(args).sampler
    assert (cfg.srns_alpha, cfg.temperature, cfg.num_negatives) == (2.5, 3.0, 3)
    # An AdaSIR option given to SRNS was silently ignored before; it is refused now.
    args = build_parser().parse_args(["--sampler", "srns", "--sampler-opt", "weighting=reference"])
    with pytest.raises(ValueError, match="weighting: sampler 'srns' has none"):
        config_from_args(args)


def test_lazy_row_adam_matches_torch_sparse_adam():
    from trainer.core.row_adam import LazyRowAdam

    g = torch.Generator().manual_seed(0)
    init = torch.randn(50, 4, generator=g)
    ours, ref = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    lazy, sparse = LazyRowAdam(ours, lr=0.05), torch.optim.SparseAdam([ref], lr=0.05)
    for _ in range(5):
        rows = torch.randint(0, 50, (30,), generator=g)  # repeats: summed per row
        grads = torch.randn(30, 4, generator=g)
        lazy.update(rows, grads)
        ref.grad = torch.sparse_coo_tensor(rows[None], grads, (50, 4))
        sparse.step()
    assert torch.allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize(
    "model, shared, l2", [("mf", False, 0.01), ("gmf", False, 0.0), ("gmf", True, 0.01)]
)
def test_dense_adam_step_matches_autograd(model, shared, l2):
    """The dense step scatters the gathered rows' gradients (and the L2 gradient, added by
    hand) into table-sized buffers: three steps equal autograd through the model's forward
    with torch's Adam, repeated rows and a GMF's h included."""
    from pools.base import Negatives
    from trainer.core.engine import Optimizer
    from trainer.core.loss import batch_loss
    from trainer.core.models import build_model

    cfg = TrainConfig(preset="paper", lr=0.05, l2=l2, model=model)
    ours, ref = (build_model(model, 30, 40, 8, seed=0) for _ in range(2))
    ref_adam = torch.optim.Adam(ref.parameters(), lr=0.05)
    step = Optimizer(ours, cfg)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        users, pos = (
            torch.randint(0, 30, (16,), generator=g),
            torch.randint(0, 40, (16,), generator=g),
        )
        neg = torch.randint(0, 40, (7,) if shared else (16, 3), generator=g)
        loss = step.step(users, pos, Negatives(neg))
        ref_adam.zero_grad()
        pos_s, neg_s, touched = ref(users, pos, neg)
        expect = batch_loss(cfg, pos_s, neg_s, Negatives(neg), 40)
        expect = expect + l2 * sum(e.pow(2).sum() for e in touched) / 16
        expect.backward()
        ref_adam.step()
        assert torch.allclose(loss, expect.detach(), atol=1e-6)
    for mine, theirs in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6)


def test_sparse_adam_option_trains(tiny_data):
    cfg = TrainConfig(
        preset="paper", epochs=3, lr=0.01, batch_size=512, optimizer="sparse-adam", model="gmf"
    )
    engine = Engine(cfg, PreparedData.load(tiny_data))
    losses = [engine.train_epoch()["loss"] for _ in range(3)]
    assert losses[-1] < losses[0]
    assert engine.evaluate("valid")["ndcg@50"] > 0


@pytest.mark.parametrize("sampler", ["adasir-u", "dns", "uniform", "srns"])
def test_negative_diagnostics_per_epoch(tiny_data, sampler):
    data = PreparedData.load(tiny_data)
    cfg = TrainConfig(
        preset="paper",
        epochs=2,
        batch_size=512,
        lr=0.01,
        diagnostics=True,
        sampler={
            "name": sampler,
            **({"num_candidates": 50, "pool_size": 40} if sampler.startswith("adasir") else {}),
        },
    )
    engine = Engine(cfg, data)
    engine.train_epoch()
    diag = engine.train_epoch()["negatives"]
    if sampler == "srns":
        assert diag == {}  # its sample() renews its memory: not drawn from for diagnostics
        return
    assert diag["dns_score"] > diag["uniform_score"]
    # Uniform non-positives hit held-out items at chance: |held-out_u| / (N − |train_u|) for
    # the user of a pair drawn at random, so weighted by train degree.
    import numpy as np

    count = lambda split: np.bincount(data.splits[split].users, minlength=data.num_users)  # noqa: E731
    train, held = count("train"), count("valid") + count("test")
    chance = float((train * held / (data.num_items - train)).sum() / train.sum())
    assert diag["uniform_false_negative_rate"] == pytest.approx(chance, rel=0.15)
    if sampler == "dns":
        assert diag["neg_score"] > diag["uniform_score"]
    if sampler == "adasir-u":
        assert 0 < diag["pool_distinct_frac"] <= 1 and 0 < diag["ess_frac"] <= 1
        # Pool entries are trained as negatives for an epoch: they score lower now than when
        # they were resampled (measured: README, "Why AdaSIR loses").
        assert diag["staleness"] > 0


def _tiny_run(data, out, *extra):
    return _run(
        "--data",
        data,
        "--out",
        str(out),
        "--epochs",
        "3",
        "--eval-every",
        "3",
        "--batch-size",
        "1024",
        "--lr",
        "0.01",
        *extra,
        timeout=300,
    )


@pytest.mark.slow
def test_out_is_refused_replaced_whole_or_resumed(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert _tiny_run(tiny_data, out).returncode == 0
    assert json.loads((out / "run.json").read_text())["state"] == "complete"
    before = (out / "metrics.json").read_bytes()
    again = _tiny_run(tiny_data, out, "--seed", "1")
    assert again.returncode == 2 and "holds a complete run already" in again.stderr
    assert (out / "metrics.json").read_bytes() == before  # nothing touched
    # --resume with another loss or sampler would train a different run on top: refused.
    other = _run(
        "--data",
        tiny_data,
        "--out",
        str(out),
        "--epochs",
        "5",
        "--loss",
        "bpr",
        "--sampler",
        "dns",
        "--resume",
        "--batch-size",
        "1024",
        "--lr",
        "0.01",
    )
    assert other.returncode == 2 and "loss: checkpoint 'bsl', now 'bpr'" in other.stderr
    assert "sampler: checkpoint" in other.stderr and len(other.stderr.strip().splitlines()) == 1
    assert (out / "metrics.json").read_bytes() == before
    assert json.loads((out / "run.json").read_text())["state"] == "complete"
    # A run that ended with its refit has no validated run left to extend: refused.
    extend = ("--epochs", "5", "--eval-every", "5", "--resume")
    refitted = _tiny_run(tiny_data, out, *extend)
    assert refitted.returncode == 2 and "ended with its refit" in refitted.stderr
    assert (out / "metrics.json").read_bytes() == before
    # --resume continues a run from its checkpoint: epochs 1-3 kept, 4-5 trained.
    assert _tiny_run(tiny_data, out, "--no-refit", "--overwrite").returncode == 0
    before = (out / "metrics.json").read_bytes()
    resumed = _tiny_run(tiny_data, out, "--no-refit", *extend)
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4, 5]
    assert metrics["epochs"][:3] == json.loads(before)["epochs"]
    assert load_checkpoint(str(out / "checkpoint"))["epoch"] == 5
    # --overwrite replaces the run only once the new one is complete.
    replaced = _tiny_run(tiny_data, out, "--seed", "1", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads((out / "metrics.json").read_text())["config"]["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging left behind


@pytest.mark.slow
def test_a_killed_overwrite_leaves_the_old_run_whole(tiny_data, tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    assert _tiny_run(tiny_data, out).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            RUN,
            "--data",
            tiny_data,
            "--out",
            str(out),
            "--epochs",
            "200",
            "--batch-size",
            "1024",
            "--overwrite",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    staging = []
    while time.time() < deadline and not staging:
        staging = [
            p for p in tmp_path.iterdir() if ".staging-" in p.name and (p / "metrics.json").exists()
        ]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert staging, "the replacement never started training"
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert load_checkpoint(str(out / "checkpoint"))["epoch"] == 3
    assert json.loads((staging[0] / "run.json").read_text())["state"] == "running"


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_stopped_run_says_stopped_and_resumes(tiny_data, tmp_path, signame):
    """SIGTERM (what DELETE /jobs sends) is handled as Ctrl-C: run.json says `stopped`, not
    `running` with a dead pid, and the last checkpoint continues with --resume."""
    import signal
    import time

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        RUN,
        "--data",
        tiny_data,
        "--out",
        str(out),
        "--batch-size",
        "1024",
        "--checkpoint-every",
        "1",
        "--eval-every",
        "100",
    ]
    proc = subprocess.Popen(
        [*args, "--epochs", "2000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint" / "model.pt").exists():
        time.sleep(0.1)
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run: stopped" in err and "Traceback" not in err, err
    assert json.loads((out / "run.json").read_text())["state"] == "stopped"
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
    epoch = load_checkpoint(str(out / "checkpoint"))["epoch"]
    resumed = subprocess.run(
        [*args, "--epochs", str(epoch + 1), "--resume"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "run.json").read_text())["state"] == "complete"


@pytest.mark.parametrize(
    "damage,message",
    [
        ("truncate-users", "users.parquet: damaged"),
        ("empty-items", "items.parquet: 0 rows"),
        ("swap-valid", "valid.parquet: checksum differs"),
    ],
)
def test_a_damaged_dataset_is_refused_before_training(tiny_data, tmp_path, damage, message):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    if damage == "truncate-users":
        raw = (data / "users.parquet").read_bytes()
        (data / "users.parquet").write_bytes(raw[: len(raw) // 2])
    elif damage == "empty-items":
        pq.write_table(pq.read_table(data / "items.parquet").slice(0, 0), data / "items.parquet")
    else:  # same row count, other content
        table = pq.read_table(data / "valid.parquet")
        items = pa.array(table.column("item").to_numpy()[::-1].copy())
        pq.write_table(table.set_column(1, "item", items), data / "valid.parquet")
    proc = _tiny_run(str(data), tmp_path / "out")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "checkpoint").exists()


def test_more_negatives_than_the_catalogue_is_refused(tiny_data, tmp_path):
    proc = _tiny_run(tiny_data, tmp_path / "out", "--negatives", "1000")
    assert proc.returncode == 2 and "--negatives 1000: the dataset has" in proc.stderr


@pytest.mark.slow
def test_adasir_command_trains_and_recommends(tiny_data, tmp_path):
    """The console script: usage, train, recommend; a usage error is one line with exit 2."""
    cli = [sys.executable, "-m", "adasir"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert subprocess.run(cli, capture_output=True, text=True, cwd=ROOT).returncode == 2
    out = tmp_path / "run"
    train = subprocess.run(
        [
            *cli,
            "train",
            "--data",
            tiny_data,
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "1024",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert train.returncode == 0, train.stderr
    user = load_checkpoint(str(out / "checkpoint"))["user_ids"][0]
    rec = subprocess.run(
        [*cli, "recommend", "--model", str(out), "--user", user, "-k", "3"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert rec.returncode == 0, rec.stderr
    assert len(json.loads(rec.stdout)["items"]) == 3
    bad = subprocess.run(
        [*cli, "recommend", "--model", str(out), "--user", "nobody"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_an_unloadable_checkpoint_never_replaces_a_good_one(tiny_data, tmp_path):
    from trainer.outputs.checkpoint import save_checkpoint

    data = PreparedData.load(tiny_data)
    engine = Engine(TrainConfig(preset="paper", epochs=1, batch_size=1024), data)
    state = engine.state()["model"]
    path = tmp_path / "checkpoint"

    def save(model_state, epoch):
        return save_checkpoint(
            str(path),
            model_name="mf",
            dim=32,
            state=model_state,
            item_counts=data.item_counts(),
            data=data,
            config={},
            metrics={"epochs": []},
            epoch=epoch,
        )

    save(state, 1)
    broken = {**state, "item_emb": state["item_emb"][:-1]}  # shapes disagree with the id maps
    with pytest.raises(CheckpointError, match="shapes disagree"):
        save(broken, 2)
    assert load_checkpoint(str(path))["epoch"] == 1  # the good one is still there, whole
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]  # no temporary left behind


def test_a_stop_whose_interrupt_was_swallowed_ends_the_run_at_its_next_progress_line(monkeypatch):
    """The handler's KeyboardInterrupt can land inside a library that catches it: the stop is
    remembered, and the next progress line raises it again."""
    from trainer.cli import train as cli

    monkeypatch.setattr(cli, "_STOP_REQUESTED", [])
    cli._log_or_stop("epoch 1/2 loss 0.5")  # no stop asked for: a plain progress line
    with pytest.raises(KeyboardInterrupt):
        cli._interrupt(signal.SIGTERM, None)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        cli._log_or_stop("epoch 2/2 loss 0.4")
