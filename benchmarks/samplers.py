"""Every sampler on one dataset: tune L2 (and τ for AdaSIR) on validation, then test over seeds.

    python -m benchmarks.samplers --data runs/data/ml-1m --epochs 20 --lr 0.01 \\
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

import torch

from benchmarks.report_utils import mean_sd
from pools import SAMPLER_NAMES, capabilities_of
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.data.dataset import PreparedData


def run_once(data, cfg: TrainConfig) -> dict:
    t0 = time.perf_counter()
    result = Engine(cfg, data).fit()
    epochs = result["epochs"]
    return {
        "valid": epochs[-1]["valid"],
        "test": result["test"],
        "curve": [[e["epoch"], e["valid"]["ndcg@50"]] for e in epochs if e.get("valid")],
        "sample_s": statistics.mean(e["sample_s"] for e in epochs),
        "train_s": statistics.mean(e["train_s"] for e in epochs),
        "wall_s": time.perf_counter() - t0,
    }


# Options added after runs were first cached: they enter a run's key only when they differ
# from their default, so the runs cached before them keep their keys.
_LATER_OPTIONS = {
    "loss": "bpr",
    "score": "dot",
    "loss_temperature": 1.0,
    "contrastive_margin": 0.5,
    "contrastive_weight": 1.0,
}
_LATER_SAMPLER_OPTIONS = {
    "num_negatives": 5,
    "shared_negatives": False,
    "num_candidates": 200,
    "pool_size": 200,
    "warp_loss": "logistic",
    "pool_pick": "uniform",
    "pool_pick_candidates": 4,
    "shared_candidates": False,
    "pool_distinct": False,
    "refreshes_per_epoch": 1,
    "group_users": 16,
    "ess_target": None,
    "ess_rate": 0.5,
    "weighting": "paper",
    "exclude_positives": True,
    "positive_draws": "redraw",
}


def key(config: dict) -> str:
    """What identifies a run: the options this protocol varies or fixes. Computed from a
    config dump, so runs recorded before new (defaulted) options existed still match."""
    s = dict(config["sampler"])
    if capabilities_of(s["name"]).negatives_per_pair:  # WARP: n was ignored, now fixed at 1
        s.pop("num_negatives", None)
    later = {k: config[k] for k, d in _LATER_OPTIONS.items() if config.get(k, d) != d}
    later |= {f"sampler.{k}": s[k] for k, d in _LATER_SAMPLER_OPTIONS.items() if s.get(k, d) != d}
    return json.dumps(
        {
            k: config.get(k)
            for k in ("model", "dim", "lr", "l2", "batch_size", "epochs", "seed", "device")
        }
        | {
            "optimizer": config.get("optimizer", "adam"),
            "sampler": s["name"],
            "temperature": s.get("temperature", 1.0),
        }
        | later,
        sort_keys=True,
    )


class Unfinished(Exception):
    """A run the protocol needs is not in runs.jsonl (with --summary-only)."""


class RunCache:
    """Runs recorded in OUT/runs.jsonl, one JSON line each; `measure` trains only what is
    missing (or raises Unfinished with summary_only)."""

    def __init__(self, data: PreparedData, out: str, summary_only: bool = False):
        os.makedirs(out, exist_ok=True)
        self.data, self.summary_only = data, summary_only
        self.log_path = os.path.join(out, "runs.jsonl")
        self.done = {}
        if os.path.exists(self.log_path):
            with open(self.log_path) as fh:
                for line in fh:
                    rec = json.loads(line)
                    self.done[key(rec["config"])] = rec

    def measure(self, cfg: TrainConfig, label: str = "") -> dict:
        k = key(cfg.model_dump())
        if k not in self.done and self.summary_only:
            raise Unfinished
        if k not in self.done:
            rec = {"key": k, "config": cfg.model_dump(), **run_once(self.data, cfg)}
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            self.done[k] = rec
            print(
                f"{cfg.model} {label or cfg.sampler.name} l2={cfg.l2} "
                f"tau={getattr(cfg.sampler, 'temperature', 1.0)} T={cfg.loss_temperature} "
                f"seed={cfg.seed}: "
                f"valid ndcg@50 {rec['valid']['ndcg@50']:.4f} ({rec['wall_s']:.0f}s)",
                flush=True,
            )
        return self.done[k]


def run_protocol(
    data: PreparedData,
    out: str,
    samplers: list[str],
    *,
    model: str = "mf",
    epochs: int = 20,
    lr: float = 0.01,
    batch_size: int = 4096,
    l2_grid=(0.01, 0.001, 0.0001),
    tau_grid=(2.0,),
    srns_tau_grid=(5.0, 20.0),
    seeds=(0, 1, 2),
    device: str = "cpu",
    summary_only: bool = False,
    eval_every: int = 0,
):
    """Tune L2 (and τ for AdaSIR and SRNS) on validation with seeds[0], then test the choice
    on every seed; eval_every (0: only the last epoch) adds a validation curve to each run.
    Returns ([(sampler, (l2, τ), [final runs])], [unfinished samplers])."""
    measure = RunCache(data, out, summary_only).measure

    def tune_and_test(name):
        def cfg_for(l2, tau=1.0, seed=seeds[0]):
            return TrainConfig(
                preset="paper",
                model=model,
                epochs=epochs,
                eval_every=eval_every or epochs,
                lr=lr,
                l2=l2,
                batch_size=batch_size,
                seed=seed,
                device=device,
                sampler={"name": name} | ({"temperature": tau} if tau != 1.0 else {}),
            )

        grid = [(float(l2), 1.0) for l2 in l2_grid]
        tuned = {g: measure(cfg_for(*g)) for g in grid}
        best = max(tuned, key=lambda g: tuned[g]["valid"]["ndcg@50"])
        taus = tau_grid if name.startswith("adasir") else srns_tau_grid if name == "srns" else ()
        if taus:
            for tau in taus:
                g = (best[0], float(tau))
                tuned[g] = measure(cfg_for(*g))
            best = max(tuned, key=lambda g: tuned[g]["valid"]["ndcg@50"])
        finals = [measure(cfg_for(*best, seed=s)) for s in seeds]
        return name, best, finals

    rows, unfinished = [], []
    for name in samplers:
        try:
            rows.append(tune_and_test(name))
        except Unfinished:
            unfinished.append(name)
    return rows, unfinished


# Rows whose sampler is not what its name alone promises, labelled wherever the table appears.
ROW_NOTES = {
    "irgan": "collapsed, not comparable: trained online without IRGAN's pre-training",
    "warp": "logistic loss × harmonic J, not LightFM's hinge (`warp_loss=hinge`)",
    "adasir-w": "J(rank) ÷ its batch mean, not Eq. (3)'s raw J (`rank_weight_norm=none`)",
}


def summary_table(rows) -> list[str]:
    uniform_epoch = next(
        (
            statistics.mean(f["sample_s"] + f["train_s"] for f in finals)
            for n, _, finals in rows
            if n == "uniform"
        ),
        None,
    )
    lines = [
        "| sampler | L2 | τ | test NDCG@50 | test Recall@50 | sample s/epoch | train s/epoch | epoch ÷ uniform |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, (l2, tau), finals in rows:
        epoch = statistics.mean(f["sample_s"] + f["train_s"] for f in finals)
        ratio = f"{epoch / uniform_epoch:.2f}" if uniform_epoch else "–"
        label = f"{name} ({ROW_NOTES[name]})" if name in ROW_NOTES else name
        lines.append(
            f"| {label} | {l2:g} | {tau:g} | {mean_sd([f['test']['ndcg@50'] for f in finals])} | "
            f"{mean_sd([f['test']['recall@50'] for f in finals])} | "
            f"{statistics.mean(f['sample_s'] for f in finals):.3f} | "
            f"{statistics.mean(f['train_s'] for f in finals):.3f} | {ratio} |"
        )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--samplers", default=",".join(SAMPLER_NAMES))
    ap.add_argument("--model", default="mf")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--l2-grid", default="0.01,0.001,0.0001")
    ap.add_argument("--tau-grid", default="2")
    ap.add_argument(
        "--srns-tau-grid",
        default="5,20",
        help="τ of SRNS's memory softmax, tried at its best L2 (the authors' τ is 1)",
    )
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument(
        "--summary-only",
        action="store_true",
        help="summarise what runs.jsonl holds; samplers not finished are listed as such",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = PreparedData.load(args.data)
    seeds = [int(x) for x in args.seeds.split(",")]
    rows, unfinished = run_protocol(
        data,
        args.out,
        args.samplers.split(","),
        model=args.model,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        l2_grid=[float(x) for x in args.l2_grid.split(",")],
        tau_grid=[float(x) for x in args.tau_grid.split(",") if x],
        srns_tau_grid=[float(x) for x in args.srns_tau_grid.split(",") if x],
        seeds=seeds,
        device=args.device,
        summary_only=args.summary_only,
    )
    lines = [
        f"Dataset `{data.path}` ({data.num_users} users, {data.num_items} items, "
        f"{len(data.splits['train'].users)} train pairs); model {args.model}, d=32, "
        f"batch {args.batch_size}, lr {args.lr}, {args.epochs} epochs, n=5, |K|=|R|=200; "
        f"L2 from {{{args.l2_grid}}} (and τ from {{1,{args.tau_grid}}} for AdaSIR, "
        f"{{1,{args.srns_tau_grid}}} for SRNS) "
        f"chosen on validation NDCG@50 with seed {seeds[0]}; test over seeds {args.seeds}; "
        f"torch threads {torch.get_num_threads()}.",
        "",
        *summary_table(rows),
    ]
    if unfinished:
        lines += ["", f"Not finished in this run: {', '.join(unfinished)}."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "summary.md"), "w") as fh:
        fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
