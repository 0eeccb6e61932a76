"""Where a sampler's time goes: the operators of its `sample` calls over one epoch, on a quiet
machine, and how many of its first draws were the user's own train items (then redrawn).

    python -m benchmarks.sampler_profile --data runs/data/ml-1m --out benchmarks/reports/ml-1m \
        --contender softmax+adasir-b5k200+cosine

The configuration is taken as tuned in Table 2's cache (OUT/table2-mf/runs.jsonl, read only).
It trains --warmup epochs, then draws one more epoch's batches with the model held fixed: once
timed, once under torch.profiler. Training and evaluation are not counted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch.profiler import profile

from benchmarks.contenders import (
    CONTENDERS,
    TABLE2_MF,
    cached_mf_setup,
    make_config,
    tune_contender,
)
from benchmarks.report_utils import command_line, write_report
from trainer.core.engine import Engine


class _FirstDrawCounter:
    """Wraps positives.contains; the first look-up of each `sample` call is its first draws."""

    def __init__(self, positives):
        self.inner, self.first, self.hits, self.drawn = positives.contains, True, 0, 0

    def __call__(self, users, items):
        found = self.inner(users, items)
        if self.first:
            self.hits, self.drawn = self.hits + int(found.sum()), self.drawn + found.numel()
            self.first = False
        return found


def draw_epoch(engine: Engine, batches, counter: _FirstDrawCounter | None = None) -> float:
    """Seconds to draw every batch's negatives once with the current model."""
    start = time.perf_counter()
    for users, pos in batches:
        if counter is not None:
            counter.first = True
        engine.sampler.sample(engine.model, users, pos, engine.generator)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--contender", default="softmax+adasir-b5k200+cosine")
    ap.add_argument("--warmup", type=int, default=2, help="epochs trained before profiling")
    ap.add_argument("--rows", type=int, default=15, help="operators listed")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    data, cache = cached_mf_setup(args.data, args.out, args.threads)
    common = TABLE2_MF
    _, chosen, _ = tune_contender(cache, args.contender, CONTENDERS[args.contender], common, [0])
    engine = Engine(make_config(common | {"epochs": args.warmup + 1}, chosen), data)
    for _ in range(args.warmup):
        engine.train_epoch()
    batches = list(engine.epoch_batches())
    counter = _FirstDrawCounter(engine.sampler.positives)
    engine.sampler.positives.contains = counter
    with torch.no_grad():
        seconds = draw_epoch(engine, batches, counter)
        with profile() as prof:
            draw_epoch(engine, batches)
    table = prof.key_averages().table(
        sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=32
    )
    body = [
        f"`{os.path.basename(data.path)}`, MF, batch 4096, {args.threads} torch threads, "
        f"`{args.contender}` ({', '.join(f'{k}={v}' for k, v in chosen.items())}) after "
        f"{args.warmup} trained epochs: one epoch of "
        f"draws ({len(batches)} batches) takes {seconds:.2f} s without the profiler.",
        "",
        f"First draws that were the user's own train items (redrawn): {counter.hits} of "
        f"{counter.drawn} ({counter.hits / max(counter.drawn, 1):.1%}).",
        "",
        "The profiled epoch (the profiler adds its own overhead to every operator):",
        "",
        "```",
        table.rstrip(),
        "```",
    ]
    write_report(
        args.out,
        f"sampler_profile-{args.contender}",
        "Where the sampling time goes",
        command_line(),
        body,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
