"""The reference models of benchmarks/reference_models.py solve what they claim to solve."""

from __future__ import annotations

import subprocess
import sys

import torch
from conftest import ROOT

from benchmarks.reference_models import ease_weights, ials_half_step, ials_loss


def _tiny_matrix(seed: int = 0, users: int = 12, items: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(users, items, generator=g) < 0.4).double()


def test_ease_columns_are_the_ridge_regressions_without_their_own_item():
    """Column j of B minimises ||x_j − X b||² + λ||b||² with b_j = 0: the ridge regression of
    item j on the other items, solved directly here."""
    x, lam = _tiny_matrix(), 3.0
    b = ease_weights(x.T @ x, lam)
    assert torch.all(b.diagonal() == 0)
    for j in range(x.shape[1]):
        others = [k for k in range(x.shape[1]) if k != j]
        xo = x[:, others]
        direct = torch.linalg.solve(
            xo.T @ xo + lam * torch.eye(len(others), dtype=x.dtype), xo.T @ x[:, j]
        )
        torch.testing.assert_close(b[others, j], direct)


def test_ials_half_steps_are_exact_minimisers_and_never_raise_the_loss():
    """After the user step the objective's gradient in P is zero (and in Q after the item step),
    and alternating steps decrease the objective monotonically."""
    x, alpha0, lam = _tiny_matrix(), 0.2, 0.05
    rows, cols = x.nonzero(as_tuple=True)
    g = torch.Generator().manual_seed(1)
    q = torch.randn(x.shape[1], 3, generator=g, dtype=torch.float64)
    losses = []
    for _ in range(5):
        p = ials_half_step(rows, cols, x.shape[0], q, alpha0, lam, chunk=5).requires_grad_()
        loss = ials_loss(x, p, q, alpha0, lam)
        (grad,) = torch.autograd.grad(loss, p)
        assert grad.abs().max() < 1e-8
        p = p.detach()
        q = ials_half_step(cols, rows, x.shape[1], p, alpha0, lam).requires_grad_()
        loss = ials_loss(x, p, q, alpha0, lam)
        (grad,) = torch.autograd.grad(loss, q)
        assert grad.abs().max() < 1e-8
        q = q.detach()
        losses.append(float(loss.detach()))
    assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:]))
    assert losses[-1] < losses[0]


def test_closed_form_scores_blocks_match_the_full_rows():
    """The evaluator's item blocks see the same scores as score_all, dense or factored."""
    from benchmarks.reference_models import ClosedFormScores

    g = torch.Generator().manual_seed(2)
    p, q = torch.randn(5, 3, generator=g), torch.randn(9, 3, generator=g)
    users, items = torch.tensor([4, 0, 2]), torch.arange(3, 7)
    for model in (ClosedFormScores(p, q), ClosedFormScores(p @ q.T)):
        torch.testing.assert_close(
            model.score_shared(users, items), model.score_all(users)[:, items]
        )


def _script_error(tmp_path, *args) -> str:
    """The last stderr line of a run that must fail with argparse's exit status 2."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.reference_models",
            "--out",
            str(tmp_path / "out"),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()
    return proc.stderr.strip().splitlines()[-1]


def test_an_empty_grid_is_a_one_line_error(tmp_path):
    assert _script_error(tmp_path, "--data", "nowhere", "--ials-lambda", "").endswith(
        "--ials-alpha0, --ials-lambda and --seeds each need at least one value"
    )


def test_a_directory_that_is_not_a_prepared_dataset_is_a_one_line_error(tmp_path):
    assert "not a prepared dataset" in _script_error(tmp_path, "--data", str(tmp_path))
