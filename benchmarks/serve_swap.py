"""Requests against a model while it is re-saved: dropped, misrouted, and how /healthz fares.

    python -m benchmarks.serve_swap --out benchmarks/results

Loopback only, bounded in count and time. Trains two models of a small synthetic set with
`trainer/run.py`, starts uvicorn, then at once:

- client threads POST /recommend for the re-saved model by name and for `latest`, and check
  each answer names the model asked for (`latest` must be the re-saved one, written last);
- the re-saved model is trained again `--saves` times with `run.py --overwrite`;
- a 10 MB body (must get 413) and a /recommend/batch of 1000 users × k = 100 are sent
  every second;
- /healthz is polled every 20 ms and its latency recorded.

With `--ray-serve N`, the same app runs as a Ray Serve application (`adasir serve --ray`, N
replicas on a local Ray) instead of one uvicorn process.

Reports requests, non-2xx answers (the deliberate 413s apart), misrouted answers and /healthz
latency percentiles. With `--failing-s S`, after the re-saves the clients run S seconds against
the healthy model, then S seconds after a newer checkpoint that cannot be loaded (a truncated
model.pt) replaced it: the cached model must keep answering, at the healthy throughput.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import httpx

from benchmarks.report_utils import command_line
from service.devserver import local_ray_serve, local_server
from trainer.data.prepare import PrepareOptions, prepare
from trainer.outputs.checkpoint import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUN = os.path.join(ROOT, "trainer", "run.py")


def _train(data: str, out: str, *extra: str) -> None:
    subprocess.run(
        [
            sys.executable,
            RUN,
            "--data",
            data,
            "--out",
            out,
            "--epochs",
            "1",
            "--batch-size",
            "1024",
            "--threads",
            "1",
            *extra,
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = self.non_2xx = self.misrouted = self.refused_413 = 0
        self.errors: list[str] = []

    def add(self, ok: bool, misrouted: bool = False, note: str = "") -> None:
        with self.lock:
            self.requests += 1
            self.non_2xx += not ok
            self.misrouted += misrouted
            if note and len(self.errors) < 10:
                self.errors.append(note)


def _client_loop(base, users, stop, tally, first_save_done):
    with httpx.Client(base_url=base, timeout=30) as http:
        i = 0
        while not stop.is_set():
            i += 1
            asked = "swap" if i % 2 else "latest"
            r = http.post(
                "/recommend", json={"model": asked, "user": users[i % len(users)], "k": 10}
            )
            ok = r.status_code == 200
            answered = r.json().get("model") if ok else None
            wrong = ok and (
                answered != "swap" if asked == "swap" or first_save_done.is_set() else False
            )
            tally.add(
                ok, wrong, "" if ok and not wrong else f"{asked}: {r.status_code} {r.text[:120]}"
            )


def _abuse_loop(base, users, stop, tally):
    big = b'{"user": "' + b"x" * (10 << 20) + b'"}'
    with httpx.Client(base_url=base, timeout=60) as http:
        while not stop.is_set():
            r = http.post("/recommend", content=big, headers={"content-type": "application/json"})
            with tally.lock:
                tally.refused_413 += r.status_code == 413
            r = http.post(
                "/recommend/batch", json={"model": "swap", "users": users[:1000], "k": 100}
            )
            tally.add(
                r.status_code == 200,
                r.status_code == 200 and r.json()["model"] != "swap",
                "" if r.status_code == 200 else f"batch: {r.status_code}",
            )
            stop.wait(1.0)


def _phase(tally: Tally, seconds: float) -> tuple[float, int]:
    """(requests a second, non-2xx answers) of the clients over the next `seconds`."""
    with tally.lock:
        requests, bad = tally.requests, tally.non_2xx
    time.sleep(seconds)
    with tally.lock:
        return (tally.requests - requests) / seconds, tally.non_2xx - bad


def _break_checkpoint(checkpoint: str) -> None:
    """A newer model.pt that cannot be loaded takes the checkpoint's place."""
    path = os.path.join(checkpoint, "model.pt")
    with open(path, "rb") as fh:
        head = fh.read(100)
    with open(path + ".broken", "wb") as fh:
        fh.write(head)
    os.replace(path + ".broken", path)
    later = os.path.getmtime(path) + 5
    os.utime(path, (later, later))


