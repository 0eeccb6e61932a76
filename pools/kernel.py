"""Kernel-based sampler (Blanc & Rendle, ICML '18): q(i|u) ∝ α·(q_u·v_i)² + 1 with a tree."""

from __future__ import annotations

import torch

from pools.base import Negatives, NegativeSampler


class KernelSampler(NegativeSampler):
    """Exact draws from the quadratic-kernel distribution by descending a binary tree over the
    items whose nodes hold Σ v vᵀ and item counts: at each level a draw goes left with
    probability mass(left)/mass(node), mass = α·qᵀ(Σ v vᵀ)q + count. O(d² log N) per draw.
    Returns exact log-probabilities so the loss can weight by softmax(r − log q), as PRIS.

    The tree is rebuilt from the item embeddings at every refresh (once per epoch; the paper
    updates it as the embeddings move). Memory: 2·N·d² floats. Needs a factor model.
    """

    levels: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @torch.no_grad()
    def refresh(self, model, generator):
        v = model.item_emb.detach().float()
        depth = max(1, (self.num_items - 1).bit_length())
        leaves = 1 << depth
        outer = torch.zeros(leaves, v.shape[1] ** 2, device=v.device)
        outer[: self.num_items] = (v[:, :, None] * v[:, None, :]).reshape(self.num_items, -1)
        count = torch.zeros(leaves, device=v.device)
        count[: self.num_items] = 1.0
        self.levels = [(outer, count)]
        while self.levels[0][0].shape[0] > 1:  # sum sibling pairs up to the root
            o, c = self.levels[0]
            self.levels.insert(0, (o.view(-1, 2, o.shape[1]).sum(1), c.view(-1, 2).sum(1)))
        self.item_vectors = v

    def _mass(self, qq: torch.Tensor, level: int, node: torch.Tensor) -> torch.Tensor:
        outer, count = self.levels[level]
        return self.config.kernel_alpha * (qq * outer[node]).sum(-1) + count[node]

    @torch.no_grad()
    def sample(self, model, users, pos_items, generator):
        if self.levels is None:
            raise RuntimeError("kernel sampler needs refresh(model, generator) first")
        n = self.config.num_negatives
        q = model.query(users).float()
        qq = (q[:, :, None] * q[:, None, :]).reshape(q.shape[0], -1)  # [B, d²]
        qq = qq.repeat_interleave(n, dim=0)  # one row per draw
        node = torch.zeros(qq.shape[0], dtype=torch.long, device=q.device)
        for level in range(1, len(self.levels)):
            left = 2 * node
            m_left = self._mass(qq, level, left)
            m_right = self._mass(qq, level, left + 1)
            u = torch.rand(node.shape, device=q.device, generator=generator)
            node = torch.where(u * (m_left + m_right) < m_left, left, left + 1)
        items = node.view(-1, n).clamp_(max=self.num_items - 1)
        if self.config.exclude_positives:
            items = self._replace_positives(users, items, generator)
        return Negatives(items, logit_offset=-self.log_prob(q, items))

    def log_prob(self, q: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Exact log q(i|u) under the current tree: q [B, d], items [B, n] → [B, n]."""
        alpha = self.config.kernel_alpha
        dots = torch.bmm(self.item_vectors[items], q[:, :, None]).squeeze(2)
        root_outer, root_count = self.levels[0]
        qq = (q[:, :, None] * q[:, None, :]).reshape(q.shape[0], -1)
        z = alpha * (qq * root_outer[0]).sum(-1) + root_count[0]
        return torch.log(alpha * dots**2 + 1.0) - torch.log(z)[:, None]
