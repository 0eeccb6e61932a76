"""The training losses: pairwise BPR (the paper's Eq. (1)/(3)), sampled softmax, bilateral
softmax (BSL), contrastive.

Every loss takes pos_scores [B], neg_scores [B, n] and the sampler's `Negatives`, and returns
the batch mean of a per-pair loss multiplied by `negatives.pos_weight` (AdaSIR-W's J(rank),
WARP's rank weight) where the sampler gives one.

Each loss registers itself (`@register_loss`) with the TrainConfig fields it reads and whether
it weights negatives by the sampler's per-negative offsets; TrainConfig builds its `loss`
choices from the registry and refuses an option the chosen loss would ignore.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pools.base import Negatives


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: `compute(config, pos_scores, neg_scores, negatives, num_items)`."""

    compute: Callable[..., torch.Tensor]
    options: tuple[str, ...]
    """TrainConfig fields the loss reads (any other loss option set with it is refused)."""
    weights_negatives: bool
    """Weights a pair's negatives by softmax(r + negatives.logit_offset) — AdaSIR's `weighting`
    option shapes this loss; losses without it have their own weighting."""


LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, *, options: tuple[str, ...] = (), weights_negatives: bool = False):
    """Function decorator: TrainConfig(loss=name) trains with this function."""

    def wrap(fn):
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is registered twice")
        LOSSES[name] = LossSpec(fn, options, weights_negatives)
        return fn

    return wrap


def loss_options() -> set[str]:
    """Every TrainConfig field some loss reads."""
    return {option for spec in LOSSES.values() for option in spec.options}


def negative_weights(neg_scores: torch.Tensor, negatives: Negatives) -> torch.Tensor:
    """ŵ(j|c) over a pair's n negatives, detached: [B, n], rows sum to 1 (over valid entries).

    softmax_j(r_cj + logit_offset_j) when the sampler gives an offset (AdaSIR: ∓ log w,
    PRIS: −log Q), else 1/n.
    """
    logits = (
        neg_scores.detach() + negatives.logit_offset
        if negatives.logit_offset is not None
        else torch.zeros_like(neg_scores)
    )
    invalid = negatives.invalid_mask(neg_scores.shape[0])
    if invalid is not None:
        logits = logits.masked_fill(invalid, float("-inf"))
        # A row whose every entry is invalid gets weight 0, not NaN.
        return torch.softmax(logits, dim=1).nan_to_num(0.0)
    if negatives.logit_offset is None:
        return torch.full_like(neg_scores, 1.0 / neg_scores.shape[1])
    return torch.softmax(logits, dim=1)


def _weighted_mean(per_pair: torch.Tensor, negatives: Negatives) -> torch.Tensor:
    if negatives.pos_weight is not None:
        per_pair = per_pair * negatives.pos_weight
    return per_pair.mean()


