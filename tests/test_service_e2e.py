"""End to end over real HTTP: a real Ray head, a real uvicorn; submit a job, wait, recommend."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import httpx
import pytest
import torch
from conftest import own_ray_head, ray_bin

from service.devserver import local_server
from trainer.core.models import build_model
from trainer.outputs.checkpoint import load_checkpoint


@pytest.mark.ray
@pytest.mark.slow
def test_submit_poll_recommend_over_http(tiny_data, tmp_path):
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
    }
    with own_ray_head(env) as (env, dash):
        _submit_poll_recommend(env, dash, tiny_data, tmp_path)


def _submit_poll_recommend(env: dict, dash: int, tiny_data, tmp_path) -> None:
    """POST /jobs to the Ray head at `dash`, follow the job, query its model."""
    data_root, model_root = tmp_path / "data", tmp_path / "models"
    data_root.mkdir()
    shutil.copytree(tiny_data, data_root / "tiny")
    env = {
        **env,
        "ADASIR_DATA_ROOT": str(data_root),
        "ADASIR_MODEL_ROOT": str(model_root),
        "ADASIR_RAY_ADDRESS": f"http://127.0.0.1:{dash}",
        "ADASIR_API_TOKEN": "e2e-token",
        "ADASIR_MAX_RUNNING_JOBS": "1",
    }
    auth = {"Authorization": "Bearer e2e-token"}
    with (
        local_server(env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as base,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        r = http.post(
            "/jobs",
            headers=auth,
            json={
                "dataset": "tiny",
                "train": {"epochs": 3, "lr": 0.01, "batch_size": 1024, "eval_every": 1},
            },
        )
        assert r.status_code == 201, r.text
        job = r.json()["id"]
        # One job is the limit here: another while it runs is a 429 saying when to retry.
        again = http.post("/jobs", headers=auth, json={"dataset": "tiny"})
        assert again.status_code == 429 and again.headers["Retry-After"] == "30", again.text
        status = None
        deadline = time.time() + 300
        while time.time() < deadline:
            info = http.get(f"/jobs/{job}", headers=auth).json()
            status = info["status"]
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            time.sleep(1)
        assert status == "SUCCEEDED", info
        assert info["epochs_done"] == 3 and info["latest_epoch"]["valid"]["ndcg@50"] > 0
        assert any("epoch 3/3" in line for line in info["log_tail"])
        assert job in [j["id"] for j in http.get("/jobs", headers=auth).json()["jobs"]]
        assert http.get("/jobs/adasir-nope", headers=auth).status_code == 404
        # Another service (its own model root) on the same cluster sees none of them.
        from service.jobs import JobService, UnknownJob
        from service.settings import Settings

        other = JobService(
            Settings.from_env({**env, "ADASIR_MODEL_ROOT": str(tmp_path / "other-models")})
        )
        assert job not in [j["id"] for j in other.list()]
        with pytest.raises(UnknownJob):
            other.get(job)
        # A job someone else submitted to the cluster is neither shown nor stopped.
        foreign = subprocess.run(
            [
                ray_bin(),
                "job",
                "submit",
                "--address",
                f"http://127.0.0.1:{dash}",
                "--no-wait",
                "--submission-id",
                "foreign-job",
                "--",
                "sleep",
                "60",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert foreign.returncode == 0, foreign.stderr
        assert http.get("/jobs/foreign-job", headers=auth).status_code == 404
        assert http.delete("/jobs/foreign-job", headers=auth).status_code == 404
        status = subprocess.run(
            [ray_bin(), "job", "status", "--address", f"http://127.0.0.1:{dash}", "foreign-job"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert "STOPPED" not in status.stdout, status.stdout

        ckpt = load_checkpoint(str(model_root / "jobs" / job / "checkpoint"))
        user_index = 11
        user = ckpt["user_ids"][user_index]
        r = http.post("/recommend", json={"model": f"jobs/{job}", "user": user, "k": 10})
        assert r.status_code == 200, r.text
        items = [x["item"] for x in r.json()["items"]]
        seen = {int(i) for u, i in zip(ckpt["seen_users"], ckpt["seen_items"]) if u == user_index}
        assert not {ckpt["item_ids"][i] for i in seen} & set(items)
        # The job trained the recommended preset (cosine scores): rank as its model does.
        train = ckpt["config"]["train"]
        model = build_model(
            train["model"],
            len(ckpt["user_ids"]),
            len(ckpt["item_ids"]),
            train["dim"],
            0,
            score=train["score"],
        )
        model.load_state_dict(ckpt["state"])
        assert train["score"] == "cosine" and train["loss"] == "bsl"
        queries, vectors = model.serving_vectors()
        scores = (vectors @ queries[user_index]).detach()
        scores[list(seen)] = -float("inf")
        assert items == [ckpt["item_ids"][i] for i in torch.topk(scores, 10).indices.tolist()]


@pytest.mark.slow
def test_oversized_bodies_get_413_over_real_http(tmp_path):
    """Content-Length over the cap is refused before reading; a chunked body as soon as the
    streamed bytes pass it. /healthz keeps answering."""
    env = {**os.environ, "ADASIR_MODEL_ROOT": str(tmp_path), "ADASIR_MAX_BODY_BYTES": "100000"}
    with (
        local_server(env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as base,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        big = b'{"user": "' + b"x" * 10_000_000 + b'"}'
        r = http.post("/recommend", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and len(r.content) < 200

        def chunks():
            yield b'{"user": "'
            for _ in range(100):
                yield b"x" * 100_000
            yield b'"}'

        r = http.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert http.get("/healthz").json() == {"status": "ok"}
        r = http.post("/recommend", json={"user": "u"})
        assert r.status_code == 404 and "no trained models" in r.json()["detail"]


@pytest.mark.slow
def test_the_fold_in_load_benchmark_runs_over_real_http(tiny_data, tmp_path):
    """benchmarks/serve_fold_in.py (and serve_load's wrk driver it shares) against a real
    uvicorn, briefly: every request answered, none an error."""
    if not shutil.which("wrk"):
        pytest.skip("wrk is not installed (apt-get install -y wrk)")
    from benchmarks.serve_fold_in import main
    from trainer.core.config import TrainConfig
    from trainer.core.training import train_in_process
    from trainer.data.dataset import PreparedData

    run = tmp_path / "models" / "tiny-run"
    config = TrainConfig(
        preset="paper", epochs=1, lr=0.01, batch_size=1024, loss="softmax", score="cosine"
    )
    train_in_process(config, PreparedData.load(tiny_data), str(run), log=lambda s: None)
    assert (
        main(
            [
                "--model",
                str(run),
                "--concurrency",
                "1,2",
                "--max-seconds",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    report = (tmp_path / "serve_fold_in.md").read_text()
    rows = [
        line.split("|")
        for line in report.splitlines()
        if line.startswith("| 1 |") or line.startswith("| 2 |")
    ]
    assert len(rows) == 2 and all(
        int(r[2].replace(",", "")) > 0 and r[6].strip() == "0" for r in rows
    )
