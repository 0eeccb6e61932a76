"""One contract over every registered model and loss, read from what each declares (the
samplers' contract is tests/test_samplers.py). A new model or loss is its registration; these
tests cover it without naming it."""

from __future__ import annotations

import pytest
import torch

from pools import Negatives
from trainer.core.config import TrainConfig
from trainer.core.loss import LOSSES, batch_loss, loss_options
from trainer.core.models import MODELS, build_model


@pytest.mark.parametrize("score", ["dot", "cosine"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_contract(name, score):
    """score, score_shared, score_all, forward and the serving vectors agree; the user and item
    parameters partition the model's; a shard starts from the one-process rows."""
    model = build_model(name, 7, 11, 4, seed=0, score=score)
    users = torch.tensor([0, 3, 6, 3])
    items = torch.randint(0, 11, (4, 5), generator=torch.Generator().manual_seed(1))
    full = model.score_all(users).detach()
    assert full.shape == (4, 11)
    assert torch.allclose(model.score(users, items).detach(), full.gather(1, items), atol=1e-5)
    assert torch.allclose(
        model.score_shared(users, items[0]).detach(), full[:, items[0]], atol=1e-5
    )
    pos_s, neg_s, _ = model(users, items[:, 0], items[:, 1:])
    assert torch.allclose(pos_s.detach(), full.gather(1, items[:, :1]).squeeze(1), atol=1e-5)
    assert torch.allclose(neg_s.detach(), full.gather(1, items[:, 1:]), atol=1e-5)
    queries, vectors = model.serving_vectors()
    assert torch.allclose(queries[users] @ vectors.T, full, atol=1e-5)
    owned = {id(p) for p in model.user_parameters() + model.item_parameters()}
    assert owned == {id(p) for p in model.parameters()}
    shard = build_model(name, 7, 11, 4, seed=0, score=score, shard=[1, 5])
    assert torch.equal(shard.user_emb.detach(), model.user_emb.detach()[[1, 5]])


def _batch(seed=0, batch=6, n=4):
    g = torch.Generator().manual_seed(seed)
    pos = torch.rand(batch, generator=g).mul(2).sub(1).requires_grad_()
    neg = torch.rand(batch, n, generator=g).mul(2).sub(1).requires_grad_()
    return pos, neg, torch.randint(0, 50, (batch, n), generator=g)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_contract(name):
    """A finite scalar with gradients to both score tensors; invalid negatives get none; a pair
    weighted 0 contributes nothing; the sampler's offsets matter exactly when it declares it
    weights negatives by them."""
    cfg = TrainConfig(preset="paper", loss=name, score="cosine")
    pos, neg, items = _batch()
    loss = batch_loss(cfg, pos, neg, Negatives(items), 50)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert pos.grad.abs().sum() > 0 and neg.grad.abs().sum() > 0

    pos, neg, items = _batch()
    invalid = torch.zeros_like(items, dtype=torch.bool)
    invalid[:, 0] = True
    batch_loss(cfg, pos, neg, Negatives(items, invalid=invalid), 50).backward()
    assert float(neg.grad[:, 0].abs().max()) == 0.0

    pos, neg, items = _batch()
    weight = torch.ones(6)
    weight[0] = 0.0
    batch_loss(cfg, pos, neg, Negatives(items, pos_weight=weight), 50).backward()
    assert float(pos.grad[0]) == 0.0 and float(neg.grad[0].abs().max()) == 0.0

    pos, neg, items = _batch()
    offset = torch.randn(items.shape, generator=torch.Generator().manual_seed(3)) * 3
    plain = batch_loss(cfg, pos, neg, Negatives(items), 50).item()
    shifted = batch_loss(cfg, pos, neg, Negatives(items, logit_offset=offset), 50).item()
    assert (abs(plain - shifted) > 1e-4) == LOSSES[name].weights_negatives


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_options_and_weighting_follow_the_declaration(name):
    spec = LOSSES[name]
    reference = {"sampler": {"name": "adasir-u", "weighting": "reference"}}
    if spec.weights_negatives:
        TrainConfig(preset="paper", loss=name, **reference)
    else:
        with pytest.raises(ValueError, match="has its own"):
            TrainConfig(preset="paper", loss=name, **reference)
    for option in sorted(loss_options()):
        changed = {
            "loss_temperature": 0.3,
            "positive_temperature": 0.2,
            "contrastive_margin": 0.1,
            "contrastive_weight": 2.0,
            "positive_pooling": "user",
        }[option]
        if option in spec.options:
            assert (
                getattr(TrainConfig(preset="paper", loss=name, **{option: changed}), option)
                == changed
            )
        else:
            with pytest.raises(ValueError, match=f"{option} is not read by loss='{name}'"):
                TrainConfig(preset="paper", loss=name, **{option: changed})