def _health_loop(base, stop, latencies):
    with httpx.Client(base_url=base, timeout=30) as http:
        while not stop.is_set():
            t0 = time.perf_counter()
            http.get("/healthz")
            latencies.append(time.perf_counter() - t0)
            stop.wait(0.02)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", required=True)
    ap.add_argument("--saves", type=int, default=40)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--failing-s", type=float, default=0.0)
    ap.add_argument(
        "--ray-serve",
        type=int,
        default=0,
        metavar="REPLICAS",
        help="serve through `adasir serve --ray` with this many replicas instead of uvicorn",
    )
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="serve-swap-")
    data, models = os.path.join(work, "data"), os.path.join(work, "models")
    prepare(data, PrepareOptions(), synthetic="users=1500,items=1000,mean=25,seed=1")
    _train(data, os.path.join(models, "other"))
    _train(data, os.path.join(models, "swap"))
    users = load_checkpoint(os.path.join(models, "swap", "checkpoint"))["user_ids"]
    env = {**os.environ, "ADASIR_MODEL_ROOT": models, "ADASIR_DATA_ROOT": data}
    if args.ray_serve:
        env.update(
            RAY_AUTH_MODE="disabled",
            ADASIR_SERVE_REPLICAS=str(args.ray_serve),
            ADASIR_SERVE_REPLICA_CPUS="0.25",
        )
        env.pop("RAY_ADDRESS", None)
    server = local_ray_serve(env) if args.ray_serve else local_server(env, "--log-level", "warning")
    with server as base:
        stop, first_save, tally, latencies = threading.Event(), threading.Event(), Tally(), []
        threads = [
            threading.Thread(target=_client_loop, args=(base, users, stop, tally, first_save))
            for _ in range(args.clients)
        ]
        threads += [
            threading.Thread(target=_abuse_loop, args=(base, users, stop, tally)),
            threading.Thread(target=_health_loop, args=(base, stop, latencies)),
        ]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        phases = []
        try:
            for n in range(args.saves):
                _train(data, os.path.join(models, "swap"), "--overwrite", "--seed", str(n + 1))
                first_save.set()
            if args.failing_s:
                phases.append(("healthy checkpoint", *_phase(tally, args.failing_s)))
                _break_checkpoint(os.path.join(models, "swap", "checkpoint"))
                phases.append(
                    ("a newer checkpoint that fails to load", *_phase(tally, args.failing_s))
                )
        finally:
            seconds = time.perf_counter() - t0
            stop.set()
            for t in threads:
                t.join()
    lat = sorted(latencies)
    pct = {q: lat[min(len(lat) - 1, int(q / 100 * len(lat)))] * 1000 for q in (50, 99)}
    text = "\n".join(
        [
            "# Serving while the model is re-saved",
            "",
            "```bash",
            command_line(),
            "```",
            "",
            f"{args.saves} re-saves through `trainer/run.py --overwrite` in {seconds:.0f} s; "
            f"{args.clients} client threads; cores: {os.cpu_count()}; served by "
            + (f"Ray Serve, {args.ray_serve} replicas." if args.ray_serve else "one uvicorn."),
            "",
            "| what | measured |",
            "|---|---|",
            f"| requests (single and batch) | {tally.requests} |",
            f"| non-2xx answers | {tally.non_2xx} |",
            f"| misrouted answers | {tally.misrouted} |",
            f"| 10 MB bodies answered 413 | {tally.refused_413} |",
            f"| /healthz polls | {len(lat)} |",
            f"| /healthz p50 / p99 / max | {pct[50]:.1f} / {pct[99]:.1f} / {lat[-1] * 1000:.1f} ms |",
            f"| /healthz mean | {statistics.mean(lat) * 1000:.1f} ms |",
            "",
            *(f"- {e}" for e in tally.errors),
            "",
            *(
                [
                    f"Then {args.failing_s:.0f} s against each (same clients):",
                    "",
                    "| model on disk | requests a second | non-2xx |",
                    "|---|---|---|",
                    *(f"| {name} | {rate:.0f} | {bad} |" for name, rate, bad in phases),
                    "",
                ]
                if phases
                else []
            ),
        ]
    )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "serve_swap.md"), "w") as fh:
        fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
