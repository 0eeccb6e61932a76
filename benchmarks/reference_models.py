"""Reference models outside the product, on the same split and evaluator as Table 2.

    python -m benchmarks.reference_models --data runs/data/ml-1m --out benchmarks/reports/ml-1m

How far is a 0.37 test NDCG@50 from what strong models reach on this split, and where does
the product's trainer stand against the closed-form trainers its users already run?

- `popularity`: every user gets the most-interacted train items.
- `ease`: EASE (Steck, WWW '19), the item-item model B = argmin ||X − XB||² + λ||B||² with
  diag(B) = 0, in closed form: P = (XᵀX + λI)⁻¹, B = −P / diag(P), diag(B) = 0. Not MF: an
  [N, N] matrix, the strongest simple baseline on MovieLens-style data.
- `ials`: implicit ALS (Hu, Koren, Volinsky, ICDM '08) as `implicit`'s users run it, at the
  protocol's d, with Rendle et al.'s regularisation (RecSys '22, "Revisiting the performance
  of iALS"): for user u with train items I_u and item vectors Q [N, d],

      p_u = (Σ_{i∈I_u} q_i q_iᵀ + α₀ QᵀQ + λ (|I_u| + α₀ N) I)⁻¹ Σ_{i∈I_u} q_i,

  and the same for items. It is MF (r = p·q), trained by exact alternating solves instead of
  sampled gradients.

Each model's options are chosen on validation NDCG@50 (EASE: λ; iALS: α₀, λ, and the
iteration, evaluated every --eval-every), then the chosen setting is fitted with every seed and
scored on test. Seconds are the fit's wall clock on this machine, evaluation excluded.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch

from benchmarks.report_utils import command_line, save_figure, write_report
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.data.dataset import PreparedData
from trainer.data.formats import DataError


class ClosedFormScores:
    """What the evaluator needs of a model, for scores from a closed-form fit: user factors
    [M, d] and item factors [N, d] (r = p·q), or dense scores [M, N] as P with Q None."""

    def __init__(self, P: torch.Tensor, Q: torch.Tensor | None = None):
        self.P, self.Q = P.float(), (None if Q is None else Q.float())
        self.num_items = P.shape[1] if Q is None else Q.shape[0]

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.P[users] if self.Q is None else self.P[users] @ self.Q.T

    def score_shared(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if self.Q is None:  # only the [B, block] entries, not the users' whole rows
            return self.P[users[:, None], items[None, :]]
        return self.P[users] @ self.Q[items].T


class IALSRun(NamedTuple):
    """One iALS fit, at its best iteration on validation."""

    valid: float
    iteration: int
    test: dict[str, float]
    seconds: float


def train_matrix(data: PreparedData) -> torch.Tensor:
    """X [M, N]: 1 where the user has the item in train."""
    tr = data.splits["train"]
    x = torch.zeros(data.num_users, data.num_items)
    x[torch.as_tensor(tr.users, dtype=torch.long), torch.as_tensor(tr.items, dtype=torch.long)] = 1
    return x


def ease_weights(gram: torch.Tensor, lam: float) -> torch.Tensor:
    """EASE's B [N, N] from the Gram matrix XᵀX (float64): zero diagonal, closed form."""
    p = torch.linalg.inv(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype))
    b = -p / p.diagonal()[None, :]
    return b.fill_diagonal_(0.0)


def ials_half_step(
    rows: torch.Tensor,
    cols: torch.Tensor,
    n_rows: int,
    other: torch.Tensor,
    alpha0: float,
    lam: float,
    chunk: int = 100_000,
) -> torch.Tensor:
    """One side's exact solve given the other side's factors `other` [n, d] (float64):
    interactions (rows[k], cols[k]) → factors [n_rows, d] (formula in the module docstring)."""
    d = other.shape[1]
    a = torch.zeros(n_rows, d, d, dtype=other.dtype)
    for s in range(0, rows.numel(), chunk):  # Σ q qᵀ per row, in chunks of [chunk, d, d]
        q = other[cols[s : s + chunk]]
        a.index_add_(0, rows[s : s + chunk], q[:, :, None] * q[:, None, :])
    b = torch.zeros(n_rows, d, dtype=other.dtype).index_add_(0, rows, other[cols])
    degree = torch.bincount(rows, minlength=n_rows).to(other.dtype)
    reg = lam * (degree + alpha0 * other.shape[0])
    a += alpha0 * (other.T @ other)[None] + reg[:, None, None] * torch.eye(d, dtype=other.dtype)
    return torch.linalg.solve(a, b)


