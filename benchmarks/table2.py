"""Table 2: every sampler × model — test NDCG@50 / Recall@50, mean ± std over seeds, L2 (and τ
for AdaSIR) chosen on validation.

    python -m benchmarks.table2 --data runs/data/ml-1m --out benchmarks/reports/ml-1m --models mf

Runs are cached in OUT/table2-<model>/runs.jsonl (the protocol of benchmarks/samplers.py), so
an interrupted report resumes and --summary-only re-plots what is there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import matplotlib.pyplot as plt

from benchmarks.contenders import CONTENDERS, contender_table, tune_contender
from benchmarks.report_utils import command_line, save_figure, write_report
from benchmarks.samplers import ROW_NOTES, RunCache, Unfinished, run_protocol, summary_table
from pools import SAMPLER_NAMES
from trainer.data.dataset import PreparedData

# The paper's Table 2 (MF, test NDCG@50) where it is quoted here, by dataset and sampler.
PAPER_NDCG50 = {"gowalla": {"uniform": 0.1214, "adasir-u": 0.1489, "adasir-p": 0.1519}}


def paper_comparison(rows, paper: dict[str, float]) -> list[str]:
    """Our test NDCG@50 beside the paper's, and whether each sampler's place against uniform
    (BPR) is the paper's."""
    ours = {name: statistics.mean(f["test"]["ndcg@50"] for f in finals) for name, _, finals in rows}
    lines = [
        "| sampler | ours | paper | ours ÷ uniform | paper ÷ uniform | the paper's ordering |",
        "|---|---|---|---|---|---|",
    ]
    for name, value in ours.items():
        theirs = paper.get(name)
        ratio = value / ours["uniform"] if "uniform" in ours else None
        paper_ratio = theirs / paper["uniform"] if theirs and "uniform" in paper else None
        holds = "–"
        if ratio is not None and paper_ratio is not None and name != "uniform":
            holds = "holds" if (ratio > 1) == (paper_ratio > 1) else "**does not hold**"
        lines.append(
            f"| {name} | {value:.4f} | {theirs if theirs else '–'} | "
            f"{f'{ratio:.2f}' if ratio else '–'} | {f'{paper_ratio:.2f}' if paper_ratio else '–'} "
            f"| {holds} |"
        )
    return lines


