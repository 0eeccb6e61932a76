"""The public benchmark: the LightGCN protocol on gowalla-lightgcn (and the same table on ml-1m).

    python -m benchmarks.public_benchmark --data runs/data/gowalla-lightgcn \\
        --out benchmarks/reports/gowalla-lightgcn --jobs 2

Protocol: the given test split kept, 10% of train held out for validation (prepare's
--valid-ratio 0.1), d = 64, every user ranked against all items with train items masked,
Recall/NDCG@20 and @50. Every contender trains through `trainer/run.py` (the product's own
command) with early stopping on validation Recall@20; its searched options are chosen on
validation with seed 0 (coordinate search in the order given), and the choice is then run
with every seed. Test metrics are read only for the chosen settings.

Runs are recorded in OUT/runs.jsonl (one line each, keyed by the full config), so the command
trains only what is missing: rerun it to resume, or with --report-only to rebuild the tables.
Seconds are the run's wall clock of training and validation (`sample_s + train_s + eval_s`);
with --jobs 2 two runs share the 2 cores (one thread each), so they are slower than alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from benchmarks.report_utils import command_line, mean_sd, save_figure, write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "trainer", "run.py")

# d = 64, early stopping on validation Recall@20 every 5 epochs, 3 validations of patience.
COMMON = {
    "dim": 64,
    "eval_every": 5,
    "early_stopping_patience": 3,
    "early_stopping_metric": "recall@20",
}


@dataclass(frozen=True)
class Contender:
    preset: str
    fixed: dict
    """TrainConfig fields over the preset (dotted names for sampler fields)."""
    search: list[tuple[str, list]] = field(default_factory=list)
    """(field, values) chosen in this order on validation; the first value is the start."""
    about: str = ""
    seeds: tuple[int, ...] | None = None
    """The seeds of the chosen setting (None: --seeds)."""
    common: bool = True
    """Whether COMMON (d = 64, early stopping every 5 epochs) applies; the default command
    sets only the dimension and keeps the preset's own stopping."""


CONTENDERS: dict[str, Contender] = {
    "default": Contender(
        "recommended",
        {},
        [],
        "the product's default command: `--dim 64`, nothing else "
        "(early stopping on validation, then a refit on train + validation)",
        common=False,
    ),
    "default-no-refit": Contender(
        "recommended",
        {"refit": False},
        [],
        "the default command with `--no-refit`: the best "
        "validated epoch's model, trained on 90% of train",
        common=False,
    ),
    "default+l2": Contender(
        "recommended",
        {"l2": 0.5},
        [],
        "the default command with `--l2 0.5` (the one lead of the L2 screens, "
        "chosen on validation with seeds 0 and 1): early stopping, then the refit",
        common=False,
    ),
    "softmax+shared1000": Contender(
        "recommended",
        {"loss": "softmax", "score": "cosine", "l2": 0.0, "loss_temperature": 0.1},
        [],
        "the default's sampler, batch and schedule under the sampled softmax (log-Q "
        "corrected, the positive in the normaliser) at T = 0.1",
        common=False,
        seeds=(0,),
    ),
    "bsl+adasir-b": Contender(
        "recommended",
        {
            "sampler.name": "adasir-b",
            "sampler.num_negatives": 50,
            "sampler.num_candidates": 1000,
            "sampler.temperature": 0.08,
        },
        [],
        "the default's loss and schedule over 50 negatives a pair resampled by AdaSIR-B "
        "(1,000 uniform candidates per group of 16 users, τ = T) instead of 1,000 shared "
        "uniform ones",
        common=False,
        seeds=(0,),
    ),
    "bpr+uniform": Contender(
        "paper",
        {"sampler.name": "uniform", "epochs": 150, "l2": 0.0001},
        [("lr", [0.005, 0.001]), ("l2", [0.0001, 0.001])],
        "BPR-MF: one uniform negative a pair, dot scores, lr then L2 chosen on validation",
        seeds=(0,),
    ),
    "previous-default": Contender(
        "paper",
        {
            "loss": "softmax",
            "score": "cosine",
            "loss_temperature": 0.2,
            "l2": 0.0,
            "lr": 0.01,
            "epochs": 60,
            "sampler.name": "adasir-b",
            "sampler.num_negatives": 5,
            "sampler.num_candidates": 1000,
            "sampler.temperature": 0.2,
        },
        [],
        "the `recommended` preset before this one (softmax over 5 adasir-b negatives, "
        "cosine, T 0.2, lr 0.01), with early stopping, at most 60 epochs",
        seeds=(0,),
    ),
}

