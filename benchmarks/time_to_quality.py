"""Time to quality: validation Recall@20 against wall seconds, per trainer, and epoch profiles.

    python -m benchmarks.time_to_quality --data runs/data/gowalla-lightgcn --dim 64 \
        --threads 2 --implicit als,bpr --out benchmarks/reports/gowalla-lightgcn
    python -m benchmarks.time_to_quality --data runs/data/gowalla-lightgcn --dim 64 \
        --device cuda --reference-recall 0.1621 --out benchmarks/reports/gowalla-lightgcn-cuda

Each product trainer runs in this process, alone, as a user runs it (its own validation
cadence, early stopping and lr schedule; no refit, which is a second pass of the best
epoch's length): a point per validation, at the wall seconds since the run began (sampling,
training and its validations). implicit's ALS and BPR (CPU) are fitted with 1, 2, 3, 5, ...
iterations, each from scratch: a point per fit, at its fit seconds; they are scored by the
same evaluator. The reference is ALS's best validation Recall@20 here (or --reference-recall,
from a CPU report, where implicit is not run); a row says when each trainer first reached it.

Epoch profiles come from interleaved rounds (one epoch of every trainer per round, after a
warm-up epoch each; the median over rounds) so that drift shares out evenly; `eval` is one
full validation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from benchmarks.report_utils import command_line, save_figure, write_report
from trainer.core.callbacks import Callback
from trainer.core.engine import Engine
from trainer.core.presets import build_config, fit_to_data
from trainer.data.dataset import PreparedData

# name: (preset, options over it). BPR's lr and L2 are what validation chose on
# gowalla-lightgcn (public_benchmark.py's bpr+uniform); DNS takes the same.
_BPR = {"lr": 0.001, "l2": 0.001, "epochs": 150, "eval_every": 5, "early_stopping_patience": 3}
TRAINERS: dict[str, tuple[str, dict]] = {
    "default": ("recommended", {"refit": False}),
    "bpr-uniform": ("paper", {**_BPR, "sampler": {"name": "uniform"}}),
    "dns": ("paper", {**_BPR, "sampler": {"name": "dns"}}),
}
IMPLICIT_ITERATIONS = {"als": [1, 2, 3, 5, 8, 15], "bpr": [10, 25, 50, 100, 200]}
IMPLICIT_OPTIONS = {
    # ALS: α and λ chosen on gowalla-lightgcn's validation (implicit_reference.py's report).
    "als": {"alpha": 100.0, "lambda": 0.1},
    # BPR: the start of implicit_reference.py's grid, not tuned: a lower bound for BPR.
    "bpr": {"lr": 0.01, "lambda": 0.01},
}


class WallCurve(Callback):
    """(wall seconds since the run began, epoch, valid Recall@20) at each validation.

    Where the trainer validates on a sample of users (TrainConfig.valid_users), the point's
    Recall@20 is a full validation of the same model, off the clock: the seconds are what the
    run costs, the quality is comparable with the references' full validations."""

    def __init__(self):
        self.start, self.points = 0.0, []

    def on_fit_start(self, engine) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, engine, records, test) -> None:
        if "valid" not in records[-1]:
            return
        now = time.perf_counter()
        recall = records[-1]["valid"]["recall@20"]
        if engine.validates_a_sample:
            recall = engine.evaluate("valid", final=True)["recall@20"]
            self.start += time.perf_counter() - now
        self.points.append((now - self.start, records[-1]["epoch"], recall))


def trainer_config(name: str, args, num_items: int):
    """The trainer's config as the command line builds it (a preset's negative count that
    the catalogue cannot hold is fitted to it)."""
    preset, options = TRAINERS[name]
    given = {**options, "dim": args.dim, "seed": args.seed, "device": args.device}
    return fit_to_data(build_config(preset, given), num_items, given)


def product_curve(name: str, data: PreparedData, args) -> dict:
    curve = WallCurve()
    result = Engine(trainer_config(name, args, data.num_items), data).fit([curve])
    return {"points": curve.points, "test": result["test"], "epochs": len(result["epochs"])}


def implicit_curve(kind: str, data: PreparedData, args) -> dict:
    from benchmarks.implicit_reference import evaluator, fit, train_matrix

    x, evaluate, points = train_matrix(data), evaluator(data), []
    options = {"dim": args.dim, **IMPLICIT_OPTIONS[kind]}
    for iterations in IMPLICIT_ITERATIONS[kind]:
        model, seconds = fit(kind, x, options, iterations, args.seed, args.threads)
        points.append((seconds, iterations, evaluate(model, "valid")["recall@20"]))
        print(f"implicit {kind} {iterations} iterations: {points[-1]}", flush=True)
    return {"points": points, "test": None, "epochs": None}


