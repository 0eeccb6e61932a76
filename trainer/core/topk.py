"""The one top-k of the project: blockwise over items with a running merge, so memory stays
[users, block] at any catalogue size. Evaluation, the Python API and the service all rank
through `top_k`; `VectorScorer` lets fixed (query, item) vectors be ranked like a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from pools.interactions import InteractionIndex

ITEM_BLOCK = 1 << 16
"""Items scored at once by `top_k`; a larger catalogue is streamed in blocks of this size."""


class VectorScorer:
    """Scores as dot products of query vectors [U, d] and item vectors [N, d]: a trained
    model's serving vectors, or folded-in users' queries against the frozen item table."""

    def __init__(self, queries: torch.Tensor, items: torch.Tensor):
        self.queries, self.items = queries, items
        self.num_items = items.shape[0]

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        if users.numel() == 1:  # one request: a matrix-vector product over the item rows
            return torch.mv(self.items, self.queries[users[0]]).unsqueeze(0)
        return self.queries.index_select(0, users) @ self.items.T

    def score_shared(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.queries.index_select(0, users) @ self.items.index_select(0, items).T


class ReusingScorer(VectorScorer):
    """A VectorScorer whose `score_all` writes into one buffer, reused from call to call: for
    a loop that ranks chunk after chunk and is done with each chunk's scores before the next
    (evaluation), where a fresh [chunk, N] matrix per call costs about a third more than the
    product itself on CPU. The returned scores are overwritten by the next call."""

    def __init__(self, queries: torch.Tensor, items: torch.Tensor):
        super().__init__(queries, items)
        self._buffer = torch.empty(0, device=items.device, dtype=items.dtype)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        need = users.numel() * self.num_items
        if self._buffer.numel() < need:
            self._buffer = torch.empty(need, device=self.items.device, dtype=self.items.dtype)
        out = self._buffer[:need].view(users.numel(), self.num_items)
        return torch.mm(self.queries.index_select(0, users), self.items.T, out=out)


@torch.no_grad()
def top_k(
    model,
    users: torch.Tensor,
    k: int,
    masked: Sequence[InteractionIndex] = (),
    item_block: int = ITEM_BLOCK,
    allowed: torch.Tensor | None = None,
):
    """The k best items for each user, items in any `masked` index excluded.

    users [B] → (values, indices) [B, min(k, num_items)], best first. `allowed` [N] bool, if
    given, is the only items that may be returned (an allow-list with exclusions applied). An
    excluded item that still appears (fewer eligible items than k) has value −inf: callers
    drop those. Items are scored in blocks of `item_block` ([B, block] scores at a time) and
    merged into a running top-k.
    """
    n_items = model.num_items
    k = min(k, n_items)
    masks = [index.rows_of(users) for index in masked]
    best_v: torch.Tensor | None = None
    best_i: torch.Tensor | None = None
    for start in range(0, n_items, item_block):
        stop = min(start + item_block, n_items)
        if stop - start == n_items:
            scores = model.score_all(users).float()
        else:
            scores = model.score_shared(
                users, torch.arange(start, stop, device=users.device)
            ).float()
        for rows, cols in masks:
            if stop - start == n_items:  # one block: every masked pair is inside it
                scores[rows, cols] = -math.inf
                continue
            inside = (cols >= start) & (cols < stop)
            scores[rows[inside], cols[inside] - start] = -math.inf
        if allowed is not None:
            scores.masked_fill_(~allowed[start:stop], -math.inf)
        v, i = scores.topk(min(k, stop - start), dim=1)
        i = i + start
        if best_v is not None and best_i is not None:
            v = torch.cat([best_v, v], 1)
            v, pick = v.topk(min(k, v.shape[1]), dim=1)
            i = torch.cat([best_i, i], 1).gather(1, pick)
        best_v, best_i = v, i
    assert best_v is not None and best_i is not None  # a catalogue has ≥ 1 item block
    return torch.return_types.topk((best_v, best_i))