PUBLISHED = [  # (model, Recall@20, NDCG@20, source) on this exact split; chosen on test
    ("MF-BPR (BARS, 300 negatives)", 0.1627, 0.1378, "BARS benchmark logs (reczoo/BARS)"),
    ("MF-CCL (BARS, 800 negatives)", 0.1837, 0.1493, "BARS benchmark logs (reczoo/BARS)"),
    ("LightGCN (3 layers)", 0.1830, 0.1554, "the LightGCN paper (He et al., SIGIR '20)"),
    ("UltraGCN", 0.1862, 0.1580, "the UltraGCN paper (Mao et al., CIKM '21)"),
    ("SimpleX (2,000 negatives)", 0.1872, 0.1557, "BARS benchmark logs (reczoo/BARS)"),
    ("MF + BSL (800 negatives, T 0.08)", 0.1882, 0.1584, "its authors' logs (junkangwu/BSL)"),
]


def settings_config(contender: Contender, settings: dict, seed: int, extra: dict) -> dict:
    """The nested --config of one run: COMMON, the contender's fields and `settings` (a
    positive_temperature is given as a multiple of the run's T)."""
    common = COMMON if contender.common else {"dim": COMMON["dim"]}
    flat = {**common, **contender.fixed, **settings, **extra}
    if seed:
        flat["seed"] = seed
    if flat.get("positive_temperature") is not None:
        flat["positive_temperature"] = round(
            flat["positive_temperature"] * flat["loss_temperature"], 6
        )
    config: dict = {}
    for name, value in flat.items():
        if value is None and name == "positive_temperature":
            continue
        if name.startswith("sampler."):
            config.setdefault("sampler", {})[name.split(".", 1)[1]] = value
        else:
            config[name] = value
    return config


