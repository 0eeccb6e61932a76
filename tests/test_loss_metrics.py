"""Loss weights against hand computation; metrics against a brute-force implementation."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FixedScores

from pools import InteractionIndex, Negatives
from trainer.core.evaluate import evaluate
from trainer.core.loss import negative_weights, pairwise_loss


def _softplus(x):
    return math.log1p(math.exp(x))


@pytest.mark.parametrize("weighting", ["paper", "reference"])
def test_eq1_weights_by_hand(weighting):
    r_pos = 1.0
    r_neg = [0.5, -1.0, 2.0]
    log_w = [math.log(0.5), math.log(0.25), math.log(0.25)]
    sign = -1.0 if weighting == "paper" else 1.0
    logits = [r + sign * lw for r, lw in zip(r_neg, log_w)]
    z = sum(math.exp(v) for v in logits)
    expected_w = [math.exp(v) / z for v in logits]
    expected = sum(w * _softplus(r - r_pos) for w, r in zip(expected_w, r_neg))

    offset = torch.tensor([[sign * lw for lw in log_w]])
    neg = Negatives(torch.zeros(1, 3, dtype=torch.long), logit_offset=offset)
    neg_s = torch.tensor([r_neg], requires_grad=True)
    pos_s = torch.tensor([r_pos], requires_grad=True)
    weights = negative_weights(neg_s, neg)
    assert torch.allclose(weights, torch.tensor([expected_w]), atol=1e-6)
    loss = pairwise_loss(pos_s, neg_s, neg)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()  # weights are constants: d loss / d r_neg_j = ŵ_j · σ(r_j − r_pos)
    sig = [1 / (1 + math.exp(-(r - r_pos))) for r in r_neg]
    assert torch.allclose(
        neg_s.grad, torch.tensor([[w * s for w, s in zip(expected_w, sig)]]), atol=1e-6
    )


def test_unweighted_and_rank_weighted_loss():
    neg_s = torch.tensor([[0.0, 1.0], [2.0, -2.0]])
    pos_s = torch.tensor([0.5, 0.0])
    per_pair = [(_softplus(-0.5) + _softplus(0.5)) / 2, (_softplus(2.0) + _softplus(-2.0)) / 2]
    plain = pairwise_loss(pos_s, neg_s, Negatives(torch.zeros(2, 2, dtype=torch.long)))
    assert plain.item() == pytest.approx(sum(per_pair) / 2, rel=1e-6)
    weighted = pairwise_loss(
        pos_s,
        neg_s,
        Negatives(torch.zeros(2, 2, dtype=torch.long), pos_weight=torch.tensor([3.0, 0.5])),
    )
    assert weighted.item() == pytest.approx((3 * per_pair[0] + 0.5 * per_pair[1]) / 2, rel=1e-6)


def _brute_force(scores, train, test, k):
    """Per-user loops, straight from the definitions."""
    ndcgs, recalls = [], []
    for u in range(scores.shape[0]):
        rel = set(test.get(u, []))
        if not rel:
            continue
        ranked = sorted(
            (i for i in range(scores.shape[1]) if i not in train.get(u, set())),
            key=lambda i: (-float(scores[u, i]), i),
        )[:k]
        dcg = sum(1 / math.log2(pos + 2) for pos, i in enumerate(ranked) if i in rel)
        idcg = sum(1 / math.log2(pos + 2) for pos in range(min(k, len(rel))))
        ndcgs.append(dcg / idcg)
        recalls.append(sum(i in rel for i in ranked) / len(rel))
    return sum(ndcgs) / len(ndcgs), sum(recalls) / len(recalls)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n_users, n_items = 30, 60
    scores = torch.randn(n_users, n_items, generator=g)
    train, test = {}, {}
    tu, ti, su, si = [], [], [], []
    for u in range(n_users):
        perm = torch.randperm(n_items, generator=g).tolist()
        n_train = int(torch.randint(0, 20, (1,), generator=g))
        n_test = int(torch.randint(0, 8, (1,), generator=g))  # often fewer than k; some zero
        train[u] = set(perm[:n_train])
        test[u] = perm[n_train : n_train + n_test]
        tu += [u] * n_train
        ti += perm[:n_train]
        su += [u] * n_test
        si += test[u]
    train_idx = InteractionIndex(torch.tensor(tu), torch.tensor(ti), n_users, n_items)
    test_idx = InteractionIndex(torch.tensor(su), torch.tensor(si), n_users, n_items)
    got = evaluate(FixedScores(scores), test_idx, [train_idx], ks=(5, 10, 50))
    for k in (5, 10, 50):
        ndcg, recall = _brute_force(scores, train, test, k)
        assert got[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-9)
        assert got[f"recall@{k}"] == pytest.approx(recall, abs=1e-9)


def test_perfect_model_scores_one():
    n_users, n_items = 4, 10
    test_items = torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]])
    scores = torch.zeros(n_users, n_items)
    scores[torch.arange(4)[:, None], test_items] = 1.0
    test = InteractionIndex(torch.arange(4).repeat_interleave(2), test_items.reshape(-1), 4, 10)
    empty = InteractionIndex(
        torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 4, 10
    )
    got = evaluate(FixedScores(scores), test, [empty], ks=(2,))
    assert got["ndcg@2"] == pytest.approx(1.0) and got["recall@2"] == pytest.approx(1.0)
