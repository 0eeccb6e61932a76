"""implicit's ALS and BPR on the same split, tuned on validation, scored by the engine's evaluator.

    python -m benchmarks.implicit_reference --data runs/data/gowalla-lightgcn \\
        --out benchmarks/reports/gowalla-lightgcn

What a user who runs `implicit` today gets, fitted outside the product as reference_models.py
fits iALS: ALS (Hu et al. '08, `implicit.als.AlternatingLeastSquares`) over confidence
1 + α·x, and BPR (`implicit.bpr.BayesianPersonalizedRanking`). Each option grid is searched on
validation Recall@20 with seed 0 (ALS: α, then λ, then the iteration count; BPR: lr, then λ,
then the iteration count), the choice is fitted with every seed and its test metrics are read.
Seconds are the fit's wall clock on this machine (`--threads` threads), evaluation excluded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import scipy.sparse as sp
import torch

from benchmarks.report_utils import command_line, mean_sd, write_report
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.data.dataset import PreparedData


class Factors:
    """What the evaluator needs of a model: r = p·q from fixed factors."""

    def __init__(self, p: np.ndarray, q: np.ndarray):
        self.p, self.q = torch.as_tensor(p).float(), torch.as_tensor(q).float()
        self.num_items = self.q.shape[0]

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.p[users] @ self.q.T

    def score_shared(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.p[users] @ self.q[items].T


def train_matrix(data: PreparedData) -> sp.csr_matrix:
    """The train split as a users × items CSR matrix of ones (implicit's input)."""
    tr = data.splits["train"]
    return sp.csr_matrix(
        (np.ones(len(tr.users), dtype=np.float32), (tr.users, tr.items)),
        shape=(data.num_users, data.num_items),
    )


def evaluator(data: PreparedData):
    engine = Engine(TrainConfig(preset="paper", epochs=1, topk=(20, 50)), data)

    def evaluate(model: Factors, split: str) -> dict[str, float]:
        engine.model = model
        return engine.evaluate(split)

    return evaluate


def fit(
    kind: str, x: sp.csr_matrix, options: dict, iterations: int, seed: int, threads: int
) -> tuple[Factors, float]:
    """One fit of implicit's `kind` ("als" or "bpr"); returns (factors, fit seconds)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    if kind == "als":
        model = AlternatingLeastSquares(
            factors=options["dim"],
            regularization=options["lambda"],
            alpha=options["alpha"],
            iterations=iterations,
            random_state=seed,
            num_threads=threads,
        )
    else:
        model = BayesianPersonalizedRanking(
            factors=options["dim"],
            learning_rate=options["lr"],
            regularization=options["lambda"],
            iterations=iterations,
            random_state=seed,
            num_threads=threads,
            verify_negative_samples=True,
        )
    start = time.perf_counter()
    model.fit(x, show_progress=False)
    seconds = time.perf_counter() - start
    return Factors(model.user_factors, model.item_factors), seconds


GRIDS = {
    "als": [
        ("alpha", [10.0, 1.0, 3.0, 30.0, 100.0]),
        ("lambda", [0.1, 0.01, 1.0, 10.0]),
        ("iterations", [15, 5, 30, 60]),
    ],
    "bpr": [
        ("lr", [0.01, 0.003, 0.03, 0.1]),
        ("lambda", [0.01, 0.001, 0.1]),
        ("iterations", [100, 50, 200, 400]),
    ],
}


def tune(kind, x, evaluate, dim, threads):
    """Coordinate search on validation Recall@20 (seed 0). Returns (options, rows tried)."""
    options = {"dim": dim, **{name: values[0] for name, values in GRIDS[kind]}}
    tried: dict[tuple, tuple[float, float]] = {}  # the search revisits its current point
    for name, values in GRIDS[kind]:
        scored = []
        for value in values:
            cand = {**options, name: value}
            key = tuple(sorted(cand.items()))
            if key not in tried:
                model, seconds = fit(kind, x, cand, cand["iterations"], 0, threads)
                tried[key] = (evaluate(model, "valid")["recall@20"], seconds)
                print(
                    f"{kind} {cand}: valid recall@20 {tried[key][0]:.4f} ({seconds:.1f} s)",
                    flush=True,
                )
            scored.append((tried[key][0], value))
        options[name] = max(scored, key=lambda s: s[0])[1]
    return options, [(dict(k), v, s) for k, (v, s) in tried.items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--models", default="als,bpr")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    data = PreparedData.load(args.data)
    x, evaluate = train_matrix(data), evaluator(data)
    seeds = [int(s) for s in args.seeds.split(",")]
    table = [
        "| model | chosen on validation | seeds | test Recall@20 | test NDCG@20 | "
        "test Recall@50 | test NDCG@50 | fit seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    grids = []
    for kind in args.models.split(","):
        options, rows = tune(kind, x, evaluate, args.dim, args.threads)
        finals = [fit(kind, x, options, options["iterations"], s, args.threads) for s in seeds]
        tests = [evaluate(m, "test") for m, _ in finals]
        cols = [
            mean_sd([t[k] for t in tests]) for k in ("recall@20", "ndcg@20", "recall@50", "ndcg@50")
        ]
        shown = {k: v for k, v in options.items() if k != "dim"}
        table.append(
            f"| implicit {kind.upper()}, d = {args.dim} | {shown} | {len(seeds)} | "
            f"{' | '.join(cols)} | {statistics.median(s for _, s in finals):.1f} |"
        )
        grids += [
            "",
            f"{kind.upper()} on validation (seed 0):",
            "",
            "| options | valid Recall@20 | fit seconds |",
            "|---|---|---|",
        ]
        grids += [
            f"| { ({k: v for k, v in o.items() if k != 'dim'}) } | {v:.4f} | {s:.1f} |"
            for o, v, s in rows
        ]
    write_report(
        args.out,
        "implicit_reference",
        "implicit's ALS and BPR on " + os.path.basename(os.path.abspath(args.data)),
        command_line(),
        table + grids,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
