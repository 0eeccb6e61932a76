"""The published BSL run's optimisation options: the xavier init, user dropout (in the
training loss only) and positives pooled over a user's rows in the batch, each checked
against its definition and its gradient against autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pools.base import Negatives
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.core.fused_step import bsl_shared_step, fusable
from trainer.core.loss import bilateral_softmax_loss
from trainer.core.models import build_model
from trainer.core.presets import build_config
from trainer.data.dataset import PreparedData


def test_xavier_rows_have_glorots_bound_and_norm_and_shards_cut_the_same_table():
    users, items, dim = 3000, 5000, 64
    model = build_model("mf", users, items, dim, seed=0, init="xavier")
    for table, rows in ((model.user_emb.detach(), users), (model.item_emb.detach(), items)):
        bound = math.sqrt(6 / (rows + dim))
        assert float(table.abs().max()) <= bound
        assert float(table.norm(dim=1).mean()) == pytest.approx(
            math.sqrt(2 * dim / (rows + dim)), rel=0.02
        )
    normal = build_model("mf", users, items, dim, seed=0, init_std=0.05)
    assert float(normal.item_emb.std()) == pytest.approx(0.05, rel=0.02)
    shard = np.array([3, 10, 2999])
    cut = build_model("mf", users, items, dim, seed=0, shard=shard, init="xavier")
    assert torch.equal(cut.user_emb, model.user_emb[torch.as_tensor(shard)])
    assert torch.equal(cut.item_emb, model.item_emb)


def _rows(seed: int, batch: int = 40, n: int = 25, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    p, pos_v = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
    neg_v = torch.randn(n, dim, generator=g)
    invalid = torch.rand(batch, n, generator=g) < 0.2
    mask = (torch.rand(batch, dim, generator=g) >= 0.3).float() / 0.7
    weight = torch.rand(batch, generator=g) + 0.5
    return p, pos_v, neg_v, invalid, mask, weight


@pytest.mark.parametrize("score", ["cosine", "dot"])
def test_the_fused_steps_dropout_gradient_is_autograds(score):
    p, pos_v, neg_v, invalid, mask, weight = _rows(0)
    model = build_model("mf", 2, 2, p.shape[1], seed=0, score=score)
    leaves = [t.clone().requires_grad_() for t in (p, pos_v, neg_v)]
    pos_s, neg_s = model.score_vectors(leaves[0] * mask, leaves[1], leaves[2])
    negatives = Negatives(neg_v, invalid=invalid, pos_weight=weight)
    loss = bilateral_softmax_loss(pos_s, neg_s, negatives, 0.08, 0.0976)
    loss.backward()
    out = bsl_shared_step(
        p, pos_v, neg_v, (~invalid).float(), weight, mask, 0.08, 0.0976, score == "cosine", 0.0
    )
    assert float(out[0]) == pytest.approx(float(loss), rel=1e-5)
    for mine, leaf in zip(out[1:], leaves, strict=True):
        assert torch.allclose(mine, leaf.grad, rtol=1e-4, atol=1e-7)


def _pooled_by_hand(pos_s, neg_s, groups, t, t_pos):
    """BSL's `multi` mode as written: −log mean exp(r⁺/T) over the user's rows, ×T/T⁺."""
    terms = []
    for a in range(pos_s.shape[0]):
        same = groups == groups[a]
        pos_side = torch.log(torch.exp(pos_s[same] / t).mean()) * (t / t_pos)
        neg_side = torch.log(torch.exp(neg_s[a] / t).mean())
        terms.append(neg_side - pos_side)
    return torch.stack(terms).mean()


def test_pooled_positives_are_bsls_multi_mode_and_a_lone_row_is_its_own():
    g = torch.Generator().manual_seed(1)
    pos_s, neg_s = torch.rand(12, generator=g) * 2 - 1, torch.rand(12, 9, generator=g) * 2 - 1
    groups = torch.tensor([0, 1, 0, 2, 3, 1, 0, 4, 5, 6, 7, 8])
    leaves = [pos_s.clone().requires_grad_(), neg_s.clone().requires_grad_()]
    loss = bilateral_softmax_loss(*leaves, Negatives(neg_s, pos_group=groups), 0.1, 0.122)
    loss.backward()
    by_hand = [pos_s.clone().requires_grad_(), neg_s.clone().requires_grad_()]
    expected = _pooled_by_hand(*by_hand, groups, 0.1, 0.122)
    expected.backward()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    for mine, theirs in zip(leaves, by_hand, strict=True):
        assert torch.allclose(mine.grad, theirs.grad, rtol=1e-4, atol=1e-7)
    lone = torch.arange(12)  # every row its own user: the per-pair loss
    pooled = bilateral_softmax_loss(pos_s, neg_s, Negatives(neg_s, pos_group=lone), 0.1, 0.122)
    plain = bilateral_softmax_loss(pos_s, neg_s, Negatives(neg_s), 0.1, 0.122)
    assert float(pooled) == pytest.approx(float(plain), rel=1e-6)


def _engine(data, **given):
    base = {"dim": 8, "batch_size": 256, "epochs": 2, "sampler": {"num_negatives": 50}}
    return Engine(build_config("recommended", {**base, **given}), data)


def test_dropout_and_pooling_change_training_only(tiny_data):
    """Each option trains another model than the default, the same one twice from one seed;
    validation of a model trained with dropout ranks with the whole user vector."""
    data = PreparedData.load(tiny_data)
    plain = _engine(data).train_epoch()["loss"]
    for given in ({"user_dropout": 0.3}, {"positive_pooling": "user"}, {"init": "xavier"}):
        first, again = _engine(data, **given), _engine(data, **given)
        loss = first.train_epoch()["loss"]
        assert loss == again.train_epoch()["loss"] and abs(loss - plain) > 1e-4, given
    engine = _engine(data, user_dropout=0.5)
    engine.train_epoch()
    assert engine.evaluate("valid") == engine.evaluate("valid")
    queries = engine.model.query(torch.arange(5))
    assert torch.equal(queries, engine.model.query(torch.arange(5)))


def test_the_options_are_checked_where_the_config_is_made():
    with pytest.raises(ValidationError, match="positive_pooling is not read by loss='bpr'"):
        TrainConfig(preset="paper", positive_pooling="user")
    with pytest.raises(ValidationError, match="user_dropout"):
        TrainConfig(user_dropout=1.0)
    with pytest.raises(ValidationError, match="init"):
        TrainConfig(init="kaiming")
    assert fusable(TrainConfig(user_dropout=0.1, init="xavier"))
    assert not fusable(TrainConfig(positive_pooling="user"))  # pools on the eager step
