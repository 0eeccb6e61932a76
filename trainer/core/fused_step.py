"""The training step as torch.compile runs it (TrainConfig.compile).

The eager step (engine.Optimizer.step) runs autograd through the model and the loss: each
operation is its own pass over the batch's [B, n] score matrix, which on a CPU is most of a
step that is not the three GEMMs. Here the bilateral softmax loss over negatives shared by the
batch and its gradient with respect to the gathered rows are written out, so the compiler
fuses everything between the GEMMs into one pass over each row of scores (scale, mask, exp,
row sums, the gradient's scale), and the step has no autograd graph to build.

That fused step covers the default's recipe (`fusable`: MF, the `bsl` loss, uniform
negatives shared by the batch, lazy row-wise Adam). Any other recipe with negatives per pair
compiles its eager forward and, through AOTAutograd, its backward (`scores_and_loss`). The
compiled and eager steps give the same losses and models to float tolerance
(tests/test_fused_step.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from pools.base import Negatives
from trainer.core.loss import batch_loss
from trainer.core.models import unit_rows, unit_rows_backward

# A cosine score is at most 1, so r/T − 1/T ≤ 0 needs no row maximum; below this T the
# smallest term e^{−2/T} would underflow float32, and the row maximum is taken instead.
_CONSTANT_SHIFT_MIN_T = 0.03

COMPILE_MIN_STEPS = 20_000
"""`compile="auto"` compiles a run of at least this many steps (epochs × steps an epoch): a
first compile costs seconds that a shorter run would not earn back (docs/decisions.md)."""


def fusable(config) -> bool:
    """Whether `config` trains on this step when compiled (else on the eager step)."""
    s = config.sampler
    return (
        config.model == "mf"
        and config.loss == "bsl"
        and config.optimizer == "sparse-adam"
        and s.name == "uniform"
        and getattr(s, "shared_negatives", False)
        and config.positive_pooling == "pair"
    )


def bsl_shared_step(
    p: torch.Tensor,
    pos_v: torch.Tensor,
    neg_v: torch.Tensor,
    keep: torch.Tensor,
    pair_weight: torch.Tensor,
    user_mask: torch.Tensor,
    temperature: float,
    positive_temperature: float,
    cosine: bool,
    l2: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss of loss.bilateral_softmax_loss over shared negatives, and its gradient.

    p [B, d] users' rows, pos_v [B, d] their positives' rows, neg_v [n, d] the batch's shared
    negatives' rows, keep [B, n] 1.0 where a negative counts for that pair (0.0: one of the
    user's train items), pair_weight [B] each pair's loss multiplier (Negatives.pos_weight;
    ones: unweighted), user_mask [B, d] user dropout's mask on p (ones: none). Returns
    (loss [], ∂/∂p [B, d], ∂/∂pos_v [B, d], ∂/∂neg_v [n, d]); l2 > 0 adds λ·Σ‖e‖²/B over the
    rows (the shared negatives once), as add_l2_gradient_.
    """
    batch = p.shape[0]
    dropped = p * user_mask
    if cosine:
        (q, q_norm), (a, a_norm), (b, b_norm) = (
            unit_rows(dropped),
            unit_rows(pos_v),
            unit_rows(neg_v),
        )
    else:
        q, a, b = dropped, pos_v, neg_v
    logits = (q @ b.T) * (1.0 / temperature)
    if cosine and temperature >= _CONSTANT_SHIFT_MIN_T:  # every logit − 1/T is ≤ 0
        shift = torch.full((batch, 1), 1.0 / temperature, dtype=p.dtype, device=p.device)
        terms = torch.exp(logits - shift) * keep
    else:
        masked = torch.where(keep > 0, logits, float("-inf"))
        shift = masked.amax(dim=1, keepdim=True)
        shift = torch.where(torch.isfinite(shift), shift, 0.0)
        terms = torch.exp(masked - shift)
    total = terms.sum(dim=1, keepdim=True)
    count = keep.sum(dim=1, keepdim=True)
    log_mean = shift + torch.log(total) - torch.log(count.clamp(min=1.0))
    log_mean = torch.where(count > 0, log_mean, 0.0)  # a pair with no valid negative: 0
    pos_scores = (q * a).sum(dim=1, keepdim=True)
    w = pair_weight[:, None]
    loss = (w * (log_mean - pos_scores * (1.0 / positive_temperature))).mean()
    # ∂loss/∂logit_j = w · softmax_j / B over the valid negatives; ∂/∂score = that / T.
    weights = terms * ((w / (batch * temperature)) / total.clamp(min=1e-30))
    pos_scale = w / (batch * positive_temperature)
    grad_q = weights @ b - a * pos_scale
    grad_b = weights.T @ q
    grad_a = q * -pos_scale
    if cosine:
        grad_q = unit_rows_backward(grad_q, q, q_norm)
        grad_a = unit_rows_backward(grad_a, a, a_norm)
        grad_b = unit_rows_backward(grad_b, b, b_norm)
    grad_q = grad_q * user_mask
    if l2 > 0:
        scale = 2.0 * l2 / batch
        grad_q, grad_a, grad_b = grad_q + scale * p, grad_a + scale * pos_v, grad_b + scale * neg_v
        rows = (p * p).sum() + (pos_v * pos_v).sum() + (neg_v * neg_v).sum()
        loss = loss + rows * (l2 / batch)
    return loss, grad_q, grad_a, grad_b


