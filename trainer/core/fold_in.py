"""Fold-in: a query vector for a user the model never saw, fitted to their item history
against the frozen item table with the model's own kind of objective.

- softmax-family losses (`softmax`, `bsl`, `contrastive`): the full softmax likelihood of the
  history over the whole catalogue at the loss's temperature (the exact form of what sampled
  training estimates);
- `bpr`: the mean pairwise log-sigmoid of history items over every other item, with the
  run's L2 on the query.

The query starts at the mean of the history's item vectors and takes a few vectorised Adam
steps; a batch of histories is fitted at once ([B, N] scores per step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FOLD_IN_STEPS = 30
FOLD_IN_LR = 0.1


def _scores(q: torch.Tensor, items: torch.Tensor, cosine: bool) -> torch.Tensor:
    return (F.normalize(q, dim=1) if cosine else q) @ items.T


def fold_in(
    items: torch.Tensor,
    histories: list[torch.Tensor],
    *,
    cosine: bool,
    loss: str,
    temperature: float,
    l2: float = 0.0,
    steps: int = FOLD_IN_STEPS,
) -> torch.Tensor:
    """Query vectors [B, d] for B histories (each a 1-D tensor of item indices, non-empty),
    against the serving item vectors `items` [N, d]. Cosine models get unit queries."""
    n, d = items.shape
    history = torch.zeros(len(histories), n, dtype=torch.bool)
    for row, h in enumerate(histories):
        history[row, h] = True
    start = torch.stack([items[h].mean(0) for h in histories])
    q = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([q], lr=FOLD_IN_LR * (start.norm(dim=1).mean().item() or 1.0))
    objective = _bpr_objective if loss == "bpr" else _softmax_objective
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        objective(_scores(q, items, cosine), history, temperature, q, l2).backward()
        opt.step()
    q = q.detach()
    return F.normalize(q, dim=1) if cosine else q


def _softmax_objective(scores, history, temperature, q, l2) -> torch.Tensor:
    """Mean over rows of −(1/|H|) Σ_{i∈H} log softmax(s/T)_i, plus L2 on the query."""
    logits = scores / temperature
    n_hist = history.sum(1).clamp(min=1)
    nll = torch.logsumexp(logits, dim=1) - (logits * history).sum(1) / n_hist
    return nll.mean() + l2 * q.square().sum(1).mean()


def _bpr_objective(scores, history, temperature, q, l2) -> torch.Tensor:
    """Mean over rows of E_{i∈H, j∉H} −log σ((s_i − s_j)/T), plus L2 on the query. The
    expectation over j is exact: every non-history item, one [B, H, N] block per row's
    history (histories are short next to the catalogue)."""
    losses = []
    for row in range(scores.shape[0]):
        s = scores[row] / temperature
        pos = s[history[row]]
        neg = s[~history[row]]
        losses.append(-F.logsigmoid(pos[:, None] - neg[None, :]).mean())
    return torch.stack(losses).mean() + l2 * q.square().sum(1).mean()