def pairwise_loss(
    pos_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    negatives: Negatives,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean over the batch of J(c,i) · Σ_j ŵ(j|c) · −log σ((r_ci − r_cj)/T).

    pos_scores [B], neg_scores [B, n] → scalar. −log σ(x) is softplus(−x), stable for any x.
    With `negatives.hinge_margin` = m the pair term is max(0, m − r_ci + r_cj) instead.
    T = 1 is the paper's loss.
    """
    gap = neg_scores - pos_scores[:, None]
    if negatives.hinge_margin is None:
        per_neg = F.softplus(gap / temperature)
    else:
        per_neg = F.relu(gap + negatives.hinge_margin)
    return _weighted_mean((negative_weights(neg_scores, negatives) * per_neg).sum(dim=1), negatives)


def _softmax_rows_(logits: torch.Tensor, extra: torch.Tensor | None = None):
    """In place: logits [B, n] (−inf for entries left out) become their softmax over the row,
    together with `extra` [B] (one more logit per row, kept outside the buffer) where given.
    Returns (log Σ e^{logit} [B], the extra entry's probability [B] or None). A row with no
    finite entry gets probabilities 0 and log Σ = −inf."""
    top = logits.amax(dim=1) if extra is None else torch.maximum(logits.amax(dim=1), extra)
    top = top.masked_fill(~torch.isfinite(top), 0.0)
    logits.sub_(top[:, None]).exp_()
    if extra is None:
        total = logits.sum(dim=1)
        logits.div_(total.clamp(min=1e-30)[:, None])
        return top + torch.log(total), None
    extra_mass = torch.exp(extra - top)
    total = logits.sum(dim=1) + extra_mass
    logits.div_(total.clamp(min=1e-30)[:, None])
    return top + torch.log(total), extra_mass / total


class _SampledSoftmax(torch.autograd.Function):
    """Per-pair loss log(e^{p} + Σ_j e^{l_j}) − p with p = r⁺/T and l = r⁻/T − shift (invalid
    entries −inf), its gradient written out: ∂/∂r⁻ = softmax_j / T, ∂/∂r⁺ = (softmax_pos − 1)/T.
    One buffer of [B, n] is made and reused; autograd would keep and revisit several."""

    @staticmethod
    def forward(ctx, pos_scores, neg_scores, shift, invalid, temperature):
        pos = pos_scores.detach() / temperature
        probs = neg_scores.detach() / temperature
        probs.sub_(shift)
        if invalid is not None:
            probs.masked_fill_(invalid, float("-inf"))
        log_total, pos_prob = _softmax_rows_(probs, pos)
        ctx.save_for_backward(probs, pos_prob)
        ctx.temperature = temperature
        return log_total - pos

    @staticmethod
    def backward(ctx, grad):
        probs, pos_prob = ctx.saved_tensors
        scale = grad / ctx.temperature
        return scale * (pos_prob - 1.0), probs * scale[:, None], None, None, None


def sampled_softmax_loss(
    pos_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    negatives: Negatives,
    num_items: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Sampled softmax with the log-proposal correction: mean over pairs of

        −log [ e^{r_ci/T} / (e^{r_ci/T} + Σ_j e^{r_cj/T − log(n·Q(j|c))}) ]

    over the pair's n negatives (invalid ones left out). (1/n)·Σ_j e^{r_cj/T}/Q(j|c) is the
    importance estimate of Σ_{j ≠ i} e^{r_cj/T}, so with every other item drawn once under a
    uniform Q over them this is the full softmax loss exactly. Q from `negatives.log_proposal`
    (None: uniform over the N items).
    """
    n = neg_scores.shape[1]
    log_q = (
        negatives.log_proposal
        if negatives.log_proposal is not None
        else torch.full((), -math.log(num_items), device=neg_scores.device)
    )
    shift = (log_q + math.log(n)).expand_as(neg_scores)
    invalid = negatives.invalid_mask(neg_scores.shape[0])
    per_pair = _SampledSoftmax.apply(pos_scores, neg_scores, shift, invalid, temperature)
    return _weighted_mean(per_pair, negatives)


def contrastive_loss(
    pos_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    negatives: Negatives,
    margin: float,
    negative_weight: float,
) -> torch.Tensor:
    """Cosine contrastive loss (CCL, SimpleX, CIKM '21): mean over pairs of

        max(0, 1 − r_ci) + w · mean_j max(0, r_cj − m)

    meant for cosine scores (r ∈ [−1, 1]): a positive is pulled to 1, a negative is pushed
    below the margin m and costs nothing once there.
    """
    per_neg = F.relu(neg_scores - margin)
    invalid = negatives.invalid_mask(neg_scores.shape[0])
    if invalid is not None:
        valid = (~invalid).float()
        neg_term = (per_neg * valid).sum(1) / valid.sum(1).clamp(min=1.0)
    else:
        neg_term = per_neg.mean(dim=1)
    return _weighted_mean(F.relu(1.0 - pos_scores) + negative_weight * neg_term, negatives)


class _NegativeLogMeanExp(torch.autograd.Function):
    """log mean_j e^{r_j/T} over a pair's valid negatives (0 for a pair with none), its
    gradient written out: ∂/∂r_j = softmax_j / T. The invalid entries come as coordinates
    (rows, cols): set to −inf one by one rather than through a [B, n] mask."""

    @staticmethod
    def forward(ctx, neg_scores, invalid_rows, invalid_cols, temperature):
        logits = neg_scores.detach() / temperature
        batch, n = logits.shape
        count = torch.full((batch,), n, dtype=logits.dtype, device=logits.device)
        if invalid_rows is not None:
            logits.index_put_((invalid_rows, invalid_cols), logits.new_tensor(float("-inf")))
            count -= torch.bincount(invalid_rows, minlength=batch).to(logits.dtype)
        # In place: the buffer becomes the softmax (a pair with no valid negative gets
        # probabilities 0: no gradient, and its loss term is set to 0 below). max with its
        # indices and a fresh softmax cost twice this.
        log_total, _ = _softmax_rows_(logits)
        probs = logits
        ctx.save_for_backward(probs)
        ctx.temperature = temperature
        out = log_total - torch.log(count.clamp(min=1.0))
        return out.masked_fill(~torch.isfinite(out), 0.0)

    @staticmethod
    def backward(ctx, grad):
        (probs,) = ctx.saved_tensors
        return probs * (grad / ctx.temperature)[:, None], None, None, None


def bilateral_softmax_loss(
    pos_scores: torch.Tensor,
    neg_scores: torch.Tensor,
    negatives: Negatives,
    temperature: float,
    positive_temperature: float | None,
) -> torch.Tensor:
    """Bilateral softmax loss (BSL, Wu et al. '23): mean over pairs of

        −r_ci/T⁺ + log mean_j e^{r_cj/T}

    pos_scores [B], neg_scores [B, n] → scalar. The negatives' log-mean-exp at T is a
    distributionally robust (worst-case) estimate of the negative side; T⁺ is a second
    temperature on the positive side (T⁺ = T, the default, is the sampled softmax with the
    positive left out of the normaliser). T⁺ > T weighs the negative side more, so the loss
    stops pushing scores of positives that already lead their negatives. Invalid negatives are
    left out of the mean; the log-proposal is not read (uniform draws: a constant shift).
    """
    if negatives.invalid_at is not None:
        rows, cols = negatives.invalid_at
    elif negatives.invalid is not None:
        rows, cols = negatives.invalid.nonzero(as_tuple=True)
    else:
        rows = cols = None  # type: ignore[assignment]  # no entry left out
    neg_side = _NegativeLogMeanExp.apply(neg_scores, rows, cols, temperature)
    t_pos = positive_temperature or temperature
    if negatives.pos_group is None:
        return _weighted_mean(neg_side - pos_scores / t_pos, negatives)
    pooled = _group_log_mean_exp(pos_scores / temperature, negatives.pos_group)
    return _weighted_mean(neg_side - pooled * (temperature / t_pos), negatives)


def _group_log_mean_exp(logits: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """log mean_b e^{logits_b} over the rows b of each row's group: logits [B], groups [B]
    → [B] (a row alone in its group keeps its own logit)."""
    same = groups[:, None] == groups[None, :]
    masked = torch.where(same, logits[None, :], float("-inf"))
    return torch.logsumexp(masked, dim=1) - torch.log(same.sum(dim=1).to(logits.dtype))


@register_loss("bpr", options=("loss_temperature",), weights_negatives=True)
def _bpr(config, pos_scores, neg_scores, negatives, num_items):
    return pairwise_loss(pos_scores, neg_scores, negatives, config.loss_temperature)


@register_loss("softmax", options=("loss_temperature",))
def _softmax(config, pos_scores, neg_scores, negatives, num_items):
    return sampled_softmax_loss(
        pos_scores, neg_scores, negatives, num_items, config.loss_temperature
    )


@register_loss("contrastive", options=("contrastive_margin", "contrastive_weight"))
def _contrastive(config, pos_scores, neg_scores, negatives, num_items):
    return contrastive_loss(
        pos_scores, neg_scores, negatives, config.contrastive_margin, config.contrastive_weight
    )


@register_loss("bsl", options=("loss_temperature", "positive_temperature", "positive_pooling"))
def _bsl(config, pos_scores, neg_scores, negatives, num_items):
    return bilateral_softmax_loss(
        pos_scores, neg_scores, negatives, config.loss_temperature, config.positive_temperature
    )


def batch_loss(
    config, pos_scores: torch.Tensor, neg_scores: torch.Tensor, negatives: Negatives, num_items: int
) -> torch.Tensor:
    """The loss `config` (a TrainConfig) names, for one batch."""
    return LOSSES[config.loss].compute(config, pos_scores, neg_scores, negatives, num_items)


@torch.no_grad()
def add_l2_gradient_(leaves: tuple[torch.Tensor, ...], weight: float, batch_size: int):
    """L2 on the embeddings a batch touched, λ·Σ ||e||² / B (the usual BPR coupling), added by
    hand after backward: each leaf's .grad gains 2λe/B, the penalty's gradient; returns the
    penalty, for the loss value. Autograd through pow and sum took three passes over the
    negatives' [B, n, d] rows. Negatives shared by the batch ([n, d]) count once."""
    penalty = torch.zeros((), dtype=leaves[0].dtype, device=leaves[0].device)
    for e in leaves:
        flat = e.detach().reshape(-1)
        penalty += torch.dot(flat, flat)
        if e.grad is None:  # the loss did not reach this leaf
            e.grad = torch.zeros_like(e)
        e.grad.add_(e.detach(), alpha=2.0 * weight / batch_size)
    return penalty * (weight / batch_size)
