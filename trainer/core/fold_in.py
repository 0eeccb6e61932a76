"""Fold-in: a query vector for a user the model never saw, fitted to their item history
against the frozen item table with the model's own kind of objective.

- softmax-family losses (`softmax`, `bsl`, `contrastive`): the softmax likelihood of the
  history at the loss's temperature. Its partition over the catalogue is taken over the
  history, the FOLD_IN_NEGATIVES / 2 items the start scores highest and as many uniform
  draws standing for the rest (a fixed seed: a history always gets the same vector); every
  item when the catalogue is smaller. Each step then costs a [B, H + M] product, not [B, N];
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
FOLD_IN_NEGATIVES = 4096


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
    negatives: int = FOLD_IN_NEGATIVES,
) -> torch.Tensor:
    """Query vectors [B, d] for B histories (each a 1-D tensor of item indices, non-empty),
    against the serving item vectors `items` [N, d]. Cosine models get unit queries."""
    n, d = items.shape
    history = torch.zeros(len(histories), n, dtype=torch.bool)
    for row, h in enumerate(histories):
        history[row, h] = True
    start = torch.stack([items[h].mean(0) for h in histories])
    lr = FOLD_IN_LR * (start.norm(dim=1).mean().item() or 1.0)
    if loss != "bpr":
        columns, offset, y = _sampled_partition(history, negatives, start, items, cosine)
        q = _softmax_fit(start, items[columns], y, offset, temperature, l2, cosine, steps, lr)
        return F.normalize(q, dim=1) if cosine else q
    q = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([q], lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        _bpr_objective(_scores(q, items, cosine), history, temperature, q, l2).backward()
        opt.step()
    q = q.detach()
    return F.normalize(q, dim=1) if cosine else q


@torch.no_grad()
def _sampled_partition(
    history: torch.Tensor, negatives: int, start: torch.Tensor, items: torch.Tensor, cosine: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The columns a softmax fold-in scores, [C], and per row [B, C] each column's
    log-weight in the partition and the row's target distribution (uniform over its history).

    Stratified: the row's own history and the M/2 other items its start query (`start`
    [B, d]) scores highest (most of the partition's mass at a low temperature) weigh 1; M/2
    uniform draws from the rest weigh (N − |H| − M/2)/k for the row's k draws outside those,
    so that they stand for the whole tail; columns of other rows only weigh nothing (−inf).
    M ≥ N: every item, exactly, and no start scores are computed."""
    b, n = history.shape
    if negatives >= n:
        return torch.arange(n), torch.zeros(b, n), _targets(history)
    top = torch.zeros_like(history)
    start_scores = _scores(start, items, cosine)  # only here: M ≥ N needs no ranking
    best = start_scores.masked_fill(history, -torch.inf).topk(negatives // 2, dim=1).indices
    top.scatter_(1, best, True)
    drawn = torch.zeros(n, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    drawn[torch.randperm(n, generator=g)[: negatives - negatives // 2]] = True
    columns = torch.nonzero(drawn | history.any(0) | top.any(0)).squeeze(1)
    own = history[:, columns]
    exact = top[:, columns] | own
    stand_in = drawn[columns].expand(b, -1) & ~exact
    rest = n - exact.sum(1, keepdim=True)
    weight = rest / stand_in.sum(1, keepdim=True).clamp(min=1)
    offset = torch.where(stand_in, weight.log(), torch.tensor(-torch.inf))
    offset = torch.where(exact, torch.tensor(0.0), offset)
    return columns, offset, _targets(own)


def _targets(own: torch.Tensor) -> torch.Tensor:
    return own.float() / own.sum(1, keepdim=True).clamp(min=1)


@torch.no_grad()
def _softmax_fit(start, items, y, offset, temperature, l2, cosine, steps, lr) -> torch.Tensor:
    """Adam on the softmax objective with its gradient written out (no autograd: two GEMMs
    and a softmax per step) over the scored columns `items` [C, d]. With s = u·V (u = q/‖q‖
    for cosine) and p = softmax(s/T + offset), the gradient is Vᵀ(p − y)/T, projected off u
    and divided by ‖q‖ for cosine, plus 2·l2·q."""
    q = start.clone()
    m, v = torch.zeros_like(q), torch.zeros_like(q)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        norm = q.norm(dim=1, keepdim=True).clamp_min(1e-12)
        u = q / norm if cosine else q
        g_s = (torch.softmax(u @ items.T / temperature + offset, dim=1) - y) / temperature
        g = g_s @ items
        if cosine:
            g = (g - u * (u * g).sum(1, keepdim=True)) / norm
        g = g + 2 * l2 * q
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step = lr / (1 - beta1**t)
        q -= step * m / ((v / (1 - beta2**t)).sqrt() + eps)
    return q


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
