"""Seconds per epoch of the loss × sampler × score configurations, on a quiet machine.

    python -m benchmarks.contender_timing --data runs/data/ml-1m --out benchmarks/reports/ml-1m

Each configuration is taken as tuned in Table 2's cache (OUT/table2-mf/runs.jsonl, read only)
and timed here beside uniform BPR: every configuration gets one warm-up epoch, then --epochs
rounds, each running one epoch of every configuration in turn; a row is the median over the
rounds of sample and of train seconds (evaluation not counted). Interleaved rounds share the
machine's drift evenly: timed one after another, the first configuration's epochs once ran
slower than the same training work later in the process, which moved every ratio. Table 2's
own seconds come from runs that shared the machine; these are the ones to compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from benchmarks.contenders import (
    CONTENDERS,
    TABLE2_MF,
    cached_mf_setup,
    make_config,
    tune_contender,
)
from benchmarks.report_utils import command_line, write_report
from trainer.core.engine import Engine


def epoch_seconds(
    data, rows: list[tuple[str, dict]], common: dict, rounds: int
) -> list[tuple[float, float]]:
    """(median sample s, median train s) per row, from interleaved rounds of one epoch each."""
    engines = [
        Engine(make_config(common | {"epochs": rounds + 1}, settings), data) for _, settings in rows
    ]
    for engine in engines:
        engine.train_epoch()  # warm-up
    records = [[] for _ in engines]
    for _ in range(rounds):
        for engine, kept in zip(engines, records):
            kept.append(engine.train_epoch())
    return [
        (
            statistics.median(r["sample_s"] for r in kept),
            statistics.median(r["train_s"] for r in kept),
        )
        for kept in records
    ]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--contenders", default="bpr+dns,bpr+adasir-u+fresh,softmax+shared1000+cosine")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-grid", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--report", default="contender_timing", help="the report's file name under OUT, without .md"
    )
    args = ap.parse_args()
    data, cache = cached_mf_setup(args.data, args.out, args.threads)
    common = TABLE2_MF
    rows = [("uniform BPR (adasir's baseline)", {"sampler.name": "uniform", "l2": 0.001})]
    rows += [("adasir-u (the paper)", {"sampler.name": "adasir-u", "l2": 0.01})]
    for name in args.contenders.split(","):
        _, chosen, _ = tune_contender(cache, name, CONTENDERS[name], common, [0, 1], args.max_grid)
        rows.append((name, chosen))
    body = [
        f"`{os.path.basename(data.path)}`, MF, batch 4096, {args.threads} torch threads, "
        f"median of {args.epochs} interleaved rounds of one epoch each, after one warm-up "
        "epoch each.",
        "",
        "| configuration | sample s/epoch | train s/epoch | epoch ÷ uniform BPR |",
        "|---|---|---|---|",
    ]
    timed = epoch_seconds(data, rows, common, args.epochs)
    base = sum(timed[0])
    for (name, _), (sample, train) in zip(rows, timed):
        body.append(f"| {name} | {sample:.2f} | {train:.2f} | {(sample + train) / base:.2f} |")
    write_report(args.out, args.report, "Seconds per epoch, quiet machine", command_line(), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
