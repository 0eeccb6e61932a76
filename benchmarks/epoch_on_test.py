"""What choosing the epoch on the test set would add: a finished run's refit replayed (the same
config, seed, data and lr schedule), tested every few epochs.

    python -m benchmarks.epoch_on_test --run runs/models/gowalla-s0-speed2 \\
        --data runs/data/gowalla-lightgcn --epochs 66 --threads 1 \\
        --out benchmarks/reports/gowalla-lightgcn

Published MF results on gowalla-lightgcn (BSL, SimpleX, BARS) report the best test epoch; the
product chooses its epoch on validation and refits. This measures the difference on one of our
own runs: the test metrics at the epoch the run chose against the best over the tested epochs.
It is a measurement of the protocol, never a way to choose anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from benchmarks.report_utils import command_line, write_report
from trainer.core.callbacks import Callback
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.core.training import LrSchedule
from trainer.data.dataset import PreparedData


class PeriodicTest(Callback):
    """Tests the model every `every` epochs from `start`, and at the last epoch; a row's lr is
    the one set after that epoch (LrSchedule runs first)."""

    def __init__(self, start: int, every: int, last: int):
        self.start, self.every, self.last = start, every, last
        self.rows: list[dict] = []

    def on_epoch_end(self, engine, records, test):
        e = engine.epoch
        if e == self.last or (e >= self.start and (e - self.start) % self.every == 0):
            metrics = engine.evaluate("test")
            self.rows.append({"epoch": e, "lr": engine.optimizer.lr, **metrics})
            print(json.dumps(self.rows[-1]), flush=True)


def replay_refit(run: dict, data_path: str, epochs: int, start: int, every: int) -> list[dict]:
    """The run's refit (fresh model, its seed, train + validation, its lr changes) for
    `epochs` epochs; test metrics as PeriodicTest records them."""
    plan = run["refit"]
    config = TrainConfig.model_validate(run["config"]).model_copy(
        update={"epochs": epochs, "eval_every": epochs, "early_stopping_patience": 0}
    )
    data = PreparedData.load(data_path).with_validation_in_train()
    tests = PeriodicTest(start, every, epochs)
    schedule = {int(k): float(v) for k, v in plan["lr_after_epoch"].items()}
    Engine(config, data).fit([LrSchedule(schedule), tests])
    return tests.rows


def report_body(rows: list[dict], chosen: int) -> list[str]:
    at = next((r for r in rows if r["epoch"] == chosen), None)
    best = max(rows, key=lambda r: r["recall@20"])
    body = [
        "| epoch | lr | test Recall@20 | test NDCG@20 |",
        "|---|---|---|---|",
        *(
            f"| {r['epoch']}{' (the run’s choice)' if r['epoch'] == chosen else ''} | "
            f"{r['lr']:g} | {r['recall@20']:.4f} | {r['ndcg@20']:.4f} |"
            for r in rows
        ),
        "",
    ]
    if at is not None:
        body.append(
            f"The run's epoch ({chosen}, chosen on validation): Recall@20 {at['recall@20']:.4f},"
            f" NDCG@20 {at['ndcg@20']:.4f}. The best tested epoch on test ({best['epoch']}):"
            f" {best['recall@20']:.4f} / {best['ndcg@20']:.4f}, "
            f"{best['recall@20'] - at['recall@20']:+.4f} / {best['ndcg@20'] - at['ndcg@20']:+.4f}."
        )
    return body


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--run", required=True, help="a finished run's directory (with a refit)")
    ap.add_argument("--data", help="its prepared data (default: the path its metrics name)")
    ap.add_argument("--epochs", type=int, help="epochs to replay (default: the refit's)")
    ap.add_argument("--from-epoch", type=int, default=24, help="first tested epoch")
    ap.add_argument("--every", type=int, default=3, help="epochs between tests")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    try:
        with open(os.path.join(args.run, "metrics.json")) as fh:
            run = json.load(fh)
    except (OSError, ValueError) as exc:
        ap.error(f"--run {args.run}: no readable metrics.json ({exc})")
    if not run.get("refit"):
        ap.error(f"--run {args.run}: the run has no refit to replay")
    chosen = int(run["refit"]["epochs"])
    epochs = chosen if args.epochs is None else args.epochs
    if epochs < 1 or args.every < 1 or args.from_epoch < 1:
        ap.error("--epochs, --every and --from-epoch must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = replay_refit(run, args.data or run["data"], epochs, args.from_epoch, args.every)
    title = f"Test metrics along the refit of {os.path.basename(os.path.normpath(args.run))}"
    write_report(args.out, "epoch_on_test", title, command_line(), report_body(rows, chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
