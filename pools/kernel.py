"""Kernel-based sampler (Blanc & Rendle, ICML '18): q(i|u) ∝ α·(q_u·v_i)² + 1 with a tree."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from pools.base import Capabilities, Negatives, NegativeSampler
from pools.config import SamplerOptions
from pools.registry import register

# Bound on the [draws, block, d] gather of one within-block step (floats): slices of ~8 MB stay
# in cache, and memory stays flat however large B·n is.
_GATHER_BUDGET = 1 << 21
# A gathered float costs about this many dense-matmul floats (measured on CPU); the block size
# balances step 1's blocks·d(d+1)/2 against step 2's n·size·d gathers.
_GATHER_COST = 50


class KernelOptions(SamplerOptions):
    """Kernel: exact draws from a quadratic kernel of the scores."""

    name: Literal["kernel"]
    """The kernel-based sampler."""

    kernel_alpha: float = Field(100.0, gt=0.0)
    """α of q(i|u) ∝ α·(p_u·q_i)² + 1, the quadratic kernel of Blanc & Rendle."""


@register("kernel", options=KernelOptions, order=11)
class KernelSampler(NegativeSampler):
    """Exact draws from the quadratic-kernel distribution q(i|u) ∝ α·(q·v_i)² + 1.

    Blanc & Rendle's divide-and-conquer: a node of the tree holds Σ v vᵀ and the item count of
    its subtree, so its mass for a query q is α·qᵀ(Σ v vᵀ)q + count, and a draw descends from
    the root choosing children in proportion to their masses. Here the tree has depth 2 and
    fan-out N/size instead of being binary: the root's children are blocks of `size` ≈ √(N·d/50n)
    items. Step 1 scores every block for a whole batch of queries in one matmul and draws a
    block per negative; step 2 scores the items of the drawn block exactly and draws one. The
    distribution is the same exact one; the cost is O((N/size)·d²/2) per user plus O(size·d) per
    draw, as two dense batched steps instead of log₂N dependent gathers of d² floats per draw
    (gathers, not arithmetic, bound the tree on CPU).

    Returns exact log-probabilities, so the loss weights by softmax(r − log q) as PRIS does.
    The blocks' Σ v vᵀ are rebuilt from the item embeddings at every refresh (once per epoch;
    the paper updates them as the embeddings move). Memory: about √N·d²/2 + N·d floats.
    """

    config: KernelOptions

    capabilities = Capabilities(stateful=True)
    block_upper: torch.Tensor | None = None

    @torch.no_grad()
    def refresh(self, model, generator):
        v = model.item_emb.detach().float()
        n, d = v.shape
        draws = self.config.num_negatives
        size = max(1, min(n, round(math.sqrt(n * (d + 1) / (2 * _GATHER_COST * draws)))))
        blocks = -(-n // size)
        padded = torch.zeros(
            blocks * size, d, device=v.device
        )  # zero vectors, count 0: never drawn
        padded[:n] = v
        self.block_items = padded.view(blocks, size, d)
        outer = torch.einsum("bsi,bsj->bij", self.block_items, self.block_items)  # [blocks, d, d]
        # qᵀMq for a symmetric M reads only its upper triangle, the off-diagonal twice: step 1
        # multiplies d(d+1)/2 products q_i·q_j, not d².
        self.pair_i, self.pair_j = torch.triu_indices(d, d, device=v.device)
        twice = torch.where(self.pair_i == self.pair_j, 1.0, 2.0)
        self.block_upper = outer[:, self.pair_i, self.pair_j] * twice  # [blocks, d(d+1)/2]
        valid = torch.zeros(blocks * size, device=v.device)
        valid[:n] = 1.0
        self.block_valid = valid.view(blocks, size)
        self.block_count = self.block_valid.sum(1)
        self.block_last = self.block_count.long() - 1  # last real slot of each block
        self.total_outer = outer.sum(0)
        self.item_vectors = v

    @torch.no_grad()
    def sample(self, model, users, pos_items, generator):
        if self.block_upper is None:
            raise RuntimeError("kernel sampler needs refresh(model, generator) first")
        q = model.query(users).float()  # [B, d]
        items = self._draw(q, self.config.num_negatives, generator)
        if not self.config.exclude_positives:
            log_q = self.log_prob(q, items)
            return Negatives(items, logit_offset=-log_q, log_proposal=log_q)
        items, own, _ = self._redraw_positives(
            users, items, lambda rows, g: self._draw(q[rows], 1, g).squeeze(1), generator
        )
        # A kernel draw kept by rejection has probability q(i|u) / (1 − q(P_u|u)): the user's
        # constant cancels in the loss's softmax over the pair's negatives, so log q(i|u) serves.
        # A uniform fallback (still a positive after the redraws) reports its own 1/(N − |P_u|).
        fallback = -torch.log((self.num_items - self.positives.degree[users]).float())
        log_q = torch.where(own, self.log_prob(q, items), fallback[:, None])
        return Negatives(items, logit_offset=-log_q, log_proposal=log_q)

    def _draw(self, q: torch.Tensor, n: int, generator) -> torch.Tensor:
        """n exact draws per query from q(i|u) ∝ α·(q·v_i)² + 1: q [B, d] → items [B, n]."""
        alpha = self.config.kernel_alpha
        assert self.block_upper is not None, "refresh() builds the blocks before sampling"
        blocks, size, d = self.block_items.shape
        # Step 1: block masses α·qᵀ(Σ v vᵀ)q + count for every (user, block): [B, blocks].
        qq = q.index_select(1, self.pair_i) * q.index_select(1, self.pair_j)  # [B, d(d+1)/2]
        quad = (qq @ self.block_upper.T).clamp_(min=0.0)
        block = torch.multinomial(
            alpha * quad + self.block_count, n, replacement=True, generator=generator
        )  # [B, n]
        # Step 2: an item inside each drawn block, by its exact kernel mass.
        block, rows = block.reshape(-1), q.repeat_interleave(n, dim=0)  # one row per draw
        offset = torch.empty_like(block)
        step = max(1, _GATHER_BUDGET // (size * d))
        for s in range(0, block.numel(), step):
            b = block[s : s + step]
            items = self.scratch.gather(self.block_items.view(blocks, size * d), b)
            dots = torch.bmm(items.view(-1, size, d), rows[s : s + step, :, None]).squeeze(
                2
            )  # [m, size]
            cum = ((alpha * dots**2 + 1.0) * self.block_valid[b]).cumsum(1)  # padding adds 0
            u = torch.rand(cum.shape[0], 1, device=cum.device, generator=generator) * cum[:, -1:]
            # first slot whose cumulative mass exceeds u (inverse CDF); the clamp guards the
            # u == total rounding case from landing on padding
            offset[s : s + step] = torch.minimum((cum <= u).sum(1), self.block_last[b])
        return (block * size + offset).view(-1, n)

    def log_prob(self, q: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Exact log q(i|u): q [B, d], items [B, n] → [B, n]."""
        alpha = self.config.kernel_alpha
        dots = torch.bmm(self.item_vectors[items], q[:, :, None]).squeeze(2)
        z = alpha * torch.einsum("bi,ij,bj->b", q, self.total_outer, q) + self.num_items
        return torch.log(alpha * dots**2 + 1.0) - torch.log(z)[:, None]

    def state_size_bytes(self) -> int:
        if self.block_upper is None:
            return 0
        return (self.block_upper.numel() + self.block_items.numel()) * 4
