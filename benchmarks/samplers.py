"""Every sampler on one dataset: tune L2 (and τ for AdaSIR) on validation, then test over seeds.

    python benchmarks/samplers.py --data runs/data/ml-1m --epochs 20 --lr 0.01 \\
        --out benchmarks/results/ml-1m

Protocol: for each sampler, train with seed 0 for every L2 in --l2-grid and pick the best
validation NDCG@50 (AdaSIR samplers then also try each τ in --tau-grid at that L2); the chosen
setting is trained with every seed in --seeds (seed 0's tuning run is reused) and reported as
mean ± std of test NDCG@50 / Recall@50 and per-epoch sample / train seconds. Test metrics
never steer a choice. Results stream to OUT/runs.jsonl (a rerun skips what is there) and the
summary goes to OUT/summary.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from pools.config import SAMPLER_NAMES  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.dataset import PreparedData  # noqa: E402
from trainer.engine import Engine  # noqa: E402


def run_once(data, cfg: TrainConfig) -> dict:
    t0 = time.perf_counter()
    result = Engine(cfg, data).fit(log=lambda s: None)
    epochs = result["epochs"]
    return {"valid": epochs[-1]["valid"], "test": result["test"],
            "sample_s": statistics.mean(e["sample_s"] for e in epochs),
            "train_s": statistics.mean(e["train_s"] for e in epochs),
            "wall_s": time.perf_counter() - t0}


def key(cfg: TrainConfig) -> str:
    return json.dumps(cfg.model_dump(), sort_keys=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--samplers", default=",".join(SAMPLER_NAMES))
    ap.add_argument("--model", default="mf")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--l2-grid", default="0.01,0.001,0.0001")
    ap.add_argument("--tau-grid", default="2")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--summary-only", action="store_true",
                    help="summarise what runs.jsonl holds; samplers not finished are listed as such")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    data = PreparedData.load(args.data)
    log_path = os.path.join(args.out, "runs.jsonl")
    done = {}
    if os.path.exists(log_path):
        with open(log_path) as fh:
            for line in fh:
                rec = json.loads(line)
                done[rec["key"]] = rec

    class Unfinished(Exception):
        pass

    def measure(cfg: TrainConfig) -> dict:
        k = key(cfg)
        if k not in done and args.summary_only:
            raise Unfinished
        if k not in done:
            rec = {"key": k, "config": cfg.model_dump(), **run_once(data, cfg)}
            with open(log_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            done[k] = rec
            print(f"{cfg.sampler.name} l2={cfg.l2} tau={cfg.sampler.temperature} seed={cfg.seed}: "
                  f"valid ndcg@50 {rec['valid']['ndcg@50']:.4f} ({rec['wall_s']:.0f}s)", flush=True)
        return done[k]

    seeds = [int(s) for s in args.seeds.split(",")]

    def tune_and_test(name):
        def cfg_for(l2, tau=1.0, seed=seeds[0]):
            return TrainConfig(model=args.model, epochs=args.epochs, eval_every=args.epochs,
                               lr=args.lr, l2=l2, batch_size=args.batch_size, seed=seed,
                               device=args.device, sampler={"name": name, "temperature": tau})
        grid = [(float(l2), 1.0) for l2 in args.l2_grid.split(",")]
        tuned = {g: measure(cfg_for(*g)) for g in grid}
        best = max(tuned, key=lambda g: tuned[g]["valid"]["ndcg@50"])
        if name.startswith("adasir"):
            for tau in (float(t) for t in args.tau_grid.split(",") if t):
                g = (best[0], tau)
                tuned[g] = measure(cfg_for(*g))
            best = max(tuned, key=lambda g: tuned[g]["valid"]["ndcg@50"])
        finals = [measure(cfg_for(*best, seed=s)) for s in seeds]
        return name, best, finals

    rows, unfinished = [], []
    for name in args.samplers.split(","):
        try:
            rows.append(tune_and_test(name))
        except Unfinished:
            unfinished.append(name)

    def ms(values):
        return (f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
                if len(values) > 1 else f"{values[0]:.4f}")

    uniform_epoch = next((statistics.mean(f["sample_s"] + f["train_s"] for f in finals)
                          for n, _, finals in rows if n == "uniform"), None)
    lines = [f"Dataset `{data.path}` ({data.num_users} users, {data.num_items} items, "
             f"{len(data.splits['train'].users)} train pairs); model {args.model}, d=32, "
             f"batch {args.batch_size}, lr {args.lr}, {args.epochs} epochs, n=5, |K|=|R|=200; "
             f"L2 from {{{args.l2_grid}}} (and τ from {{1,{args.tau_grid}}} for AdaSIR) "
             f"chosen on validation NDCG@50 with seed {seeds[0]}; test over seeds {args.seeds}; "
             f"torch threads {torch.get_num_threads()}.", "",
             "| sampler | L2 | τ | test NDCG@50 | test Recall@50 | sample s/epoch | train s/epoch | epoch ÷ uniform |",
             "|---|---|---|---|---|---|---|---|"]
    for name, (l2, tau), finals in rows:
        epoch = statistics.mean(f["sample_s"] + f["train_s"] for f in finals)
        ratio = f"{epoch / uniform_epoch:.2f}" if uniform_epoch else "–"
        lines.append(f"| {name} | {l2:g} | {tau:g} | {ms([f['test']['ndcg@50'] for f in finals])} | "
                     f"{ms([f['test']['recall@50'] for f in finals])} | "
                     f"{statistics.mean(f['sample_s'] for f in finals):.3f} | "
                     f"{statistics.mean(f['train_s'] for f in finals):.3f} | {ratio} |")
    if unfinished:
        lines += ["", f"Not finished in this run: {', '.join(unfinished)}."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "summary.md"), "w") as fh:
        fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
