"""Evaluation at scale: the streamed top-k is the full one; a sampled evaluation is a fixed
sample, the same however users are sharded, and its interval covers the full ranking's mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pools.interactions import InteractionIndex
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.core.evaluate import ci95, eval_sample_size, sample_users, valid_sample_size
from trainer.core.models import build_model
from trainer.core.topk import top_k
from trainer.data.dataset import PreparedData


@pytest.mark.parametrize("score", ["dot", "cosine"])
def test_top_k_over_item_blocks_is_the_full_top_k(score):
    model = build_model("gmf", 40, 1000, 8, seed=0, score=score)
    users = torch.arange(40)
    g = torch.Generator().manual_seed(1)
    seen = InteractionIndex(
        torch.randint(0, 40, (3000,), generator=g),
        torch.randint(0, 1000, (3000,), generator=g),
        40,
        1000,
    )
    full = top_k(model, users, 50, [seen])
    for block in (1000, 333, 64, 7):
        part = top_k(model, users, 50, [seen], item_block=block)
        assert torch.equal(part.indices, full.indices)  # scores differ only by GEMM rounding
        assert torch.allclose(part.values, full.values, atol=1e-6)
    assert not seen.contains(users, full.indices).any()


def test_sample_size_defaults_to_full_ranking_below_the_limit():
    assert eval_sample_size(None, 6034, 3125) == 6034
    assert eval_sample_size(None, 10**6, 10**6) == 10_000
    assert eval_sample_size(0, 10**6, 10**6) == 10**6
    assert eval_sample_size(500, 300, 10) == 300
    assert np.array_equal(sample_users(1000, 50, 3), sample_users(1000, 50, 3))
    assert not np.array_equal(sample_users(1000, 50, 3), sample_users(1000, 50, 4))


def test_a_sample_is_the_same_across_shards_and_its_interval_covers_the_full_mean(tiny_data):
    data = PreparedData.load(tiny_data)
    full = Engine(TrainConfig(preset="paper", epochs=1, lr=0.01, batch_size=512), data)
    full.train_epoch()
    whole, none = full.evaluate_sample("test")
    assert none is None
    cfg = TrainConfig(preset="paper", epochs=1, lr=0.01, batch_size=512, eval_users=200)
    sampled = Engine(cfg, data)
    sampled.model.load_state_dict(full.model.state_dict())
    means, sample = sampled.evaluate_sample("test")
    assert 150 < sample["users"] <= 200 and sample["of"] > sample["users"]
    for name in ("ndcg@50", "recall@20"):
        assert 0 < sample["ci95"][name] < 0.1
        assert abs(means[name] - whole[name]) < 1.5 * sample["ci95"][name]
    # Three shards evaluate the same global sample: their sums add up to the one-process sums.
    users = np.arange(data.num_users)
    totals, count = {}, 0
    for shard in (users[:201], users[201:401], users[401:]):
        part = Engine(cfg, data, shard)
        part.model.load_state_dict(
            {
                k: v[torch.as_tensor(shard)] if k == "user_emb" else v
                for k, v in full.model.state_dict().items()
            }
        )
        sums, n = part.evaluate_sums("test")
        count += n
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + v
    assert count == sample["users"]
    for k, v in totals.items():
        assert v / count == pytest.approx(means[k], abs=1e-9)


def test_interval_of_a_constant_is_zero_and_shrinks_with_the_finite_population():
    assert ci95({"m": 5.0}, {"m": 5.0}, 5, 100)["m"] == 0.0
    wide = ci95({"m": 2.0}, {"m": 2.0}, 4, 10**6)["m"]
    assert ci95({"m": 2.0}, {"m": 2.0}, 4, 4)["m"] == 0.0 < wide


def test_ranking_through_the_reused_score_buffer_equals_the_models_own_scores(tiny_data):
    """A model with serving vectors is ranked through one score buffer reused chunk after
    chunk (the last chunk smaller): the sums are those of ranking with model.score_all."""
    from trainer.core.evaluate import ranking_sums

    engine = Engine(
        TrainConfig(preset="paper", epochs=1, score="cosine"), PreparedData.load(tiny_data)
    )
    engine.train_epoch()
    model = engine.model.eval()

    class OwnScores:  # no serving_vectors: ranked by the model's score_all
        num_items = model.num_items
        score_all, score_shared = model.score_all, model.score_shared

    chunk = 37 * model.num_items  # 37 users a chunk
    mine = ranking_sums(model, engine.valid, [engine.positives], chunk_elements=chunk)
    theirs = ranking_sums(OwnScores(), engine.valid, [engine.positives], chunk_elements=chunk)
    assert mine[1] == theirs[1] and mine[1] % 37 != 0
    assert mine[0] == pytest.approx(theirs[0], abs=1e-9)


def test_validation_samples_users_where_a_full_pass_costs_more_than_the_training_between():
    gowalla = dict(num_users=29_858, num_items=40_981, train_pairs=729_115)
    default_like = TrainConfig(
        preset="paper", eval_every=3, sampler={"name": "uniform", "num_negatives": 1000}
    )
    bpr = TrainConfig(preset="paper", eval_every=5, sampler={"name": "uniform", "num_negatives": 1})
    # Measured shares 0.18 and 0.28 (validation 3.85 s against 3 × 7.0 s and 5 × 2.77 s).
    assert valid_sample_size(default_like, **gowalla) == 29_858  # 1.2e9 < 6.8e9
    assert valid_sample_size(bpr, **gowalla) == 29_858  # 1.2e9 < 4.0e9
    sparse = dict(num_users=400_000, num_items=45_000, train_pairs=1_000_000)
    assert valid_sample_size(bpr, **sparse) == 10_000  # 1.8e10 > 5.5e9: validation dominates
    # Asked for: 0 is eval_users's choice, N a sample of N; never more than the test ranks.
    assert valid_sample_size(bpr.model_copy(update={"valid_users": 0}), **sparse) == 400_000
    assert valid_sample_size(bpr.model_copy(update={"valid_users": 500}), **gowalla) == 500
    capped = bpr.model_copy(update={"valid_users": 20_000, "eval_users": 3_000})
    assert valid_sample_size(capped, **gowalla) == 3_000


def test_a_sampled_validation_ends_with_the_kept_models_full_validation(tiny_data):
    data = PreparedData.load(tiny_data)
    cfg = TrainConfig(
        preset="paper", epochs=2, eval_every=1, lr=0.01, batch_size=512, valid_users=150
    )
    engine = Engine(cfg, data)
    result = engine.fit()
    first, last = result["epochs"]
    assert first["valid_sample"]["users"] <= 150 < first["valid_sample"]["of"]
    assert "valid_full" not in first and last["valid_sample"]["users"] <= 150
    full = Engine(cfg.model_copy(update={"valid_users": 0}), data)
    full.model.load_state_dict(engine.model.state_dict())
    assert last["valid_full"] == full.evaluate("valid")
    assert last["valid_full"] != last["valid"]  # the sample's means are not the full ones
    assert result["test"] == full.evaluate("test")  # the test ranks every user


def test_a_negative_validation_sample_is_refused_naming_the_option():
    with pytest.raises(ValueError, match="valid_users"):
        TrainConfig(preset="paper", valid_users=-1)