class Compiled:
    """A step function through torch.compile, compiled at its first call.

    `ready` False after a failed compile: the engine then trains on its eager step, and the
    epoch's record says why (`compile_error`, one line in the progress). `compile_s`: the
    first call's seconds (the compile), read once by the epoch it fell in. On CUDA the step
    is captured as a CUDA graph (mode "reduce-overhead")."""

    def __init__(self, fn, device: torch.device):
        mode = "reduce-overhead" if device.type == "cuda" else None
        self.fn = torch.compile(fn, dynamic=False, mode=mode)
        self.ready = True
        self.compiled = False
        self.compile_s = 0.0
        self.error: str | None = None
        """Why the compile failed (its first line), until the epoch record takes it."""

    def __call__(self, *args, then: Callable | None = None):
        """fn(*args), then `then(result)` (the backward of a compiled forward, which compiles
        at its first call too); None where the compile failed."""
        if self.compiled:
            out = self.fn(*args)
            return then(out) if then else out
        t0 = time.perf_counter()
        try:
            out = self.fn(*args)
            out = then(out) if then else out
        except Exception as exc:  # no C++ compiler, a backend error: train eagerly
            self.ready = False
            self.error = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            return None
        self.compiled = True
        self.compile_s = time.perf_counter() - t0
        return out

    def take_record(self) -> dict:
        """What the epoch record says of the compile, once: {"compile_s": seconds} in the
        epoch that compiled, {"step": "eager", "compile_error": why} in the one it failed,
        {"step": "eager"} after a failure, {} otherwise."""
        if not self.ready:
            error, self.error = self.error, None
            return {"step": "eager", **({"compile_error": error} if error else {})}
        seconds, self.compile_s = self.compile_s, 0.0
        return {"compile_s": round(seconds, 2)} if seconds else {}


def scores_and_loss(model, config):
    """The eager step's forward for negatives per pair ([B, n]), as a function of tensors for
    torch.compile: (p, pos_v, neg_v, negatives' tensors and hinge margin) → the batch loss;
    autograd (compiled with it) gives the rows' gradients."""

    def forward(
        p,
        pos_v,
        neg_v,
        items,
        logit_offset,
        pos_weight,
        pos_group,
        log_proposal,
        invalid,
        hinge_margin,
    ):
        negatives = Negatives(
            items,
            logit_offset=logit_offset,
            pos_weight=pos_weight,
            pos_group=pos_group,
            hinge_margin=hinge_margin,
            log_proposal=log_proposal,
            invalid=invalid,
        )
        pos_s, neg_s = model.score_vectors(p, pos_v, neg_v)
        return batch_loss(config, pos_s, neg_s, negatives, model.num_items)

    return forward


def compiled_step(config, model, steps_per_epoch: int, device: torch.device):
    """(kind, Compiled) for this run, or None: eager. kind "fused": `bsl_shared_step`, the
    whole step; "loss": `scores_and_loss`, the forward and its backward."""
    if config.compile == "off":
        return None
    if config.compile == "auto" and steps_per_epoch * config.epochs < COMPILE_MIN_STEPS:
        return None
    if fusable(config):
        return "fused", Compiled(bsl_shared_step, device)
    return "loss", Compiled(scores_and_loss(model, config), device)


def keep_mask(negatives, batch: int) -> torch.Tensor:
    """[B, n] float, 0.0 at the entries `negatives` marks invalid, 1.0 elsewhere."""
    n = negatives.items.shape[-1]
    keep = torch.ones(batch, n, dtype=torch.float32, device=negatives.items.device)
    if negatives.invalid_at is not None:
        keep.index_put_(negatives.invalid_at, keep.new_zeros(()))
    elif negatives.invalid is not None:
        keep.masked_fill_(negatives.invalid, 0.0)
    return keep
