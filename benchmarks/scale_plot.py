"""Plot every scale report (benchmarks/reports/scale*/scale.json): bytes each worker puts into
the item exchange per step, and seconds per step, against the catalogue size, dense beside
touched rows (auto).

    python -m benchmarks.scale_plot --out benchmarks/reports/scale/scale.png
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows = [
        r
        for f in sorted(
            glob.glob(os.path.join(ROOT, "benchmarks", "reports", "scale*", "scale.json"))
        )
        for r in json.load(open(f))
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for users in sorted({r["users"] for r in rows}):
        for mode, style in (("dense", "o--"), ("auto", "s-")):
            pts = sorted(
                (r["items"], r["exchange_bytes_per_step"], r["step_s"])
                for r in rows
                if r["users"] == users and r["mode"] == mode
            )
            if not pts:
                continue
            label = f"{users:,} users, {'dense all-reduce' if mode == 'dense' else 'touched rows (auto)'}"
            left.plot([p[0] for p in pts], [p[1] / 1e6 for p in pts], style, label=label)
            right.plot([p[0] for p in pts], [p[2] for p in pts], style, label=label)
    bound = rows[0]["bound"] / 1e6
    left.axhline(bound, color="grey", lw=0.8, ls=":", label=f"touched-rows bound ({bound:.2f} MB)")
    for ax, ylabel in ((left, "MB per step per worker"), (right, "seconds per step")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("items")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    left.set_title("item-gradient exchange")
    right.set_title("training step (2 workers, 2 cores)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
