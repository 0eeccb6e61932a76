"""Seconds per training epoch, in-process, per sampler (batch 4096, d = 32, n = 5,
|K| = |R| = 200: the paper's Gowalla settings), or per recipe with the step eager and compiled.

    python -m benchmarks.epoch_time --device cpu --threads 2 --out benchmarks/results/epoch_time_cpu.md
    python -m benchmarks.epoch_time --data runs/data/gowalla-lightgcn --threads 2 --epochs 4 \\
        --rounds 3 --out benchmarks/reports/gowalla-lightgcn/epoch_time_cpu.md
    python -m benchmarks.epoch_time --data runs/data/gowalla-lightgcn --threads 2 --epochs 4 \\
        --rounds 2 --recipes default,adasir-u,uniform --compile off,on \\
        --out benchmarks/reports/gowalla-lightgcn/epoch_time_compiled_cpu.md

--recipes: "default" is the `recommended` preset at d = 64 (what `adasir train --dim 64` runs);
a sampler name is the `paper` preset with that sampler. --compile: each recipe is timed with
each `compile` option, in the same interleaved rounds; the warm-up epoch's seconds (which hold
the compile) are reported beside the timed epochs.

Without --data's manifest, Gowalla-size synthetic data (30k users, 41k items) is generated
there. The first epoch (warm-up, first pool fill) is not counted; a round's figure is the
mean of the next --epochs. With --rounds R every sampler is timed R times in interleaved
rounds (sampler A, B, …, then A, B, … again), so a drift of the machine spreads over all of
them; the table gives the median round and the range.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.core.presets import build_config
from trainer.data.dataset import PreparedData
from trainer.data.prepare import PrepareOptions, prepare

GOWALLA_LIKE = "users=29858,items=40988,mean=38,minimum=10,alpha=0.5,zipf=0.6,seed=0"


def sampler_config(name: str, optimizer: str, epochs: int, device: str, compile_: str):
    """A sampler's run at the paper's settings with lr 0.01 (the sampler table)."""
    return TrainConfig(
        preset="paper",
        epochs=epochs + 1,
        lr=0.01,
        device=device,
        optimizer=optimizer,
        sampler={"name": name},
        compile=compile_,
    )


def recipe_config(name: str, epochs: int, device: str, compile_: str):
    """`default`: the recommended preset at d = 64; a sampler name: the paper preset with it."""
    given = {"epochs": epochs + 1, "device": device, "compile": compile_}
    if name == "default":
        return build_config("recommended", {**given, "dim": 64})
    return build_config("paper", {**given, "sampler": name})


def warmed_engine(data, cfg) -> tuple[Engine, float, str]:
    """(an engine after one warm-up epoch, that epoch's s — it holds the compile —, the step
    it trains on: "eager" or "compiled")."""
    engine = Engine(cfg, data)
    t0 = time.perf_counter()
    first = engine.train_epoch()
    warmup = time.perf_counter() - t0
    compiled = engine.optimizer.compiled is not None and first.get("step") != "eager"
    return engine, warmup, "compiled" if compiled else "eager"


def time_config(data, cfg, epochs: int) -> dict:
    """{"sample", "train": s per epoch, the mean of `epochs` after one warm-up epoch;
    "warmup": the warm-up epoch's s, "step": eager or compiled}."""
    engine, warmup, step = warmed_engine(data, cfg)
    recs = [engine.train_epoch() for _ in range(epochs)]
    return {
        "sample": statistics.mean(r["sample_s"] for r in recs),
        "train": statistics.mean(r["train_s"] for r in recs),
        "warmup": warmup,
        "step": step,
    }


def time_paired(data, cfgs: list, epochs: int) -> list[list[dict]]:
    """One engine per config (a recipe eager and compiled), each warmed up by one epoch, then
    `epochs` epochs taken in turn (A, B, A, B, …): a slow spell of the machine falls on all of
    them alike. Per config, a {"sample", "train", "warmup", "step"} record per timed epoch."""
    warmed = [warmed_engine(data, cfg) for cfg in cfgs]
    out: list[list[dict]] = [[] for _ in cfgs]
    for _ in range(epochs):
        for (engine, warmup, step), rows in zip(warmed, out, strict=True):
            r = engine.train_epoch()
            rows.append(
                {"sample": r["sample_s"], "train": r["train_s"], "warmup": warmup, "step": step}
            )
    return out


def _cell(values: list[float]) -> str:
    mid = statistics.median(values)
    return f"{mid:.3f}" if len(values) == 1 else f"{mid:.3f} ({min(values):.3f}–{max(values):.3f})"


def _runs(args) -> list[tuple[str, str, object]]:
    """(label, optimizer or step, config) for each timed run."""
    runs = []
    for compile_ in args.compile.split(","):
        if args.recipes:
            for name in args.recipes.split(","):
                cfg = recipe_config(name, args.epochs, args.device, compile_)
                runs.append((name, f"compile {compile_}", cfg))
            continue
        for optimizer in args.optimizers.split(","):
            for name in args.samplers.split(","):
                cfg = sampler_config(name, optimizer, args.epochs, args.device, compile_)
                runs.append((name, optimizer, cfg))
    return runs


def _ratios(runs, timings) -> list[str]:
    """Per run, the median over alternations of its epoch over the same recipe's first
    compile option's epoch in that alternation ("" for that first run)."""
    first: dict[str, list[dict]] = {}
    out = []
    for (name, _, _), rows in zip(runs, timings, strict=True):
        if name not in first:
            first[name] = rows
            out.append("")
            continue
        pairs = [
            (r["sample"] + r["train"]) / (b["sample"] + b["train"])
            for r, b in zip(rows, first[name], strict=True)
        ]
        out.append(f"{statistics.median(pairs):.2f}")
    return out


def _table(data, args, runs, timings) -> str:
    n_train = len(data.splits["train"].users)
    rounds = f"median (range) of {args.rounds} interleaved rounds, " if args.rounds > 1 else ""
    if args.recipes:
        rounds = (
            f"median (range) of {args.rounds} × {args.epochs} epochs, a recipe's compile "
            "options taking epochs in turn; "
        )
    settings = "recipes as --recipes says" if args.recipes else "batch 4096, d=32, n=5, |K|=|R|=200"
    command = "python -m benchmarks.epoch_time " + " ".join(sys.argv[1:])
    lines = [f"# Epoch seconds\n\n```bash\n{command}\n```\n"] if args.recipes else []
    lines += [
        f"{data.num_users} users, {data.num_items} items, {n_train} train pairs; {settings}; "
        f"device {args.device}, torch threads {torch.get_num_threads()}; "
        f"{rounds}each after one warm-up epoch"
        + ("." if args.recipes else f", each the mean of {args.epochs} epochs."),
        "",
        "| run | optimizer / compile | step | sample s/epoch | train s/epoch | epoch s | "
        "× the first | warm-up epoch s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ratios = _ratios(runs, timings)
    for (name, how, _), rows, ratio in zip(runs, timings, ratios, strict=True):
        sample, train = [r["sample"] for r in rows], [r["train"] for r in rows]
        epoch = [r["sample"] + r["train"] for r in rows]
        steps = "/".join(sorted({r["step"] for r in rows}))
        lines.append(
            f"| {name} | {how} | {steps} | {_cell(sample)} | {_cell(train)} | "
            f"**{_cell(epoch)}** | {ratio} | {_cell([r['warmup'] for r in rows])} |"
        )
    return "\n".join(lines) + "\n"


def _time_recipes(data, args, runs, timings) -> None:
    for r in range(args.rounds):
        for name in args.recipes.split(","):
            mine = [i for i, run in enumerate(runs) if run[0] == name]
            rows = time_paired(data, [runs[i][2] for i in mine], args.epochs)
            for i, got in zip(mine, rows, strict=True):
                timings[i].extend(got)
                epoch = statistics.median(g["sample"] + g["train"] for g in got)
                print(
                    f"round {r + 1}: {name} {runs[i][1]} ({got[0]['step']}) {epoch:.3f} s",
                    flush=True,
                )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default="runs/data/gowalla-like")
    ap.add_argument("--samplers", default="uniform,adasir-u,adasir-p,adasir-w,dns,pris-p")
    ap.add_argument("--recipes", default="", help="comma list: default and/or sampler names")
    ap.add_argument("--compile", default="off", help="comma list of off, on, auto")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds per run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument(
        "--optimizers",
        default="adam",
        help="comma list of adam, sparse-adam: each sampler is timed with each",
    )
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.rounds < 1 or args.epochs < 1:
        ap.error("--rounds and --epochs must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not os.path.isfile(os.path.join(args.data, "manifest.json")):
        t0 = time.perf_counter()
        prepare(args.data, PrepareOptions(kcore=0), synthetic=GOWALLA_LIKE, overwrite=True)
        print(f"generated {args.data} in {time.perf_counter() - t0:.0f}s", flush=True)
    data = PreparedData.load(args.data)
    runs = _runs(args)
    timings: list[list[dict]] = [[] for _ in runs]
    if args.recipes:  # a recipe's compile options alternate epoch by epoch, in one process
        _time_recipes(data, args, runs, timings)
    for r in range(0 if args.recipes else args.rounds):
        for (name, how, cfg), rows in zip(runs, timings, strict=True):
            rows.append(time_config(data, cfg, args.epochs))
            t = rows[-1]
            print(
                f"round {r + 1}: {name} {how} ({t['step']}) sample {t['sample']:.3f} "
                f"train {t['train']:.3f} warm-up {t['warmup']:.1f}",
                flush=True,
            )
    text = _table(data, args, runs, timings)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as fh:
            fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