def run_key(preset: str, config: dict, data: str) -> str:
    blob = json.dumps(
        {"preset": preset, "config": config, "data": os.path.basename(data)}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Runs:
    """OUT/runs.jsonl: one record per finished run, appended as each finishes."""

    def __init__(self, out: str, data: str, threads: int, report_only: bool):
        self.path, self.data, self.threads = os.path.join(out, "runs.jsonl"), data, threads
        self.report_only = report_only
        os.makedirs(out, exist_ok=True)
        self.done: dict[str, dict] = {}
        if os.path.exists(self.path):
            with open(self.path) as fh:
                for line in fh:
                    rec = json.loads(line)
                    self.done[rec["key"]] = rec

    def get(self, preset: str, config: dict) -> dict | None:
        """The run's record, training it first unless --report-only (then None if missing)."""
        key = run_key(preset, config, self.data)
        if key not in self.done and not self.report_only:
            rec = {"key": key, "preset": preset, "config": config, **self._train(preset, config)}
            with open(self.path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            self.done[key] = rec
            print(
                f"{preset} {json.dumps(config, sort_keys=True)}: valid recall@20 "
                f"{rec['best_valid']:.4f} at epoch {rec['best_epoch']}, test recall@20 "
                f"{rec['test']['recall@20']:.4f} ({rec['seconds']:.0f} s)",
                flush=True,
            )
        return self.done.get(key)

    def _train(self, preset: str, config: dict) -> dict:
        with tempfile.TemporaryDirectory(prefix="public-benchmark-") as tmp:
            out = os.path.join(tmp, "run")
            cmd = [
                sys.executable,
                RUN,
                "--data",
                self.data,
                "--out",
                out,
                "--preset",
                preset,
                "--config",
                json.dumps(config),
                "--threads",
                str(self.threads),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr[-2000:]}")
            with open(os.path.join(out, "metrics.json")) as fh:
                metrics = json.load(fh)
        return record_from_metrics(metrics)


def record_from_metrics(metrics: dict) -> dict:
    """What runs.jsonl keeps of a run's metrics.json."""
    epochs = metrics["epochs"]
    refit = metrics.get("refit", {}).get("records", [])
    record = {
        "test": metrics["test"],
        "best_epoch": metrics["early_stopping"]["best_epoch"],
        "best_valid": metrics["early_stopping"]["best_valid"],
        "epochs": len(epochs),
        "curve": [
            (e["epoch"], e["valid"]["recall@20"], e["valid"]["ndcg@20"])
            for e in epochs
            if "valid" in e
        ],
        "seconds": sum(e["sample_s"] + e["train_s"] + e.get("eval_s", 0.0) for e in epochs + refit),
        "epoch_s": [e["sample_s"] + e["train_s"] for e in epochs],
    }
    if refit:  # trained again on train + validation: the test metrics are the refit's
        record["refit_epochs"] = len(refit)
        record["test_before_refit"] = metrics["before_refit"]["test"]
    return record


def choose(runs: Runs, contender: Contender, extra: dict) -> tuple[dict, list[dict]] | None:
    """Coordinate search on validation with seed 0. Returns (settings, records tried)."""
    settings = {name: values[0] for name, values in contender.search}
    tried = []
    for name, values in contender.search:
        scored = []
        for value in values:
            cand = {**settings, name: value}
            rec = runs.get(contender.preset, settings_config(contender, cand, 0, extra))
            if rec is None:
                return None
            tried.append(rec)
            scored.append((rec["best_valid"], value))
        settings[name] = max(scored, key=lambda s: s[0])[1]
    return settings, tried


def measure(runs: Runs, name: str, contender: Contender, seeds: list[int], extra: dict):
    chosen = choose(runs, contender, extra)
    if chosen is None:
        return None
    settings, tried = chosen
    finals = [
        runs.get(contender.preset, settings_config(contender, settings, s, extra))
        for s in (contender.seeds or seeds)
    ]
    if any(f is None for f in finals):
        return None
    return {"name": name, "settings": settings, "finals": finals, "tried": tried}


def table(rows: list[dict], published: bool) -> list[str]:
    lines = [
        "| configuration | chosen on validation | seeds | test Recall@20 | test NDCG@20 | "
        "test Recall@50 | test NDCG@50 | best epoch | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        f = row["finals"]
        col = {
            k: mean_sd([r["test"][k] for r in f])
            for k in ("recall@20", "ndcg@20", "recall@50", "ndcg@50")
        }
        lines.append(
            f"| {row['name']} | {json.dumps(row['settings']) if row['settings'] else '–'} | "
            f"{len(f)} | {col['recall@20']} | {col['ndcg@20']} | {col['recall@50']} | "
            f"{col['ndcg@50']} | {', '.join(str(r['best_epoch']) for r in f)} | "
            f"{statistics.mean(r['seconds'] for r in f):.0f} |"
        )
    if published:
        lines += [
            "",
            "Published on this split (epochs and options chosen on test):",
            "",
            "| model | Recall@20 | NDCG@20 | source |",
            "|---|---|---|---|",
        ]
        lines += [f"| {m} | {r:.4f} | {n:.4f} | {s} |" for m, r, n, s in PUBLISHED]
    return lines


def plot(rows: list[dict], out: str, name: str, threads: int) -> str:
    import matplotlib.pyplot as plt  # after report_utils has chosen the file-only backend

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        f = row["finals"][0]
        per_epoch = f["seconds"] / max(1, f["epochs"])
        xs = [epoch * per_epoch for epoch, _, _ in f["curve"]]
        ax.plot(xs, [r for _, r, _ in f["curve"]], marker=".", label=row["name"])
    ax.set_xlabel(
        f"seconds of training + validation (seed 0, {threads} thread(s) a run; runs "
        "may have shared the cores)"
    )
    ax.set_ylabel("validation Recall@20")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, out, name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True, help="a prepared dataset (trainer/prepare.py)")
    ap.add_argument("--out", required=True, help="report folder (runs.jsonl, report.md, PNG)")
    ap.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, from {', '.join(CONTENDERS)}",
    )
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=1, help="contenders trained at once")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument(
        "--published", action="store_true", help="add the published gowalla-lightgcn rows"
    )
    ap.add_argument("--report-only", action="store_true", help="train nothing")
    args = ap.parse_args(argv)
    names = [n for n in args.contenders.split(",") if n]
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown:
        ap.error(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = Runs(args.out, os.path.abspath(args.data), args.threads, args.report_only)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda n: measure(runs, n, CONTENDERS[n], seeds, {}), names))
    rows = [r for r in results if r is not None]
    missing = [n for n, r in zip(names, results, strict=True) if r is None]
    plot_name = "recall20_vs_seconds"
    if rows:
        plot(rows, args.out, plot_name, args.threads)
    body = table(rows, args.published) + [""]
    if missing:
        body += [f"Not yet measured: {', '.join(missing)}.", ""]
    body += ["Contenders:", ""] + [f"- `{n}`: {CONTENDERS[n].about}" for n in names]
    body += ["", f"![validation Recall@20 against seconds]({plot_name}.png)"]
    write_report(
        args.out,
        "report",
        "Public benchmark: " + os.path.basename(os.path.abspath(args.data)),
        command_line(),
        body,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