def _curves_plot(ax, model: str, rows) -> None:
    """Validation NDCG@50 against the epoch, mean over each sampler's seeds (runs recorded
    with --eval-every)."""
    for name, _, finals in rows:
        curves = [f["curve"] for f in finals if f.get("curve")]
        if not curves or len({len(c) for c in curves}) != 1:
            continue
        epochs = [e for e, _ in curves[0]]
        mean = [statistics.mean(c[k][1] for c in curves) for k in range(len(epochs))]
        ax.plot(epochs, mean, marker=".", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@50 (mean over seeds)")
    ax.set_title(f"{model.upper()}: validation curves at the chosen L2 (and τ)")
    ax.legend(fontsize=7)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="mf,gmf")
    ap.add_argument("--samplers", default=",".join(SAMPLER_NAMES))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="validate every N epochs for the curves plot (0: only the last epoch)",
    )
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--l2-grid", default="0.1,0.01,0.001,0.0001")
    ap.add_argument("--tau-grid", default="0.5,2")
    ap.add_argument("--srns-tau-grid", default="5,20")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help="loss × sampler × score configurations (benchmarks/contenders.py)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument(
        "--max-grid",
        type=int,
        default=0,
        help="contenders: try only the first N values of each searched field",
    )
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument(
        "--paper", choices=sorted(PAPER_NDCG50), help="set the paper's numbers for this data beside"
    )
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    data = PreparedData.load(args.data)
    body = [
        f"Data `{os.path.basename(data.path)}`: {data.num_users} users, {data.num_items} items, "
        f"{len(data.splits['train'].users)} train pairs. {args.epochs} epochs, lr {args.lr}, batch "
        f"{args.batch_size}, d=32, n=5, |K|=|R|=200; L2 ∈ {{{args.l2_grid}}} (AdaSIR also "
        f"τ ∈ {{1,{args.tau_grid}}}, SRNS τ ∈ {{1,{args.srns_tau_grid}}}) chosen on validation "
        f"NDCG@50, then seeds {args.seeds}."
    ]
    models = args.models.split(",")
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 4.5), squeeze=False)
    fig2, axes2 = plt.subplots(1, len(models), figsize=(7 * len(models), 4.5), squeeze=False)
    fig3, axes3 = plt.subplots(1, len(models), figsize=(7 * len(models), 4.5), squeeze=False)
    for ax, ax2, ax3, model in zip(axes[0], axes2[0], axes3[0], models):
        rows, unfinished = run_protocol(
            data,
            os.path.join(args.out, f"table2-{model}"),
            args.samplers.split(","),
            model=model,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            l2_grid=[float(x) for x in args.l2_grid.split(",")],
            tau_grid=[float(x) for x in args.tau_grid.split(",") if x],
            srns_tau_grid=[float(x) for x in args.srns_tau_grid.split(",") if x],
            seeds=[int(x) for x in args.seeds.split(",")],
            device=args.device,
            summary_only=args.summary_only,
            eval_every=args.eval_every,
        )
        body += ["", f"## {model.upper()}", "", *summary_table(rows)]
        if args.paper and model == "mf":
            body += ["", "### Against the paper's Table 2", ""]
            body += paper_comparison(rows, PAPER_NDCG50[args.paper])
        _curves_plot(ax3, model, rows)
        if unfinished:
            body += ["", f"Not run (yet): {', '.join(unfinished)}."]
        found, missing = _contenders(args, data, model)
        uniform = next((r[2] for r in rows if r[0] == "uniform"), None)
        uniform_epoch = (
            statistics.mean(f["sample_s"] + f["train_s"] for f in uniform) if uniform else None
        )
        body += [
            "",
            f"### {model.upper()}: losses and scores (benchmarks/contenders.py)",
            "",
            *contender_table(found, uniform_epoch),
        ]
        if missing:
            body += ["", f"Not run (yet): {', '.join(missing)}."]
        _seconds_plot(ax2, model, rows, found)
        names = [r[0] for r in rows]
        means = [statistics.mean(f["test"]["ndcg@50"] for f in r[2]) for r in rows]
        stds = [
            statistics.stdev(f["test"]["ndcg@50"] for f in r[2]) if len(r[2]) > 1 else 0
            for r in rows
        ]
        colours = [
            "tab:red" if n.startswith("adasir") else "tab:grey" if n == "uniform" else "tab:blue"
            for n in names
        ]
        labels = [f"{n}*" if n in ROW_NOTES else n for n in names]  # * : see the table's label
        ax.bar(labels, means, yerr=stds, color=colours, capsize=3)
        ax.set_ylim(min(means, default=0) * 0.9, max(means, default=1) * 1.05)
        ax.set_title(f"{model.upper()}: test NDCG@50 (mean ± std over seeds)")
        ax.tick_params(axis="x", rotation=45)
    save_figure(fig, args.out, "table2")
    save_figure(fig2, args.out, "table2_seconds")
    save_figure(fig3, args.out, "table2_curves")
    body += ["", "![Table 2](table2.png)", "", "![quality vs seconds](table2_seconds.png)"]
    body += ["", "![validation curves](table2_curves.png)"]
    write_report(
        args.out,
        "table2",
        "Table 2: samplers compared, L2 tuned on validation",
        command_line(),
        body,
    )
    return 0


def _contenders(args, data, model):
    """Tune and run each contender (or read them from the cache with --summary-only)."""
    cache = RunCache(data, os.path.join(args.out, f"table2-{model}"), args.summary_only)
    common = {
        "model": model,
        "epochs": args.epochs,
        "eval_every": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "device": args.device,
    }
    found, missing = [], []
    for name in filter(None, args.contenders.split(",")):
        try:
            found.append(
                tune_contender(
                    cache,
                    name,
                    CONTENDERS[name],
                    common,
                    [int(x) for x in args.seeds.split(",")],
                    args.max_grid,
                )
            )
        except Unfinished:
            missing.append(name)
        except ValueError as exc:  # does not fit this dataset (e.g. more negatives than items)
            missing.append(f"{name} (not applicable: {str(exc).splitlines()[0]})")
    return found, missing


def _seconds_plot(ax, model, sampler_rows, contender_rows):
    """Test NDCG@50 against seconds per epoch (sample + train), every row that finished."""
    for rows, marker, colour in ((sampler_rows, "o", "tab:blue"), (contender_rows, "s", "tab:red")):
        for name, _, finals in rows:
            if name in ROW_NOTES and name == "irgan":
                continue  # collapsed: off the scale and not comparable
            x = statistics.mean(f["sample_s"] + f["train_s"] for f in finals)
            y = statistics.mean(f["test"]["ndcg@50"] for f in finals)
            ax.scatter([x], [y], marker=marker, color=colour)
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per epoch (sample + train)")
    ax.set_ylabel("test NDCG@50 (mean over seeds)")
    ax.set_title(f"{model.upper()}: quality vs seconds (BPR samplers ●, loss configurations ■)")


if __name__ == "__main__":
    sys.exit(main())
