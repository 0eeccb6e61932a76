"""The service as a Ray Serve application, over real HTTP: `adasir serve --ray` on a local
Ray with two replicas answers as the Python API does, and keeps answering (0 non-2xx) while
its model is retrained in place."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from conftest import ROOT
from ray_processes import stop_ray_of_session

from service.devserver import free_port
from service.recommender import user_answers
from trainer import Model


def _wait_for(base: str, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(1)
    raise AssertionError("Ray Serve did not come up")


@pytest.mark.ray
@pytest.mark.slow
def test_ray_serve_answers_and_survives_a_model_swap(tiny_data, tmp_path):
    models = tmp_path / "models"
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
        "ADASIR_MODEL_ROOT": str(models),
        "ADASIR_SERVE_REPLICAS": "2",
        "ADASIR_SERVE_REPLICA_CPUS": "0.25",
    }
    env.pop("RAY_ADDRESS", None)
    train = [
        sys.executable,
        os.path.join(ROOT, "trainer", "run.py"),
        "--data",
        tiny_data,
        "--out",
        str(models / "m1"),
        "--epochs",
        "2",
        "--no-refit",
        "--threads",
        "1",
    ]
    assert subprocess.run(train, env=env, capture_output=True, timeout=300).returncode == 0
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "adasir", "serve", "--ray", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(base, proc)
        model = Model.load(models / "m1")
        user = model.user_ids[5]
        ask = {"model": "m1", "user": user, "k": 5}
        r = httpx.post(base + "/recommend", json=ask, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["items"] == user_answers(model, [user], 5)[0]["items"]
        statuses: list[int] = []
        done = threading.Event()

        def client():
            with httpx.Client(base_url=base, timeout=30) as http:
                while not done.is_set():
                    statuses.append(http.post("/recommend", json=ask).status_code)

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        swap = subprocess.run(
            [*train, "--overwrite", "--seed", "7"], env=env, capture_output=True, timeout=300
        )
        time.sleep(2)
        done.set()
        for t in threads:
            t.join(60)
        assert swap.returncode == 0, swap.stderr[-2000:]
        assert statuses and set(statuses) == {200}, sorted(set(statuses))
        retrained = user_answers(Model.load(models / "m1"), [user], 5)[0]["items"]
        deadline = time.monotonic() + 30  # each replica picks the new checkpoint up
        while time.monotonic() < deadline:
            answers = [
                httpx.post(base + "/recommend", json=ask, timeout=30).json()["items"]
                for _ in range(4)
            ]
            if all(a == retrained for a in answers):
                break
            time.sleep(0.5)
        assert all(a == retrained for a in answers)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        stop_ray_of_session(proc.pid)  # what it left of its Ray, no other on the host
