"""Lazy row-wise Adam for embedding tables: a step costs O(rows a batch touched), not O(table).

Dense Adam reads and writes every row of every table each step (and autograd materialises a
dense table-sized gradient first); on a Gowalla-size model that is most of the step. Here the
gradient is taken with respect to the *gathered* rows, summed per unique row, and Adam updates
only those rows and their moments ("lazy Adam", the semantics of torch.optim.SparseAdam):
untouched rows keep their moments and do not move.
"""

from __future__ import annotations

import torch


class LazyRowAdam:
    def __init__(self, table: torch.nn.Parameter, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.table, self.lr, self.eps = table, lr, eps
        self.beta1, self.beta2 = betas
        self.exp_avg = torch.zeros_like(table)
        self.exp_avg_sq = torch.zeros_like(table)
        self.steps = 0

    @torch.no_grad()
    def update(self, rows: torch.Tensor, grads: torch.Tensor) -> None:
        """rows [k] (may repeat), grads [k, d]: the gradient of the loss w.r.t. table[rows]."""
        unique, inverse = torch.unique(rows, return_inverse=True)
        g = torch.zeros(unique.numel(), grads.shape[1], dtype=grads.dtype, device=grads.device)
        g.index_add_(0, inverse, grads)
        self.steps += 1
        b1, b2 = self.beta1, self.beta2
        # index_select / index_copy_ / index_add_: far cheaper than tensor[index] on CPU.
        m = self.exp_avg.index_select(0, unique).mul_(b1).add_(g, alpha=1 - b1)
        v = self.exp_avg_sq.index_select(0, unique).mul_(b2).addcmul_(g, g, value=1 - b2)
        self.exp_avg.index_copy_(0, unique, m)
        self.exp_avg_sq.index_copy_(0, unique, v)
        # torch.optim.SparseAdam's arithmetic, so the two agree to rounding.
        step_size = self.lr * (1 - b2**self.steps) ** 0.5 / (1 - b1**self.steps)
        denom = v.sqrt().add_(self.eps)
        # Gathered, moved and written back: on CPU index_add_ goes through an expanded
        # [k, d] index and costs twice this.
        rows = self.table.data.index_select(0, unique)
        self.table.data.index_copy_(0, unique, rows.add_(m.div_(denom).mul_(-step_size)))

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.steps = int(state["steps"])