def ials_loss(x: torch.Tensor, p: torch.Tensor, q: torch.Tensor, alpha0: float, lam: float):
    """The objective the half-steps minimise (dense, for tests on tiny data): observed squared
    error to 1, α₀ × every score², and the frequency-scaled L2 of both sides."""
    r = p @ q.T
    fit = ((r - 1) ** 2 * x).sum() + alpha0 * (r**2).sum()
    m, n = x.shape
    reg_p = lam * ((x.sum(1) + alpha0 * n) * (p**2).sum(1)).sum()
    reg_q = lam * ((x.sum(0) + alpha0 * m) * (q**2).sum(1)).sum()
    return fit + reg_p + reg_q


class Evaluator:
    """Validation and test NDCG@50 (and recall@50) of fixed scores, with the engine's masks."""

    def __init__(self, data: PreparedData):
        self.engine = Engine(TrainConfig(preset="paper", model="mf", epochs=1), data)

    def __call__(self, model: ClosedFormScores, split: str) -> dict[str, float]:
        self.engine.model = model
        return self.engine.evaluate(split)


def run_ials(data, evaluate, dim, alpha0, lam, iterations, eval_every, seed) -> IALSRun:
    """Fits iALS; its best validation NDCG@50, that iteration, its test metrics and the fit
    seconds to there. Test is scored once, for the best iteration's factors (at Gowalla size an evaluation costs
    more than an iteration)."""
    tr = data.splits["train"]
    u = torch.as_tensor(tr.users, dtype=torch.long)
    i = torch.as_tensor(tr.items, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(data.num_users, dim, generator=g, dtype=torch.float64) * 0.1 / dim**0.5
    q = torch.randn(data.num_items, dim, generator=g, dtype=torch.float64) * 0.1 / dim**0.5
    best, best_model, fit_seconds = (-1.0, 0, 0.0), None, 0.0
    for it in range(1, iterations + 1):
        start = time.perf_counter()
        p = ials_half_step(u, i, data.num_users, q, alpha0, lam)
        q = ials_half_step(i, u, data.num_items, p, alpha0, lam)
        fit_seconds += time.perf_counter() - start
        if it % eval_every == 0 or it == iterations:
            model = ClosedFormScores(p, q)
            valid = evaluate(model, "valid")["ndcg@50"]
            if valid > best[0]:
                best, best_model = (valid, it, fit_seconds), model
    return IALSRun(best[0], best[1], evaluate(best_model, "test"), best[2])


def tune_ease(data, evaluate, lambdas):
    """[(λ, valid, test metrics, seconds)] over the grid."""
    x = train_matrix(data)
    gram = (x.T @ x).double()
    rows = []
    for lam in lambdas:
        start = time.perf_counter()
        scores = (x.double() @ ease_weights(gram, lam)).float()
        seconds = time.perf_counter() - start
        model = ClosedFormScores(scores)
        rows.append((lam, evaluate(model, "valid")["ndcg@50"], evaluate(model, "test"), seconds))
        print(f"ease λ={lam}: valid {rows[-1][1]:.4f}", flush=True)
    return rows


def popularity(data, evaluate):
    """r(u, i) = train count of i, as rank-1 factors (no [M, N] copy of the counts)."""
    counts = torch.as_tensor(data.item_counts(), dtype=torch.float32)[:, None]
    model = ClosedFormScores(torch.ones(data.num_users, 1), counts)
    return evaluate(model, "valid")["ndcg@50"], evaluate(model, "test")


def _mean_population_sd(values):
    """mean ± population standard deviation (np.std), as this report has always shown."""
    return (
        f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"
    )


def ials_section(data, evaluate, args):
    """Grid on seed 0, then the chosen (α₀, λ) on every seed: report lines and plot points."""
    grid: list[tuple[float, float, IALSRun]] = []
    for alpha0, lam in itertools.product(args.ials_alpha0, args.ials_lambda):
        run = run_ials(
            data, evaluate, args.dim, alpha0, lam, args.iterations, args.eval_every, args.seeds[0]
        )
        grid.append((alpha0, lam, run))
        print(f"ials α0={alpha0} λ={lam}: valid {run.valid:.4f} at {run.iteration}", flush=True)
    alpha0, lam, chosen = max(grid, key=lambda row: row[2].valid)
    runs = [chosen]  # seeds[0] is the grid's run
    runs += [
        run_ials(data, evaluate, args.dim, alpha0, lam, args.iterations, args.eval_every, s)
        for s in args.seeds[1:]
    ]
    lines = ["| α₀ | λ | valid NDCG@50 (seed 0) | best iteration |", "|---|---|---|---|"]
    lines += [f"| {a} | {lam_} | {r.valid:.4f} | {r.iteration} |" for a, lam_, r in grid]
    test = [r.test["ndcg@50"] for r in runs]
    row = (
        f"| iALS, d = {args.dim} (α₀ {alpha0}, λ {lam}; iterations {[r.iteration for r in runs]}) | "
        f"{_mean_population_sd([r.valid for r in runs])} | {_mean_population_sd(test)} | "
        f"{_mean_population_sd([r.test['recall@50'] for r in runs])} | "
        f"{np.median([r.seconds for r in runs]):.1f} |"
    )
    point = (
        f"iALS d={args.dim}",
        float(np.mean(test)),
        float(np.median([r.seconds for r in runs])),
    )
    return lines, row, point


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    floats = lambda text: [float(v) for v in text.split(",") if v]  # noqa: E731
    ap.add_argument(
        "--ease-lambdas",
        type=floats,
        default=floats("100,200,400,600,800,1200,1600"),
        help="EASE's λ grid; empty skips EASE (its [N, N] float64 inverse: 10 GB at 36k items)",
    )
    ap.add_argument("--ials-alpha0", type=floats, default=floats("0.03,0.1,0.2,0.3"))
    ap.add_argument("--ials-lambda", type=floats, default=floats("0.003,0.005,0.01,0.02"))
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=24)
    ap.add_argument("--eval-every", type=int, default=4)
    ap.add_argument(
        "--seeds", type=lambda t: [int(v) for v in t.split(",") if v], default=[0, 1, 2]
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--report",
        default="reference_models",
        help="the report's name under OUT (NAME.md, NAME.png)",
    )
    args = ap.parse_args()
    if not (args.ials_alpha0 and args.ials_lambda and args.seeds):
        ap.error("--ials-alpha0, --ials-lambda and --seeds each need at least one value")
    torch.set_num_threads(args.threads)
    try:
        data = PreparedData.load(args.data)
    except DataError as exc:
        ap.error(str(exc))
    evaluate = Evaluator(data)
    pop_valid, pop_test = popularity(data, evaluate)
    ease = tune_ease(data, evaluate, args.ease_lambdas)
    ials_lines, ials_row, ials_point = ials_section(data, evaluate, args)
    body = [
        f"`{os.path.basename(data.path)}`: {data.num_users} users, {data.num_items} items; "
        f"test metrics of the setting chosen on validation; {args.threads} torch threads.",
        "",
        "| model | valid NDCG@50 | test NDCG@50 | test Recall@50 | fit seconds |",
        "|---|---|---|---|---|",
        f"| popularity | {pop_valid:.4f} | {pop_test['ndcg@50']:.4f} | {pop_test['recall@50']:.4f} | – |",
    ]
    points = [ials_point]
    if ease:
        lam, e_valid, e_test, e_sec = max(ease, key=lambda row: row[1])
        body += [
            f"| EASE (λ {lam:g}) | {e_valid:.4f} | {e_test['ndcg@50']:.4f} | "
            f"{e_test['recall@50']:.4f} | {e_sec:.1f} |"
        ]
        points.append((f"EASE λ={lam:g}", e_test["ndcg@50"], e_sec))
    body += [ials_row]
    if ease:
        body += [
            "",
            "EASE's λ on validation:",
            "",
            "| λ | valid NDCG@50 | test NDCG@50 |",
            "|---|---|---|",
        ]
        body += [f"| {lam_:g} | {v:.4f} | {t['ndcg@50']:.4f} |" for lam_, v, t, _ in ease]
    body += [
        "",
        f"iALS's grid on validation (seed {args.seeds[0]}, the best of every "
        f"{args.eval_every}th iteration up to {args.iterations}):",
        "",
        *ials_lines,
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ndcg, sec in points:
        ax.scatter([sec], [ndcg])
        ax.annotate(name, (sec, ndcg))
    ax.set_xlabel("fit seconds")
    ax.set_ylabel("test NDCG@50")
    ax.set_title(f"Reference models on {os.path.basename(data.path)}")
    save_figure(fig, args.out, args.report)
    body += ["", f"![reference models]({args.report}.png)"]
    print(
        write_report(
            args.out, args.report, "Reference models on the same split", command_line(), body
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
