"""Where a recipe's training epoch goes, operator by operator, on a quiet machine.

    python -m benchmarks.step_profile --data runs/data/gowalla-lightgcn --threads 2 \
        --recipes default --compile on --out benchmarks/reports/gowalla-lightgcn/step_profile.md

Per recipe (as benchmarks.epoch_time names them) and compile option: an engine warmed up by
one epoch (it holds the compile), one epoch timed without the profiler, then one under
torch.profiler. The table lists the operators by their self CPU seconds in the profiled
epoch, with their calls per step, and sums them into the products (aten::mm, addmm, bmm), the
compiled graphs' own code (the default's fused row pass; a forward and a backward graph
elsewhere), and the rest. The profiler adds its own
cost to every operator: compare shares, and take seconds from the unprofiled epoch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.epoch_time import recipe_config, warmed_engine
from benchmarks.report_utils import command_line, write_report
from trainer.data.dataset import PreparedData

PRODUCTS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
COMPILED_PREFIX = "## Call CompiledFxGraph"


def profile_epoch(data, recipe: str, compile_: str) -> tuple[float, int, list[tuple]]:
    """(the unprofiled epoch's seconds, steps an epoch, [(operator, self s, calls)] of the
    profiled epoch, largest first)."""
    engine, _, _ = warmed_engine(data, recipe_config(recipe, 3, "cpu", compile_))
    t0 = time.perf_counter()
    engine.train_epoch()
    seconds = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.train_epoch()
    ops = [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()]
    return seconds, engine.steps_per_epoch, sorted(ops, key=lambda o: -o[1])


def section(recipe: str, compile_: str, seconds: float, steps: int, ops, top: int) -> list[str]:
    total = sum(s for _, s, _ in ops)
    products = sum(s for k, s, _ in ops if k in PRODUCTS)
    fused = sum(s for k, s, _ in ops if k.startswith(COMPILED_PREFIX))
    lines = [
        f"## {recipe}, compile {compile_}: {seconds:.3f} s an epoch unprofiled, {steps} steps",
        "",
        f"Profiled epoch {total:.3f} s of operators' self time: the products "
        f"{products:.3f} s ({products / total:.0%}), the compiled graphs' own code "
        f"{fused:.3f} s ({fused / total:.0%}), everything else {total - products - fused:.3f} s "
        f"({(total - products - fused) / total:.0%}).",
        "",
        "| operator | self s/epoch | share | calls/step |",
        "|---|---|---|---|",
    ]
    for key, s, calls in ops[:top]:
        name = "a compiled graph's own code" if key.startswith(COMPILED_PREFIX) else key
        lines.append(f"| {name} | {s:.3f} | {s / total:.1%} | {calls / steps:.1f} |")
    return lines + [""]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--recipes", default="default")
    ap.add_argument("--compile", default="on", help="comma list of off, on")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=15, help="operators listed per run")
    ap.add_argument("--out", required=True, help="the report's path (.md)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = PreparedData.load(args.data)
    body = [
        f"{data.num_users} users, {data.num_items} items; torch threads {args.threads}; "
        "recipes as benchmarks.epoch_time names them.",
        "",
    ]
    for recipe in args.recipes.split(","):
        for compile_ in args.compile.split(","):
            seconds, steps, ops = profile_epoch(data, recipe, compile_)
            body += section(recipe, compile_, seconds, steps, ops, args.top)
            print(f"{recipe} compile {compile_}: {seconds:.3f} s an epoch", flush=True)
    out_dir, name = os.path.split(args.out)
    write_report(
        out_dir or ".",
        os.path.splitext(name)[0],
        "Where an epoch goes, operator by operator",
        command_line(),
        body,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
