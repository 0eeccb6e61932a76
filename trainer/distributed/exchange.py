"""How data-parallel workers combine their item-side gradients each step.

Users are sharded, so a user row's gradient stays on its worker (scaled by 1/W so the update is
the one-process update on the global batch). The item side is replicated: every worker must
apply the same averaged gradient. Two ways to get it:

- dense: all-reduce the [N, d] table gradient. Wire bytes per worker (ring): 2·(W−1)/W · N·d·4,
  whatever the step touched.
- sparse: all-gather each worker's touched rows (ids and gradient rows, padded to the largest
  count k_max) and add them up. Wire bytes per worker: (W−1) · k_max · (4d + 8) — proportional
  to the rows a step touches (≤ B·(1+n) per worker), flat as the catalogue grows.

`auto` chooses per step from those two byte counts; k_max is agreed first with a one-integer
all-reduce, so every worker takes the same branch. Both give every worker the same bits (each
sums the same gathered rows in the same order), so replicas stay identical. TorchRec's sharded
tables (all-to-all to row owners) were the other candidate: docs/deployment.md says why this
project uses torch.distributed collectives.
"""

from __future__ import annotations

from typing import Literal

import torch

ExchangeMode = Literal["auto", "dense", "sparse"]


class GradientExchange:
    """Averages item-side gradients over `world` workers (torch.distributed must be set up).

    `payload` counts the bytes this worker put into each kind of collective (`all_reduce`,
    `all_gather`, and `agree`, the k_max integers); `sparse_steps` counts sparse steps."""

    def __init__(self, world: int, mode: ExchangeMode = "auto"):
        self.world, self.mode = world, mode
        self.steps = self.sparse_steps = 0
        self.payload = {"all_reduce": 0, "all_gather": 0, "agree": 0}

    def per_step(self) -> dict:
        """Bytes per step this worker sent into collectives, for metrics.json."""
        steps = max(1, self.steps)
        return {
            "exchange_mode": self.mode,
            "exchange_bytes_per_step": sum(self.payload.values()) // steps,
            "allreduce_bytes_per_step": self.payload["all_reduce"] // steps,
            "sparse_step_fraction": self.sparse_steps / steps,
        }

    # -- the choice --------------------------------------------------------------------------

    def use_sparse(self, k_max: int, num_rows: int, dim: int) -> bool:
        if self.mode != "auto":
            return self.mode == "sparse"
        w = self.world
        dense = 2 * (w - 1) / w * num_rows * dim * 4
        sparse = (w - 1) * k_max * (4 * dim + 8)
        return sparse < dense

    def _k_max(self, k: int, device) -> int:
        import torch.distributed as dist

        t = torch.tensor([k], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        self.payload["agree"] += 8
        return int(t)

    # -- dense optimizer: the table gradient is a dense [N, d] tensor --------------------------

    @torch.no_grad()
    def after_backward(self, model) -> None:
        """Average every item-side gradient in place (tables dense or sparse, the rest dense);
        scale user-side gradients by 1/W. Parameters without a gradient are skipped."""
        self.steps += 1
        if self.world == 1:  # nobody to exchange with: nothing is sent
            return
        for p in model.item_parameters():
            if p.grad is None:
                continue
            if p.dim() == 2 and p.shape[0] == model.num_items:
                self._table_(p.grad)
            else:
                self._all_reduce_(p.grad)
        for p in model.user_parameters():
            if p.grad is not None:
                p.grad.div_(self.world)

    def _table_(self, grad: torch.Tensor) -> None:
        rows = grad.abs().amax(dim=1).nonzero().squeeze(1)  # the rows this worker touched
        k_max = self._k_max(rows.numel(), grad.device)
        if not self.use_sparse(k_max, grad.shape[0], grad.shape[1]):
            self._all_reduce_(grad)
            return
        ids, vals = self._gather(rows, grad.index_select(0, rows), k_max)
        grad.zero_().index_add_(0, ids, vals).div_(self.world)
        self.sparse_steps += 1

    def _all_reduce_(self, grad: torch.Tensor) -> None:
        import torch.distributed as dist

        dist.all_reduce(grad)
        grad.div_(self.world)
        self.payload["all_reduce"] += grad.numel() * grad.element_size()

    # -- lazy row-wise Adam: the gradient is (row ids, rows) ----------------------------------

    @torch.no_grad()
    def rows(self, ids: torch.Tensor, grads: torch.Tensor, num_rows: int):
        """ids [k] (may repeat), grads [k, d] → (unique ids [m], the workers' mean gradient of
        those rows [m, d]): identical on every worker, for LazyRowAdam.update."""
        if self.world == 1:  # the ids as given, repeats and all: LazyRowAdam.update merges them
            return ids, grads
        unique, inverse = torch.unique(ids, return_inverse=True)
        local = torch.zeros(unique.numel(), grads.shape[1], dtype=grads.dtype, device=grads.device)
        local.index_add_(0, inverse, grads)
        k_max = self._k_max(unique.numel(), grads.device)
        if self.use_sparse(k_max, num_rows, grads.shape[1]):
            all_ids, all_vals = self._gather(unique, local, k_max)
            self.sparse_steps += 1
        else:
            dense = torch.zeros(num_rows, grads.shape[1], dtype=grads.dtype, device=grads.device)
            dense.index_add_(0, unique, local)
            self._all_reduce_(dense)
            dense.mul_(self.world)  # summed below like the sparse path, then averaged once
            all_ids = dense.abs().amax(dim=1).nonzero().squeeze(1)
            all_vals = dense.index_select(0, all_ids)
        merged, inverse = torch.unique(all_ids, return_inverse=True)
        out = torch.zeros(merged.numel(), grads.shape[1], dtype=grads.dtype, device=grads.device)
        out.index_add_(0, inverse, all_vals)
        return merged, out.div_(self.world)

    def _gather(self, ids: torch.Tensor, vals: torch.Tensor, k_max: int):
        """All workers' (ids, rows), padded to k_max: (ids [Σk], rows [Σk, d]) in rank order."""
        import torch.distributed as dist

        k, d = ids.numel(), vals.shape[1]
        pad_ids = torch.full((k_max,), -1, dtype=torch.int64, device=ids.device)
        pad_ids[:k] = ids
        pad_vals = torch.zeros(k_max, d, dtype=vals.dtype, device=vals.device)
        pad_vals[:k] = vals
        got_ids = [torch.empty_like(pad_ids) for _ in range(self.world)]
        got_vals = [torch.empty_like(pad_vals) for _ in range(self.world)]
        dist.all_gather(got_ids, pad_ids)
        dist.all_gather(got_vals, pad_vals)
        self.payload["all_gather"] += k_max * (8 + d * vals.element_size())
        all_ids, all_vals = torch.cat(got_ids), torch.cat(got_vals)
        keep = all_ids >= 0
        return all_ids[keep], all_vals[keep]
