"""Load test of POST /recommend on a Gowalla-size model, loopback only, bounded in count and time.

    apt-get install -y wrk
    python -m benchmarks.serve_load --max-seconds 15 --concurrency 16 --out benchmarks/results/serve_load.md

Builds an MF checkpoint of 29,858 users × 40,988 items, d = 32 (random weights, real train
pairs of the Gowalla-size synthetic set, so `exclude_seen` masks real histories), starts one
uvicorn process on 127.0.0.1, loads the model, then sends requests for random known users with k = 50 from
--concurrency connections for --max-seconds (wrk; or --client httpx: --requests requests from
async Python clients, stopping early at --max-seconds), and reports
requests/s, p50/p99 latency and errors. Client and server share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import httpx
import numpy as np

from service.devserver import local_server
from trainer.core.config import TrainConfig
from trainer.core.models import build_model
from trainer.data.dataset import PreparedData
from trainer.data.prepare import PrepareOptions, prepare
from trainer.outputs.checkpoint import save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOWALLA_LIKE = "users=29858,items=40988,mean=38,minimum=10,alpha=0.5,zipf=0.6,seed=0"


def build_checkpoint(data_dir: str, model_root: str) -> tuple[str, list[str]]:
    if not os.path.isfile(os.path.join(data_dir, "manifest.json")):
        prepare(data_dir, PrepareOptions(kcore=0), synthetic=GOWALLA_LIKE, overwrite=True)
    data = PreparedData.load(data_dir)
    model = build_model("mf", data.num_users, data.num_items, 32, seed=0)
    cfg = TrainConfig(preset="paper", epochs=1)
    save_checkpoint(
        os.path.join(model_root, "gowalla-like", "checkpoint"),
        model_name="mf",
        dim=32,
        state=model.state_dict(),
        item_counts=data.item_counts(),
        data=data,
        config=cfg.model_dump(),
        metrics={"epochs": [], "test": {}},
        epoch=0,
    )
    return "gowalla-like", data.ids("users")


async def load(base: str, users: list[str], n: int, concurrency: int, k: int, max_seconds: float):
    latencies: list[float] = []
    errors = 0
    sent = 0
    stop_at = time.perf_counter() + max_seconds
    rng = random.Random(0)

    async def client(http: httpx.AsyncClient):
        nonlocal errors, sent
        while sent < n and time.perf_counter() < stop_at:
            sent += 1
            body = {"model": "gowalla-like", "user": rng.choice(users), "k": k}
            t0 = time.perf_counter()
            try:
                r = await http.post("/recommend", json=body)
                ok = r.status_code == 200 and len(r.json()["items"]) == k
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            errors += not ok

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
        await http.post(
            "/recommend", json={"model": "gowalla-like", "user": users[0], "k": k}
        )  # load
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return latencies, errors, wall


WRK_SCRIPT = """
local bodies = {%s}
math.randomseed(%d)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, "/recommend", nil, bodies[math.random(#bodies)])
end
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def recommend_bodies(users: list[str], k: int, model: str = "gowalla-like") -> list[str]:
    """JSON bodies of POST /recommend for 2,000 users drawn (seeded) from `users`."""
    rng = random.Random(0)
    return [json.dumps({"model": model, "user": rng.choice(users), "k": k}) for _ in range(2000)]


def run_wrk(base: str, bodies: list[str], concurrency: int, max_seconds: float):
    """wrk (Debian package): a C load generator, so the client costs far less CPU than httpx;
    each request POSTs one of `bodies` to /recommend, drawn at random. wrk is bounded by time
    (max_seconds); the request count is what that time allows."""
    import re
    import shutil

    threads = min(2, concurrency)  # wrk needs a connection per thread
    script = WRK_SCRIPT % (", ".join(_lua_string(b) for b in bodies), 0)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    proc = subprocess.run(
        [
            shutil.which("wrk"),
            "-t",
            str(threads),
            "-c",
            str(concurrency),
            "-d",
            f"{int(max_seconds)}s",
            "--latency",
            "-s",
            fh.name,
            base,
        ],
        capture_output=True,
        text=True,
        timeout=max_seconds + 60,
    )
    out = proc.stdout

    def ms(label):
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return total, rps, ms(50), ms(99), errors, out


CONNECTIONS_TABLE = [
    "| connections | requests | requests/s | p50 ms | p99 ms | errors |",
    "|---|---|---|---|---|---|",
]


@contextmanager
def quiet_server(model_root: str):
    """The base URL of one uvicorn serving `model_root` with 1 torch thread, no access log."""
    env = {
        **os.environ,
        "ADASIR_MODEL_ROOT": model_root,
        "ADASIR_DATA_ROOT": model_root,
        "OMP_NUM_THREADS": "1",
    }
    with local_server(env, "--log-level", "warning", "--no-access-log") as base:
        yield base


def connection_rows(base: str, bodies: list[str], concurrency: str, max_seconds: float):
    """One CONNECTIONS_TABLE row per connection count in `concurrency` (comma-separated),
    each from its own wrk run of `bodies`."""
    rows = []
    for clients in (int(c) for c in concurrency.split(",")):
        total, rps, p50, p99, errors, _ = run_wrk(base, bodies, clients, max_seconds)
        rows.append(f"| {clients} | {total:,} | {rps:.0f} | {p50:.1f} | {p99:.1f} | {errors} |")
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default="runs/data/gowalla-like")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument(
        "--max-seconds", type=float, default=120, help="time bound (wrk: the run's duration)"
    )
    ap.add_argument(
        "--client",
        choices=["wrk", "httpx"],
        default="wrk",
        help="wrk: `apt-get install wrk`; httpx: pure Python, heavier on the CPU",
    )
    ap.add_argument("--out")
    args = ap.parse_args()
    model_root = tempfile.mkdtemp(prefix="adasir-load-")
    model_id, users = build_checkpoint(args.data, model_root)
    with quiet_server(model_root) as base:
        # Load the model before measuring: the first request reads the checkpoint.
        httpx.post(
            base + "/recommend",
            json={"model": model_id, "user": users[0], "k": args.k},
            timeout=120,
        ).raise_for_status()
        if args.client == "wrk":
            total, rps, p50, p99, errors, raw = run_wrk(
                base, recommend_bodies(users, args.k), args.concurrency, args.max_seconds
            )
        else:
            lat, errors, wall = asyncio.run(
                load(base, users, args.requests, args.concurrency, args.k, args.max_seconds)
            )
            lat_ms = np.array(lat) * 1000
            total, rps = len(lat), len(lat) / wall
            p50, p99 = np.percentile(lat_ms, 50), np.percentile(lat_ms, 99)
    text = (
        f"{total} requests (POST /recommend, k={args.k}, exclude_seen) from {args.concurrency} "
        f"concurrent connections ({args.client}) to one uvicorn process on 127.0.0.1; model MF "
        f"{len(users)} users × 40,988 items, d=32; 1 torch thread in the server.\n\n"
        f"| requests/s | p50 ms | p99 ms | errors |\n|---|---|---|---|\n"
        f"| {rps:.0f} | {p50:.1f} | {p99:.1f} | {errors} |\n"
    )
    print(text)
    if args.client == "wrk" and os.environ.get("ADASIR_SHOW_WRK"):
        print(raw)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