def epoch_profiles(names: list[str], data: PreparedData, args) -> dict[str, dict]:
    """Median sample / train seconds per epoch over interleaved rounds, and one validation."""
    engines = {n: Engine(trainer_config(n, args, data.num_items), data) for n in names}
    for engine in engines.values():
        engine.train_epoch()  # warm-up
    rounds: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name, engine in engines.items():
            start = time.perf_counter()
            record = engine.train_epoch()
            record["wall_s"] = time.perf_counter() - start
            rounds[name].append(record)
    out = {}
    for name, engine in engines.items():
        start = time.perf_counter()
        engine.evaluate("valid")
        out[name] = {
            k: statistics.median(r[f"{k}_s"] for r in rounds[name])
            for k in ("sample", "train", "wall")
        } | {"eval": time.perf_counter() - start}
    return out


def first_reach(points: list, target: float) -> float | None:
    return next((s for s, _, v in points if v >= target), None)


def summary_rows(curves: dict[str, dict], reference: float | None) -> list[str]:
    lines = [
        "| trainer | best valid Recall@20 | s to reach the reference | s to reach 99% of its "
        "best | s in all | validations | test Recall@20 / NDCG@20 of its chosen epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in curves.items():
        best = max(v for _, _, v in c["points"])
        reach = first_reach(c["points"], reference) if reference else None
        own = first_reach(c["points"], 0.99 * best)
        total = c["points"][-1][0] if c["test"] else sum(s for s, _, _ in c["points"])
        test = f"{c['test']['recall@20']:.4f} / {c['test']['ndcg@20']:.4f}" if c["test"] else "—"
        lines.append(
            f"| {name} | {best:.4f} | {'not reached' if reach is None else f'{reach:.1f}'} "
            f"| {own:.1f} | {total:.1f} | {len(c['points'])} | {test} |"
        )
    return lines


def profile_rows(profiles: dict[str, dict]) -> list[str]:
    lines = [
        "| trainer | sample s | train s | other s | epoch s | sampling share | one validation s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in profiles.items():
        other = max(0.0, p["wall"] - p["sample"] - p["train"])
        lines.append(
            f"| {name} | {p['sample']:.3f} | {p['train']:.3f} | {other:.3f} | {p['wall']:.3f} "
            f"| {p['sample'] / p['wall']:.0%} | {p['eval']:.3f} |"
        )
    return lines


def plot(curves: dict[str, dict], reference: float | None, out: str, name: str, title: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for trainer, c in curves.items():
        xs, _, ys = zip(*c["points"])
        ax.plot(xs, ys, marker=".", label=trainer)
    if reference:
        ax.axhline(reference, color="grey", linestyle=":", label="reference (ALS)")
    ax.set_xscale("log")
    ax.set(xlabel="wall seconds", ylabel="validation Recall@20", title=title)
    ax.legend()
    return save_figure(fig, out, name)


def report(args, profiles: dict, curves: dict, reference: float | None) -> None:
    """OUT/time_to_quality_DEVICE.{md,json,png} from what has been measured so far."""
    name = f"time_to_quality_{args.device}"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{name}.json"), "w") as fh:
        json.dump({"profiles": profiles, "curves": curves, "reference": reference}, fh)
    shown = "none" if reference is None else f"{reference:.4f}"
    body = [
        f"{os.path.basename(args.data)}, d = {args.dim}, device {args.device}, torch threads "
        f"{torch.get_num_threads()}, seed {args.seed}. Reference: validation Recall@20 {shown}.",
        "",
        "Epoch profile (median of interleaved rounds):",
        "",
        *profile_rows(profiles),
        "",
    ]
    if curves:
        title = f"{os.path.basename(os.path.normpath(args.data))}, {args.device}"
        figure = plot(curves, reference, args.out, name, title)
        body += [*summary_rows(curves, reference), "", f"![curves]({os.path.basename(figure)})"]
    write_report(args.out, name, "Time to quality", command_line(), body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--trainers", default=",".join(TRAINERS))
    ap.add_argument("--implicit", default="", help="comma list of als, bpr (CPU only)")
    ap.add_argument("--reference-recall", type=float)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-curves", action="store_true", help="epoch profiles only")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = PreparedData.load(args.data)
    names = args.trainers.split(",")
    profiles = epoch_profiles(names, data, args)
    print("\n".join(profile_rows(profiles)), flush=True)
    curves: dict[str, dict] = {}
    for kind in filter(None, args.implicit.split(",")):
        curves[f"implicit-{kind}"] = implicit_curve(kind, data, args)
    reference = args.reference_recall
    if "implicit-als" in curves:
        reference = max(v for _, _, v in curves["implicit-als"]["points"])
    report(args, profiles, curves, reference)
    for name in [] if args.skip_curves else names:
        curves[name] = product_curve(name, data, args)
        report(args, profiles, curves, reference)  # after each: a killed run keeps the rest
    return 0


if __name__ == "__main__":
    sys.exit(main())
