"""The AdaSIR authors' code trained on a prepared split, beside this project's engine.

    git clone https://github.com/HERECJ/AdaSIR /tmp/adasir-code
    python -m benchmarks.authors_code --code /tmp/adasir-code --data runs/data/gowalla-lightgcn \
        --out benchmarks/reports/gowalla-lightgcn/authors-code --samplers uniform,adasir-u \
        --epochs 20 --lr 0.001 --l2 0.01 --threads 1

--code is a checkout of github:HERECJ/AdaSIR; its `model.py` and `sampler.py` are imported
from there, unchanged (numpy 2 lacks the module of model.py's unused first import; an alias
stands in for it). Its `main_more.py` reads a .mat file and splits it itself, so its training
loop is followed here step by step on the prepared train split. Its DataLoader over
`UserItemData` (a shuffled pass over the train pairs, the last batch partial) is a permutation
of the pairs here: the same batches, without `dataloader.py`'s `np.int` (gone in numpy 2)
and its per-pair Python fetch. The rest as theirs: Adam with
`weight_decay` (= --l2), StepLR (every 5 epochs × --step-gamma, theirs 0.95), the loss summed
over the batch, the pool refreshed once an epoch (replaced at the first), positives not
excluded. Our run is the `paper` preset with the same sampler, lr, L2, n, |K| and |R|.

Both models are scored by this project's evaluator (every validation user, train items
masked; the last epoch's model is tested, as their code reports). After each of the first
--pool-epochs epochs the same statistics are taken from both pools (the pool that epoch
trained on) under the model at the epoch's end, on a fixed sample of users: distinct entries
÷ |R|; the entries' mean rank among all items (0: the top); the share that are the user's
train items or held-out validation items; and the ESS of softmax(r − log Q) over |K| fresh
uniform candidates ÷ |K|.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
import types

import numpy as np
import scipy.sparse as sp
import torch

from benchmarks.report_utils import command_line, write_report
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.data.dataset import PreparedData

# Our sampler name → (the index in main_more.py's sampler_list, the `--weighted` flag).
THEIRS = {"uniform": (0, False), "pris-u": (0, True), "adasir-u": (2, True), "adasir-p": (5, True)}
STAT_USERS = 1024


def their_modules(code: str):
    """(model, sampler) imported from the checkout at `code` (main checked it holds them)."""
    try:  # model.py's first line imports numpy.lib.function_base.select, gone in numpy 2
        importlib.import_module("numpy.lib.function_base")
    except ModuleNotFoundError:
        sys.modules["numpy.lib.function_base"] = types.SimpleNamespace(select=np.select)
    return tuple(
        _load(os.path.join(code, f"{name}.py"), f"authors_{name}") for name in ("model", "sampler")
    )


def _load(path: str, name: str):
    """The module at `path`, imported under `name` (neither file imports the other)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_matrix(data: PreparedData) -> sp.csr_matrix:
    split = data.splits["train"]
    users, items = np.asarray(split.users), np.asarray(split.items)
    ones = np.ones(len(users), dtype=np.float32)
    return sp.csr_matrix((ones, (users, items)), shape=(data.num_users, data.num_items))


def our_config(name: str, args, epochs: int) -> TrainConfig:
    sampler = {"name": name, "num_negatives": args.negatives}
    if name.startswith("adasir"):
        sampler |= {"num_candidates": args.candidates, "pool_size": args.pool_size}
    return TrainConfig(
        preset="paper",
        lr=args.lr,
        l2=args.l2,
        epochs=epochs,
        eval_every=args.eval_every,
        seed=args.seed,
        sampler=sampler,
    )


