"""Fig. 2: how close each sampler's draws come to the softmax of a fixed trained model.

    python -m benchmarks.softmax_fit --data runs/data/ml-1m --out benchmarks/reports/ml-1m

Trains MF with uniform negatives (--epochs, or loads --checkpoint), picks --users users, and
for each draws --draws × 10 negatives per sampler. A pooled sampler gets a fresh pool for
every 10 draws (the paper: "the sample pool ... is updated each time"). Compared with the
exact softmax over the user's non-train items: total variation, and KL(softmax ‖ draws) with
add-½ smoothing of the counts; the plot shows cumulative distributions over items ordered by
popularity (most popular first), as the paper's Fig. 2. For PRIS and the kernel sampler the
draws are their proposals (their loss re-weights them).
"""

from __future__ import annotations

import argparse
import sys

import matplotlib.pyplot as plt
import numpy as np
import torch

from benchmarks.report_utils import command_line, save_figure, write_report
from pools import InteractionIndex, build_sampler, sampler_config
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.core.models import build_model
from trainer.data.dataset import PreparedData
from trainer.outputs.checkpoint import load_checkpoint

DEFAULT = "uniform,popularity,dns,pris-u,pris-p,kernel,aobpr,adasir-u,adasir-p,softmax"


def replicate_user(user_vec, item_emb, train_items, copies):
    """An MF model and train index for `copies` identical copies of one user."""
    model = build_model("mf", copies, item_emb.shape[0], item_emb.shape[1], seed=0)
    with torch.no_grad():
        model.user_emb.copy_(user_vec.expand(copies, -1))
        model.item_emb.copy_(item_emb)
    users = torch.arange(copies).repeat_interleave(len(train_items))
    items = torch.as_tensor(train_items).repeat(copies)
    return model, InteractionIndex(users, items, copies, item_emb.shape[0])


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoint")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--samplers", default=DEFAULT)
    ap.add_argument("--users", type=int, default=5)
    ap.add_argument("--draws", type=int, default=5000, help="pools (and batches of 10) per user")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = PreparedData.load(args.data)
    if args.checkpoint:
        state = load_checkpoint(args.checkpoint)["state"]
        user_emb, item_emb = state["user_emb"], state["item_emb"]
    else:
        engine = Engine(
            TrainConfig(
                preset="paper",
                epochs=args.epochs,
                lr=0.01,
                l2=0.01,
                seed=args.seed,
                sampler={"name": "uniform"},
            ),
            data,
        )
        for _ in range(args.epochs):
            engine.train_epoch()
        user_emb, item_emb = engine.model.user_emb.detach(), engine.model.item_emb.detach()
    counts = torch.as_tensor(data.item_counts())
    by_popularity = torch.argsort(-counts, stable=True)
    rng = np.random.default_rng(args.seed)
    train = data.splits["train"]
    picked = rng.choice(np.unique(train.users), size=min(args.users, data.num_users), replace=False)
    names = args.samplers.split(",")
    tv = {n: [] for n in names}
    kl = {n: [] for n in names}
    fig, ax = plt.subplots(figsize=(8, 5))
    for row, user in enumerate(picked):
        own = np.sort(train.items[train.users == user])
        model, index = replicate_user(user_emb[user], item_emb, own, args.draws)
        logits = (item_emb @ user_emb[user]).double()
        logits[own] = -np.inf
        target = torch.softmax(logits, 0)
        if row == 0:
            ax.plot(torch.cumsum(target[by_popularity], 0), "k", lw=2.5, label="softmax")
        for name in names:
            sampler = build_sampler(sampler_config(name=name, num_negatives=10), index, counts)
            g = torch.Generator().manual_seed(args.seed + row)
            sampler.refresh(model, g)
            users = torch.arange(args.draws)
            pos = torch.as_tensor(own[rng.integers(0, len(own), args.draws)])
            drawn = sampler.sample(model, users, pos, g).items.reshape(-1)
            freq = torch.bincount(drawn, minlength=data.num_items).double()
            emp = freq / freq.sum()
            smooth = (freq + 0.5) / (freq.sum() + 0.5 * data.num_items)
            tv[name].append(0.5 * float((emp - target).abs().sum()))
            mask = target > 0
            kl[name].append(float((target[mask] * (target[mask] / smooth[mask]).log()).sum()))
            if row == 0 and name != "softmax":
                ax.plot(torch.cumsum(emp[by_popularity], 0), label=name, lw=1)
    ax.set_xlabel("items ordered by popularity")
    ax.set_ylabel("cumulative probability")
    ax.set_title(f"user {data.ids('users')[picked[0]]}: draws vs softmax")
    ax.legend(fontsize=8)
    save_figure(fig, args.out, "softmax_fit")
    body = [
        f"Model: MF trained {args.epochs} epochs with uniform negatives"
        f"{' (checkpoint ' + args.checkpoint + ')' if args.checkpoint else ''}; "
        f"{len(picked)} users, {args.draws} × 10 draws each; mean over users.",
        "",
        "| sampler | TV to softmax | KL(softmax ‖ draws) |",
        "|---|---|---|",
    ]
    body += [
        f"| {n} | {np.mean(tv[n]):.3f} | {np.mean(kl[n]):.3f} |"
        for n in sorted(names, key=lambda n: np.mean(tv[n]))
    ]
    body += ["", "![draws vs softmax](softmax_fit.png)"]
    write_report(
        args.out, "softmax_fit", "Fig. 2: approximation of the softmax", command_line(), body
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
