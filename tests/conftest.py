"""Shared fixtures: small prepared datasets, a model with fixed, known scores, and a Ray head
of a test's own."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import torch

from trainer.data.prepare import PrepareOptions, prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")

# Ray Train's controller polls its workers every 2 s by default, so each Ray run of a test
# waited up to 2 s past its last epoch; the tests' runs (and their subprocesses) poll faster.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

# Every Ray the tests start (and every driver they run) keeps its files in a temp dir of this
# test run's own, not the host's /tmp/ray: no test finds, joins or writes into a cluster that
# is not its own. Short, because Ray's socket paths are bounded.
_RAY_TMP = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
os.environ["RAY_TMPDIR"] = _RAY_TMP
atexit.register(shutil.rmtree, _RAY_TMP, ignore_errors=True)


def block_frame(users: int = 60, items: int = 40, pairs: int = 900, seed: int = 0):
    """A pandas DataFrame (user, item) of users who like the items next to their own number:
    a signal one epoch learns, small enough for many fits in a test."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, pairs)
    i = (u + rng.integers(0, 8, pairs)) % items
    df = pd.DataFrame({"user": [f"u{x}" for x in u], "item": [f"i{x}" for x in i]})
    return df.drop_duplicates().reset_index(drop=True)


class FixedScores:
    """A ScoringModel whose scores are a given [users, items] table."""

    def __init__(self, table: torch.Tensor):
        self.table = table
        self.num_items = table.shape[1]

    def score(self, users, items, scratch=None):
        return self.table[users[:, None], items]

    def score_all(self, users):
        return self.table[users]

    def score_shared(self, users, items):
        return self.table[users][:, items]

    def score_groups(self, users, items):
        return self.table[users[:, :, None], items[:, None, :]]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> str:
    """A prepared synthetic dataset: ~600 users, ~400 items."""
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    prepare(out, PrepareOptions(seed=0), synthetic="users=600,items=400,mean=25,seed=1")
    return out


@pytest.fixture(scope="session")
def rated_data(tiny_data, tmp_path_factory) -> str:
    """tiny_data's pairs with a rating each, 1–5 (a function of the pair), prepared again
    from a TSV with a rating column."""
    from trainer.data.dataset import PreparedData

    data = PreparedData.load(tiny_data)
    folder = tmp_path_factory.mktemp("rated")
    with open(folder / "rated.tsv", "w") as fh:
        fh.write("user\titem\trating\n")
        for split in data.splits.values():
            for u, i in zip(split.users.tolist(), split.items.tolist(), strict=True):
                fh.write(f"u{u}\ti{i}\t{pair_rating(u, i)}\n")
    out = str(folder / "prepared")
    prepare(out, PrepareOptions(seed=0), input_path=str(folder / "rated.tsv"))
    return out


def pair_rating(user: int, item: int) -> int:
    """rated_data's rating of a pair (its raw user and item numbers)."""
    return (user * 7 + item * 3) % 5 + 1


def ray_bin() -> str:
    return shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")


@contextlib.contextmanager
def own_ray_head(env: dict, num_cpus: int = 2):
    """A `ray start --head` of the test's own, yielding (env, dashboard port): its temp dir
    (RAY_TMPDIR in the env yielded, so that the `ray` commands and drivers run with it find
    this cluster and no other) and free ports, never Ray's defaults. It is stopped by ending
    its own process group (`--block` keeps every process of it there), never by `ray stop`,
    which would stop every Ray on the host."""
    from service.devserver import free_port

    tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths are bounded
    env = {**env, "RAY_TMPDIR": tmp}
    dashboard = free_port()
    ports = {
        "--port": free_port(),
        "--dashboard-port": dashboard,
        "--ray-client-server-port": free_port(),
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    proc = subprocess.Popen(
        [
            ray_bin(),
            "start",
            "--head",
            "--block",
            "--num-cpus",
            str(num_cpus),
            *[str(x) for pair in ports.items() for x in pair],
            "--temp-dir",
            os.path.join(tmp, "ray"),
            "--object-store-memory",
            str(256 * 1024 * 1024),
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_ray_start(proc)
        yield env, dashboard
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_for_ray_start(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Read `ray start --block`'s output until the cluster is up (then keep draining it, so
    that a full pipe never blocks Ray); fail with its output if it exits first."""
    seen: list[str] = []
    started = threading.Event()

    def drain() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            seen.append(line)
            if "Ray runtime started" in line:
                started.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not started.wait(0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("ray start --head failed:\n" + "".join(seen)[-3000:])


RAY_SHIM = """#!{python}
# The tests' `ray`: Ray's own command, except `ray stop`, which stops only the Ray processes of
# this script's session (tests/ray_processes.py), never every Ray on the host as Ray's does.
import importlib.util, os, sys
if sys.argv[1:2] == ["stop"]:
    spec = importlib.util.spec_from_file_location("ray_processes", {helpers!r})
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    helpers.stop_ray_of_session(os.getsid(0), {{os.getpid(), os.getppid()}})
    from ray._private.utils import get_ray_address_file
    if os.path.exists(get_ray_address_file(None)):  # as Ray's stop: no address of a dead head
        os.remove(get_ray_address_file(None))
    sys.exit(0)
os.execv({ray!r}, [{ray!r}, *sys.argv[1:]])
"""


def script_env(env: dict, tmp: str) -> dict:
    """`env` for a script that runs `ray start` and `ray stop` as the docs write them: its own
    Ray temp dir (RAY_TMPDIR, so no cluster of the host is found or joined) and a `ray` first
    on PATH whose `stop` stops this script's Ray alone."""
    shim_dir = os.path.join(tmp, "bin")
    os.makedirs(shim_dir, exist_ok=True)
    shim = os.path.join(shim_dir, "ray")
    with open(shim, "w") as fh:
        helpers = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ray_processes.py")
        fh.write(RAY_SHIM.format(python=sys.executable, helpers=helpers, ray=ray_bin()))
    os.chmod(shim, 0o755)
    ray_tmp = os.path.join(tmp, "ray-tmp")
    os.makedirs(ray_tmp, exist_ok=True)
    return {**env, "PATH": f"{shim_dir}{os.pathsep}{env.get('PATH', '')}", "RAY_TMPDIR": ray_tmp}


def ports_in_use(*ports: int) -> list[int]:
    """Which of these localhost ports something already listens on."""
    import socket

    busy = []
    for port in ports:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    return busy
