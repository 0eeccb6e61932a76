"""All-user export on Ray Data over 1 and 2 Ray nodes started on this machine, beside the
in-process export: wall seconds, rows a second, and peak memory of the driver and of each
ranking actor.

    python -m benchmarks.export_nodes --model runs/models/gowalla-s0 -k 100 --nodes 1,2 \
        --out benchmarks/reports/gowalla-lightgcn

Each node is a `ray start` with 1 CPU (the first the head); the export runs as a user runs
it, `adasir recommend --all --ray --workers N --ray-address ...`, one actor per node. Peak
memory is each process's VmHWM, read from /proc while it runs. Stops every Ray on this
machine first (`ray stop --force`): run it alone.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time

from benchmarks.report_utils import command_line, write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 6391
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


class ActorMemory:
    """Peak RSS (MB) of every Ray Data map actor seen while it runs, by pid."""

    def __init__(self, every_s: float = 0.2):
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._every = every_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(self._every):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                peak = _map_actor_peak_mb(pid)
                if peak is not None:
                    self.peaks[int(pid)] = max(peak, self.peaks.get(int(pid), 0.0))


def _map_actor_peak_mb(pid: str) -> float | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if not fh.read(64).startswith(b"ray::MapWorker"):
                return None
        with open(f"/proc/{pid}/status") as fh:
            hwm = next(line for line in fh if line.startswith("VmHWM:"))
        return int(hwm.split()[1]) / 1024
    except (OSError, StopIteration):
        return None  # gone meanwhile


def start_nodes(n: int) -> None:
    subprocess.run(["ray", "stop", "--force"], capture_output=True, env=ENV)
    common = ["--num-cpus", "1", "--object-store-memory", str(256 << 20)]
    head = ["ray", "start", "--head", "--port", str(PORT), "--dashboard-port", "8278", *common]
    subprocess.run(head + ["--disable-usage-stats"], check=True, capture_output=True, env=ENV)
    for _ in range(n - 1):
        joiner = ["ray", "start", "--address", f"127.0.0.1:{PORT}", *common]
        subprocess.run(joiner, check=True, capture_output=True, env=ENV)


def export_once(args, nodes: int) -> dict:
    """One export as a user runs it; nodes = 0: in process, without Ray."""
    out = os.path.join(ROOT, "runs", f"export-nodes-{nodes}")
    cmd = ["/usr/bin/time", "-f", "maxrss_kb %M", sys.executable, "-m", "adasir"]
    cmd += ["recommend", "--model", args.model, "--all"]
    cmd += ["-k", str(args.k), "--out", out + ("" if nodes else ".parquet")]
    if nodes:
        start_nodes(nodes)
        cmd += ["--ray", "--workers", str(nodes), "--ray-address", f"127.0.0.1:{PORT}"]
    start = time.perf_counter()
    with ActorMemory() as actors:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"export on {nodes} node(s) failed:\n{proc.stderr[-2000:]}")
    found = re.search(r"wrote ([\d,]+) rows .* in ([\d.]+) s", proc.stderr)
    rows, seconds = int(found.group(1).replace(",", "")), float(found.group(2))
    driver = int(re.search(r"maxrss_kb (\d+)", proc.stderr).group(1)) / 1024
    return {
        "nodes": nodes,
        "rows": rows,
        "seconds": seconds,
        "wall": wall,
        "driver_mb": driver,
        "actors_mb": sorted(actors.peaks.values()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True)
    ap.add_argument("-k", type=int, default=100)
    ap.add_argument("--nodes", default="1,2")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    results = [export_once(args, 0)]
    try:
        results += [export_once(args, int(n)) for n in args.nodes.split(",")]
    finally:
        subprocess.run(["ray", "stop", "--force"], capture_output=True, env=ENV)
    rows = [
        "| run | rows | export s | rows/s | wall s (with start-up) | driver peak MB "
        "| ranking actors' peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        name = f"Ray Data, {r['nodes']} node(s)" if r["nodes"] else "in process"
        actors = " / ".join(f"{m:,.0f}" for m in r["actors_mb"]) or "—"
        rows.append(
            f"| {name} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows'] / max(r['seconds'], 0.01):,.0f} "
            f"| {r['wall']:.1f} | {r['driver_mb']:,.0f} | {actors} |"
        )
    body = [
        f"Model `{os.path.relpath(args.model, ROOT)}`, k = {args.k}. Nodes are `ray start` "
        "processes on this machine, 1 CPU each. Peak memory: the `adasir recommend` process "
        "(`/usr/bin/time`'s maximum RSS) and each Ray Data ranking actor (VmHWM).",
        "",
        *rows,
    ]
    write_report(args.out, "export_nodes", "All-user export on Ray Data", command_line(), body)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
