"""Ray Train: the sharding policy and sharded evaluation without a cluster, then real local
Ray runs (two workers, a killed worker, `ray start --head` + `ray job submit`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT

from trainer.config import TrainConfig
from trainer.dataset import PreparedData
from trainer.engine import Engine
from trainer.sharding import plan_shards

RUN = os.path.join(ROOT, "trainer", "run.py")


def test_plan_shards_is_a_balanced_deterministic_partition():
    rng = np.random.default_rng(0)
    users = rng.zipf(1.5, 20000) % 700  # skewed degrees; some users have no pairs
    plan = plan_shards(users, 1000, 3, 4096)
    again = plan_shards(users, 1000, 3, 4096)
    assert all(np.array_equal(a, b) for a, b in zip(plan.shards, again.shards))
    allowed = np.unique(users)
    joined = np.concatenate(plan.shards)
    assert np.array_equal(np.sort(joined), allowed)  # disjoint and complete
    assert max(plan.pairs) - min(plan.pairs) <= np.bincount(users).max()
    assert plan.batch_per_worker == 1366
    assert plan.steps_per_epoch == -(-max(plan.pairs) // 1366)
    with pytest.raises(ValueError, match="more than the 2 users"):
        plan_shards(np.array([0, 0, 1]), 5, 3, 10)


def test_sharded_evaluation_sums_to_the_single_process_result(tiny_data):
    data = PreparedData.load(tiny_data)
    cfg = TrainConfig(epochs=1, batch_size=512, lr=0.01)
    whole = Engine(cfg, data)
    whole.train_epoch()
    plan = plan_shards(data.splits["train"].users, data.num_users, 2, 512)
    totals, count = {}, 0
    for shard in plan.shards:
        part = Engine(cfg, data, shard)
        with torch.no_grad():
            part.model.item_emb.copy_(whole.model.item_emb)
            part.model.user_emb.copy_(whole.model.user_emb[torch.as_tensor(shard)])
        sums, n = part.evaluate_sums("test")
        count += n
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + v
    expected = whole.evaluate("test")
    for k, v in expected.items():
        assert totals[k] / count == pytest.approx(v, abs=1e-12)


def _env():
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
            "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}


def _run_args(data, out, *extra):
    return [sys.executable, RUN, "--data", data, "--out", str(out), "--lr", "0.01",
            "--batch-size", "1024", "--seed", "0", *extra]


def test_bad_ray_requests_fail_before_workers_start(tiny_data, tmp_path):
    for args, message in ((["--workers", "100000"], "more than the"),
                          (["--workers", "2", "--optimizer", "sparse-adam"], "--optimizer adam")):
        proc = subprocess.run(_run_args(tiny_data, tmp_path / "o", *args), capture_output=True,
                              text=True, env=_env(), timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Started a local Ray" not in proc.stderr
    proc = subprocess.run(_run_args(str(tmp_path), tmp_path / "o", "--workers", "2"),
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2 and "not a prepared dataset" in proc.stderr


@pytest.mark.ray
@pytest.mark.slow
def test_two_workers_match_one_process_and_gpu_is_checked(tiny_data, tmp_path):
    common = ("--epochs", "6", "--eval-every", "3")
    ref = subprocess.run(_run_args(tiny_data, tmp_path / "w0", *common, "--workers", "0"),
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.run(_run_args(tiny_data, tmp_path / "w2", *common, "--workers", "2"),
                          capture_output=True, text=True, env=_env(), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if " epoch " in f" {ln}" and "/6 loss" in ln]
    assert len(lines) == 6, lines  # one progress line per epoch
    m2 = json.loads((tmp_path / "w2" / "metrics.json").read_text())
    m0 = json.loads((tmp_path / "w0" / "metrics.json").read_text())
    assert m2["workers"] == 2 and len(m2["epochs"]) == 6 and "valid" in m2["epochs"][2]
    # Users never cross the network: only item-side gradients are all-reduced.
    data = PreparedData.load(tiny_data)
    assert m2["allreduce_bytes_per_step"] == data.num_items * 32 * 4
    assert m2["ddp_bytes_per_step"] == (data.num_items + data.num_users) * 32 * 4
    # Same answer within noise (different sampling streams per shard): 0.02 absolute here.
    assert abs(m2["test"]["ndcg@50"] - m0["test"]["ndcg@50"]) < 0.02, (m2["test"], m0["test"])
    from trainer.checkpoint import load_checkpoint
    ckpt = load_checkpoint(str(tmp_path / "w2" / "checkpoint"))
    assert ckpt["state"]["user_emb"].shape == (data.num_users, 32) and ckpt["epoch"] == 6
    assert ckpt["state"]["user_emb"].abs().sum(1).min() > 0  # every shard made it in
    gpu = subprocess.run(_run_args(tiny_data, tmp_path / "g", "--workers", "1", "--gpu", "--epochs", "1"),
                         capture_output=True, text=True, env=_env(), timeout=200)
    assert gpu.returncode == 2 and "needs 1 GPUs; the cluster has 0" in gpu.stderr


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_worker_resumes_from_the_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_run_args(tiny_data, out, "--workers", "2", "--epochs", "12",
                                      "--eval-every", "4", "--checkpoint-every", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    killed = None
    deadline = time.time() + 240
    try:
        while time.time() < deadline and killed is None:
            metrics = out / "metrics.json"
            pid_file = out / "workers" / "rank-1.pid"
            if metrics.exists() and pid_file.exists():
                try:
                    done = len(json.loads(metrics.read_text())["epochs"])
                except (ValueError, KeyError):
                    done = 0
                if 3 <= done < 12:
                    killed = int(pid_file.read_text())
                    os.kill(killed, signal.SIGKILL)
                    break
            time.sleep(0.2)
        output, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "the run never reached epoch 3"
    assert proc.returncode == 0, output[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["epochs"]] == list(range(1, 13))
    assert "test" in metrics
    assert int((out / "workers" / "rank-1.pid").read_text()) != killed  # a new worker
    from trainer.checkpoint import load_checkpoint
    assert load_checkpoint(str(out / "checkpoint"))["epoch"] == 12


@pytest.mark.ray
@pytest.mark.slow
def test_ray_job_submit_against_a_real_head(tiny_data, tmp_path):
    ray_bin = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    env = _env()
    port = "8266"
    start = subprocess.run([ray_bin, "start", "--head", "--num-cpus", "2", "--dashboard-port", port,
                            "--object-store-memory", str(256 * 1024 * 1024), "--disable-usage-stats"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert start.returncode == 0, start.stderr
    try:
        out = tmp_path / "job"
        runtime_env = json.dumps({"working_dir": ROOT,
                                  "excludes": ["runs/", ".git/", "benchmarks/results/", "benchmarks/reports/", "*.egg-info/"]})
        submit = subprocess.run(
            [ray_bin, "job", "submit", "--address", f"http://127.0.0.1:{port}",
             "--runtime-env-json", runtime_env, "--",
             "python", "trainer/run.py", "--data", tiny_data, "--out", str(out), "--workers", "2",
             "--epochs", "3", "--eval-every", "3", "--lr", "0.01", "--batch-size", "1024"],
            capture_output=True, text=True, env=env, timeout=400)
        assert submit.returncode == 0, (submit.stdout + submit.stderr)[-3000:]
        assert "epoch 3/3 loss" in submit.stdout  # progress reaches `ray job logs`
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["workers"] == 2 and len(metrics["epochs"]) == 3 and "test" in metrics
        # The tiny Tune search, submitted the same way, runs its trials on this cluster.
        import yaml

        spec = yaml.safe_load(open(os.path.join(ROOT, "tune_configs", "tiny.yaml")))
        spec.update(dataset=tiny_data, output=str(tmp_path / "tune"))
        (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(spec))
        tune = subprocess.run(
            [ray_bin, "job", "submit", "--address", f"http://127.0.0.1:{port}",
             "--runtime-env-json", runtime_env, "--", "python", "trainer/tune.py", str(tmp_path / "tiny.yaml")],
            capture_output=True, text=True, env=env, timeout=400)
        assert tune.returncode == 0, (tune.stdout + tune.stderr)[-3000:]
        assert len((tmp_path / "tune" / "results.csv").read_text().strip().splitlines()) == 3
        assert (tmp_path / "tune" / "best" / "checkpoint" / "model.pt").exists()
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, env=env, timeout=120)