def pool_statistics(pool, tables, engine: Engine, users: torch.Tensor, args) -> dict:
    """The statistics of the module docstring for pool [num_users, R] (None: no pool) under
    the MF tables (user [U, d], item [N, d])."""
    with torch.no_grad():
        scores = tables[0][users] @ tables[1].T  # [S, N]
    n, k = scores.shape[1], args.candidates
    cand = torch.randint(0, n, (len(users), k), generator=torch.Generator().manual_seed(7))
    w = torch.softmax(scores.gather(1, cand), dim=1)  # uniform Q: − log Q is a constant
    out = {"ess_frac": float((1.0 / (w * w).sum(1)).mean()) / k}
    if pool is None:
        return out
    items = pool[users].long()
    # An entry's rank: how many items score above it, read off each user's sorted scores.
    ascending = scores.sort(dim=1).values
    ranks = n - torch.searchsorted(ascending, scores.gather(1, items), right=True)  # [S, R]
    in_order = items.sort(dim=1).values
    distinct = 1 + (in_order[:, 1:] != in_order[:, :-1]).sum(1)
    return out | {
        "distinct_frac": float(distinct.float().mean()) / items.shape[1],
        "mean_rank": float(ranks.float().mean()) / n,
        "train_share": float(engine.positives.contains(users, items).float().mean()),
        "valid_share": float(engine.valid.contains(users, items).float().mean()),
    }


def evaluate_tables(judge: Engine, user_table, item_table, split: str) -> dict:
    """Our evaluator's metrics of the MF tables (their model's) through the engine `judge`."""
    with torch.no_grad():
        judge.model.user_emb.copy_(user_table)
        judge.model.item_emb.copy_(item_table)
    return judge.evaluate(split, final=True)


def run_theirs(name: str, args, data: PreparedData, theirs, judge: Engine, stat_users) -> dict:
    """theirs: (their model and sampler modules, the train split as their CSR matrix)."""
    (model_mod, sampler_mod), mat = theirs
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    index, weighted = THEIRS[name]
    sampler = list_of_samplers(sampler_mod)[index](
        data.num_users, data.num_items, args.candidates, args.pool_size, args.negatives,
        torch.device("cpu"), mat=mat,
    )  # fmt: skip
    model = model_mod.BaseMF(data.num_users, data.num_items, args.dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.l2)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, 5, args.step_gamma)
    pairs = mat.tocoo()
    pair_users, pair_items = torch.from_numpy(pairs.row).long(), torch.from_numpy(pairs.col).long()
    curve, pools, seconds = [], [], 0.0
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        sampler.update_pool(model, cover_flag=epoch == 0)
        order = torch.randperm(len(pair_users))
        for batch in order.split(args.batch_size):
            users, items = pair_users[batch], pair_items[batch]
            optimizer.zero_grad()
            neg, log_prob = sampler(users, model=model)
            pos_r, neg_r = model(users, items, neg)
            loss = model.loss_function(neg_r, log_prob, pos_r, reduction=False, weighted=weighted)
            loss.backward()
            optimizer.step()
        schedule.step()
        seconds += time.perf_counter() - t0
        user_t, item_t = model.get_user_embs().detach(), model.get_item_embs().detach()
        if epoch < args.pool_epochs:
            pool = getattr(sampler, "pool", None)
            pools.append(pool_statistics(pool, (user_t, item_t), judge, stat_users, args))
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            valid = evaluate_tables(judge, user_t, item_t, "valid")
            curve.append((epoch + 1, valid["ndcg@50"], round(seconds, 1)))
    test = evaluate_tables(judge, user_t, item_t, "test")
    return {"curve": curve, "pools": pools, "test": test, "train_s": seconds}


def list_of_samplers(sampler_mod) -> list:
    """main_more.py's sampler_list, in its order (its README numbers them)."""
    names = ["base_sampler", "two_pass", "two_pass_weight", "base_sampler_pop", "two_pass_pop"]
    names += ["two_pass_weight_pop", "two_pass_rank", "two_pass_weight_rank", "tapast"]
    return [getattr(sampler_mod, n) for n in names]


def run_ours(name: str, args, data: PreparedData, stat_users) -> dict:
    engine = Engine(our_config(name, args, args.epochs), data)
    curve, pools, seconds = [], [], 0.0
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        engine.train_epoch()
        seconds += time.perf_counter() - t0
        tables = (engine.model.user_emb.detach(), engine.model.item_emb.detach())
        if epoch < args.pool_epochs:
            pool = getattr(engine.sampler, "pool_items", None)
            pools.append(pool_statistics(pool, tables, engine, stat_users, args))
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            valid = engine.evaluate("valid", final=True)
            curve.append((epoch + 1, valid["ndcg@50"], round(seconds, 1)))
    return {"curve": curve, "pools": pools, "test": engine.evaluate("test"), "train_s": seconds}


