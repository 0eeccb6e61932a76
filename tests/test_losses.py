"""The softmax-family losses and cosine scores against answers known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from pools import InteractionIndex, Negatives, build_sampler, sampler_config
from trainer.core.config import TrainConfig
from trainer.core.loss import contrastive_loss, sampled_softmax_loss
from trainer.core.models import build_model


def test_sampled_softmax_with_every_other_item_is_the_full_softmax():
    g = torch.Generator().manual_seed(0)
    n_items, batch, temperature = 40, 6, 0.3
    scores = torch.randn(batch, n_items, generator=g)
    pos = torch.randint(0, n_items, (batch,), generator=g)
    others = torch.stack([torch.cat([torch.arange(p), torch.arange(p + 1, n_items)]) for p in pos])
    # Every other item once, under a uniform Q over them: n·Q(j) = 1, no correction left.
    neg = Negatives(others, log_proposal=torch.full(others.shape, -math.log(n_items - 1)))
    loss = sampled_softmax_loss(
        scores.gather(1, pos[:, None]).squeeze(1),
        scores.gather(1, others),
        neg,
        n_items,
        temperature,
    )
    full = torch.nn.functional.cross_entropy(scores / temperature, pos)
    assert float(loss) == pytest.approx(float(full), rel=1e-6)


def test_sampled_softmax_gradient_averages_to_the_full_softmax_gradient():
    """Shared uniform negatives, the positive masked: the averaged gradient of the sampled
    loss matches the full softmax's within the estimator's small bias at n = 400."""
    n_items, dim, temperature = 30, 4, 0.5
    model = build_model("mf", 3, n_items, dim, seed=0)
    with torch.no_grad():
        model.user_emb.mul_(10)
        model.item_emb.mul_(5)
    users = torch.tensor([0, 1, 2])
    # Each user's top item: the positive then holds much of the softmax mass, so a wrong
    # log-proposal correction (which misweighs the negatives against it) shows in the gradient.
    pos = model.score_all(users).argmax(1).detach()
    full = torch.nn.functional.cross_entropy(model.score_all(users) / temperature, pos)
    expected = torch.autograd.grad(full, model.item_emb)[0]
    none = InteractionIndex(
        torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 3, n_items
    )
    cfg = sampler_config(name="uniform", num_negatives=400, shared_negatives=True)
    sampler = build_sampler(cfg, none, torch.ones(n_items))
    g = torch.Generator().manual_seed(1)
    total = torch.zeros_like(model.item_emb)
    draws = 300
    for _ in range(draws):
        neg = sampler.sample(model, users, pos, g)
        neg.invalid = neg.items[None, :] == pos[:, None]  # the full softmax's sum leaves i out
        pos_s, neg_s, _ = model(users, pos, neg.items)
        loss = sampled_softmax_loss(pos_s, neg_s, neg, n_items, temperature)
        total += torch.autograd.grad(loss, model.item_emb)[0]
    mean = total / draws
    assert float((mean - expected).norm() / expected.norm()) < 0.05


def test_contrastive_loss_by_hand():
    pos = torch.tensor([0.9, 0.2])
    neg_s = torch.tensor([[0.7, 0.1], [0.6, 0.55]])
    neg = Negatives(
        torch.zeros(2, 2, dtype=torch.long), invalid=torch.tensor([[False, False], [False, True]])
    )
    loss = contrastive_loss(pos, neg_s, neg, margin=0.5, negative_weight=2.0)
    first = (1 - 0.9) + 2.0 * (0.2 + 0.0) / 2
    second = (1 - 0.2) + 2.0 * 0.1  # the invalid entry is left out of the mean
    assert float(loss) == pytest.approx((first + second) / 2, rel=1e-6)


@pytest.mark.parametrize("model_name", ["mf", "gmf"])
def test_cosine_scores_do_not_see_vector_lengths(model_name):
    model = build_model(model_name, 5, 20, 8, seed=0, score="cosine")
    users, items = torch.arange(5), torch.randint(0, 20, (5, 7))
    before = model.score(users, items).detach()
    with torch.no_grad():
        model.user_emb.mul_(torch.rand(5, 1) * 10 + 0.1)
        model.item_emb.mul_(torch.rand(20, 1) * 10 + 0.1)
    assert torch.allclose(model.score(users, items), before, atol=1e-5)
    assert float(before.abs().max()) <= 1.0 + 1e-6
    queries, vectors = model.serving_vectors()  # the service ranks by the same scores
    assert torch.allclose(queries @ vectors.T, model.score_all(users).detach(), atol=1e-5)
    pos_s, neg_s, _ = model(users, items[:, 0], items[0])  # shared negatives: one GEMM
    assert torch.allclose(neg_s, model.score_all(users)[:, items[0]], atol=1e-5)


def test_unit_rows_have_the_gradient_of_f_normalize():
    """The hand-written backward of the cosine normalisation (a zero row included)."""
    from trainer.core.models import _unit

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, dtype=torch.float64, generator=g)
    x[0, 1] = 0.0
    upstream = torch.randn(6, 3, 4, dtype=torch.float64, generator=g)
    mine, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    (_unit(mine) * upstream).sum().backward()
    (torch.nn.functional.normalize(ref, dim=-1, eps=1e-12) * upstream).sum().backward()
    assert torch.allclose(_unit(x), torch.nn.functional.normalize(x, dim=-1, eps=1e-12))
    assert torch.allclose(mine.grad, ref.grad)
    assert torch.autograd.gradcheck(_unit, (x[1:].clone().requires_grad_(),))


def test_impossible_loss_and_sampler_combinations_are_refused():
    with pytest.raises(ValueError, match="shared_negatives"):
        sampler_config(name="dns", shared_negatives=True)
    for option in ({"shared_candidates": True}, {"pool_pick": "max"}):
        with pytest.raises(ValueError, match="has none"):
            sampler_config(name="dns", **option)
    with pytest.raises(ValueError, match="weighting='reference'"):
        TrainConfig(
            preset="paper", loss="softmax", sampler={"name": "adasir-u", "weighting": "reference"}
        )
    with pytest.raises(ValueError, match="hinge"):
        TrainConfig(
            preset="paper", loss="contrastive", sampler={"name": "warp", "warp_loss": "hinge"}
        )


def test_written_out_softmax_gradient_matches_autograd():
    g = torch.Generator().manual_seed(3)
    pos = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    neg_s = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    log_q = torch.randn(5, 7, generator=g, dtype=torch.float64)
    invalid = torch.rand(5, 7, generator=g) < 0.3
    neg = Negatives(
        torch.zeros(5, 7, dtype=torch.long),
        log_proposal=log_q,
        invalid=invalid,
        pos_weight=torch.rand(5, generator=g, dtype=torch.float64),
    )
    loss = sampled_softmax_loss(pos, neg_s, neg, 100, temperature=0.7)
    neg_logits = (neg_s / 0.7 - (log_q + math.log(7))).masked_fill(invalid, float("-inf"))
    logits = torch.cat([pos[:, None] / 0.7, neg_logits], 1)
    reference = ((torch.logsumexp(logits, 1) - pos / 0.7) * neg.pos_weight).mean()
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-10)
    mine = torch.autograd.grad(loss, (pos, neg_s))
    theirs = torch.autograd.grad(reference, (pos, neg_s))
    for a, b in zip(mine, theirs, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("form", ["mask", "coordinates"])
def test_bilateral_softmax_loss_matches_autograd_reference(form):
    """BSL's hand-written gradient equals autograd through logsumexp; invalid negatives and a
    pair with none valid are left out of the negative side, given as a mask or as the
    coordinates a shared uniform sampler hands over."""
    from trainer.core.loss import bilateral_softmax_loss

    g = torch.Generator().manual_seed(3)
    pos = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    neg_s = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    invalid = torch.zeros(4, 6, dtype=torch.bool)
    invalid[0, :2] = True
    invalid[3] = True  # no valid negative
    loss = bilateral_softmax_loss(
        pos,
        neg_s,
        Negatives(neg_s.detach().long(), invalid=invalid)
        if form == "mask"
        else Negatives(neg_s.detach().long(), invalid_at=invalid.nonzero(as_tuple=True)),
        temperature=0.1,
        positive_temperature=0.12,
    )
    loss.backward()
    ref_pos, ref_neg = (
        pos.detach().clone().requires_grad_(),
        neg_s.detach().clone().requires_grad_(),
    )
    logits = (ref_neg / 0.1).masked_fill(invalid, float("-inf"))
    count = (~invalid).sum(1).clamp(min=1)
    side = torch.logsumexp(logits, 1) - torch.log(count.double())
    side = torch.where(torch.isfinite(side), side, torch.zeros_like(side))
    ref = (side - ref_pos / 0.12).mean()
    ref.backward()
    assert torch.allclose(loss, ref)
    assert torch.allclose(pos.grad, ref_pos.grad) and torch.allclose(neg_s.grad, ref_neg.grad)