def _rows(name: str, results: dict) -> list[str]:
    lines = [
        f"## {name}",
        "",
        "| code | best valid NDCG@50 (epoch) | last valid NDCG@50 | test NDCG@50 | test Recall@50 "
        "| train s |",
        "|---|---|---|---|---|---|",
    ]
    for who, r in results.items():
        best = max(r["curve"], key=lambda c: c[1])
        lines.append(
            f"| {who} | {best[1]:.4f} ({best[0]}) | {r['curve'][-1][1]:.4f} "
            f"| {r['test']['ndcg@50']:.4f} | {r['test']['recall@50']:.4f} | {r['train_s']:.0f} |"
        )
    keys = ["ess_frac", "distinct_frac", "mean_rank", "train_share", "valid_share"]
    lines += ["", "| code | epoch | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for who, r in results.items():
        for epoch, stats in enumerate(r["pools"], start=1):
            cells = [f"{stats[k]:.4f}" if k in stats else "–" for k in keys]
            lines.append(f"| {who} | {epoch} | " + " | ".join(cells) + " |")
    return lines + [""]


def _plot(all_results: dict, out: str) -> None:
    import matplotlib.pyplot as plt

    from benchmarks.report_utils import save_figure

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, results in all_results.items():
        for who, r in results.items():
            epochs, ndcg = [c[0] for c in r["curve"]], [c[1] for c in r["curve"]]
            ax.plot(
                epochs, ndcg, marker=".", ls="-" if who == "ours" else "--", label=f"{name}, {who}"
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@50")
    ax.legend(fontsize=8)
    save_figure(fig, out, "authors_code")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--code", required=True, help="a checkout of github:HERECJ/AdaSIR")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--samplers", default="uniform,adasir-u")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--pool-epochs", type=int, default=3, help="epochs with pool statistics")
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--l2", type=float, default=0.01, help="ours: L2; theirs: weight_decay")
    ap.add_argument("--step-gamma", type=float, default=0.95, help="their StepLR; 1: constant")
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=200, help="|K|")
    ap.add_argument("--pool-size", type=int, default=200, help="|R| (their code's default: 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    unknown = sorted(set(args.samplers.split(",")) - set(THEIRS))
    if unknown:
        ap.error(f"unknown sampler(s) {', '.join(unknown)}; choose from {', '.join(THEIRS)}")
    if not all(os.path.isfile(os.path.join(args.code, f)) for f in ("model.py", "sampler.py")):
        ap.error(
            f"--code {args.code}: no model.py and sampler.py there; give a checkout of HERECJ/AdaSIR"
        )
    torch.set_num_threads(args.threads)
    data = PreparedData.load(args.data)
    judge = Engine(our_config("uniform", args, 1), data)
    gen = torch.Generator().manual_seed(args.seed + 11)
    stat_users = torch.randperm(data.num_users, generator=gen)[:STAT_USERS].sort().values
    theirs = (their_modules(args.code), train_matrix(data))
    all_results = {}
    for name in args.samplers.split(","):
        all_results[name] = {
            "theirs": run_theirs(name, args, data, theirs, judge, stat_users),
            "ours": run_ours(name, args, data, stat_users),
        }
        print(f"{name}: done", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "authors_code.json"), "w") as fh:
        json.dump(all_results, fh)
    _plot(all_results, args.out)
    about = [
        f"`{os.path.basename(data.path)}`: {data.num_users} users, {data.num_items} items. MF, "
        f"d = {args.dim}, batch {args.batch_size}, n = {args.negatives}, |K| = {args.candidates}, "
        f"|R| = {args.pool_size}, lr {args.lr} (theirs × {args.step_gamma} every 5 epochs), "
        f"L2 / weight_decay {args.l2}, {args.epochs} epochs, seed {args.seed}, "
        f"{args.threads} torch thread(s). Pool statistics on {STAT_USERS} fixed users.",
        "",
    ]
    body = about + [line for n, r in all_results.items() for line in _rows(n, r)]
    write_report(
        args.out,
        "authors_code",
        "The authors' code against ours",
        command_line(),
        body + ["![curves](authors_code.png)"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
