"""The remaining Table 2 baselines, each on a small case with a known answer."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FixedScores
from test_samplers import FactorScores, _positives

from pools import InteractionIndex, build_sampler, sampler_config
from pools.irgan import reinforce_logit_grad
from pools.rank import harmonic_table


def _empty(users, items):
    return InteractionIndex(
        torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), users, items
    )


def test_warp_rank_and_weight():
    n_items, reps = 101, 3000
    table = torch.arange(n_items, dtype=torch.float).expand(1, n_items)  # item i scores i
    sampler = build_sampler(
        sampler_config(name="warp", warp_max_trials=50, warp_margin=0.0, rank_weight_norm="none"),
        _empty(1, n_items),
        torch.ones(n_items),
    )
    g = torch.Generator().manual_seed(0)
    users = torch.zeros(reps, dtype=torch.long)

    def draw(pos_item):
        return sampler.sample(FixedScores(table), users, torch.full((reps,), pos_item), g)

    top = draw(100)  # never beaten: no violator, weight 0
    assert float(top.pos_weight.abs().max()) == 0.0
    weights = {p: draw(p) for p in (0, 50, 90)}
    for p, neg in weights.items():
        found = neg.pos_weight > 0
        assert (neg.items[found, 0] > p).all()  # each negative is a violator
    mean = {p: float(neg.pos_weight.mean()) for p, neg in weights.items()}
    assert mean[0] > mean[50] > mean[90] > 0  # low-ranked positives weigh more
    # Positive 0: every other item violates, so V = 1 unless item 0 itself was drawn first.
    assert (
        float((weights[0].pos_weight == harmonic_table(n_items)[n_items - 1]).double().mean())
        > 0.95
    )


def test_warp_hinge_is_lightfm_form():
    """LightFM's WARP: weight log(max(1, ⌊(N−1)/V⌋)) on max(0, margin − r_i + r_j)."""
    from pools.base import Negatives
    from trainer.core.loss import pairwise_loss

    n_items, reps = 101, 2000
    table = torch.arange(n_items, dtype=torch.float).expand(1, n_items)  # item i scores i
    cfg = sampler_config(
        name="warp", warp_max_trials=50, warp_margin=0.0, warp_loss="hinge", rank_weight_norm="none"
    )
    sampler = build_sampler(cfg, _empty(1, n_items), torch.ones(n_items))
    g = torch.Generator().manual_seed(0)
    users = torch.zeros(reps, dtype=torch.long)
    neg = sampler.sample(FixedScores(table), users, torch.zeros(reps, dtype=torch.long), g)
    allowed = torch.tensor([math.log(max(1, 100 // v)) for v in range(1, 51)])
    assert bool(torch.isclose(neg.pos_weight[:, None], allowed[None]).any(1).all())
    # Positive 0 is beaten by every item but itself: the first trial nearly always violates.
    assert float((neg.pos_weight == math.log(100)).float().mean()) > 0.95
    assert neg.hinge_margin == 0.0
    pos, negs = torch.tensor([2.0, 2.0]), torch.tensor([[1.5], [0.5]])
    hinge = Negatives(negs.long(), hinge_margin=1.0)  # max(0, 1 − 2 + 1.5), max(0, 1 − 2 + 0.5)
    assert float(pairwise_loss(pos, negs, hinge)) == pytest.approx((0.5 + 0.0) / 2)


def test_aobpr_rank_distribution_and_factor_choice():
    positives = _empty(2, 5000)
    cfg = sampler_config(name="aobpr", aobpr_lambda=50.0, num_negatives=1000)
    sampler = build_sampler(cfg, positives, torch.ones(5000))
    g = torch.Generator().manual_seed(0)
    ranks = sampler.draw_ranks((200_000,), g).double()
    expected = 1 / math.expm1(1 / 50.0)  # mean of p(r) ∝ exp(−r/λ) on [0, ∞)
    assert abs(float(ranks.mean()) - expected) < 0.02 * expected
    model = FactorScores(2, 5000)
    with torch.no_grad():
        model.mf.user_emb.zero_()
        model.mf.user_emb[0, 0] = 1.0  # only factor 0, positive: top of factor 0
        model.mf.user_emb[1, 0] = -1.0  # negative: bottom of factor 0
    sampler.refresh(model.mf, g)
    neg = sampler.sample(model.mf, torch.tensor([0, 1]), torch.zeros(2, dtype=torch.long), g)
    position = torch.empty(5000, dtype=torch.long)
    position[sampler.order[0]] = torch.arange(5000)
    assert float(position[neg.items[0]].double().mean()) < 100  # near the top
    assert float(position[neg.items[1]].double().mean()) > 4900  # near the bottom


@pytest.mark.parametrize(
    "n_items,per_row,rows",
    [
        (37, 1000, 60),  # blocks of one item: the block step alone must be exact
        (405, 1, 300_000),  # blocks of 8 items, the last one partly padding
    ],
)
def test_kernel_draws_follow_the_exact_kernel_probabilities(n_items, per_row, rows):
    model = FactorScores(1, n_items)
    cfg = sampler_config(name="kernel", kernel_alpha=3.0, num_negatives=per_row)
    sampler = build_sampler(cfg, _empty(1, n_items), torch.ones(n_items))
    g = torch.Generator().manual_seed(0)
    sampler.refresh(model.mf, g)
    q = model.mf.query(torch.tensor([0])).detach()
    scores = model.mf.item_emb.detach() @ q[0]
    exact = 3.0 * scores**2 + 1
    exact = exact / exact.sum()
    logp = sampler.log_prob(q, torch.arange(n_items)[None])
    assert torch.allclose(logp.exp()[0], exact, atol=1e-5)
    users = torch.zeros(rows, dtype=torch.long)
    neg = sampler.sample(model.mf, users, users, g)
    assert int(neg.items.max()) < n_items  # padded slots are never drawn
    freq = torch.bincount(neg.items.reshape(-1), minlength=n_items).double() / neg.items.numel()
    tv = 0.5 * float((freq - exact.double()).abs().sum())
    assert freq.numel() == n_items and tv < 0.02
    assert torch.allclose(neg.logit_offset, -logp.expand(rows, -1).gather(1, neg.items), atol=1e-5)


def test_kernel_avoids_positives_by_redrawing_from_the_kernel():
    """Excluding positives conditions the kernel on the non-positives: q(i)/(1 − q(P)), where
    a uniform replacement of drawn positives would move q(P)'s mass onto every item evenly."""
    n_items, rows = 60, 100_000
    model = FactorScores(1, n_items)
    cfg = sampler_config(name="kernel", kernel_alpha=3.0, num_negatives=1)
    probe = build_sampler(cfg, _empty(1, n_items), torch.ones(n_items))
    g = torch.Generator().manual_seed(0)
    probe.refresh(model.mf, g)
    q = model.mf.query(torch.tensor([0])).detach()
    exact = probe.log_prob(q, torch.arange(n_items)[None])[0].exp().double()
    heavy = exact.argsort(descending=True)[:6]  # positives holding a large share of the mass
    assert float(exact[heavy].sum()) > 0.3
    positives = InteractionIndex(torch.zeros(6, dtype=torch.long), heavy, 1, n_items)
    sampler = build_sampler(cfg, positives, torch.ones(n_items))
    sampler.refresh(model.mf, g)
    users = torch.zeros(rows, dtype=torch.long)
    neg = sampler.sample(model.mf, users, users, g)
    assert not bool(positives.contains(users[:, None], neg.items).any())
    freq = torch.bincount(neg.items.reshape(-1), minlength=n_items).double() / rows
    conditional = exact.clone()
    conditional[heavy] = 0
    conditional /= conditional.sum()
    assert 0.5 * float((freq - conditional).abs().sum()) < 0.02
    # Kernel draws report the kernel's log-probability (up to the user's constant).
    logp = probe.log_prob(q.expand(rows, -1), neg.items)
    assert float(torch.isclose(neg.logit_offset, -logp, atol=1e-5).float().mean()) > 0.95


def test_aobpr_redraws_positives_from_its_own_ranking():
    n_items = 2000
    model = FactorScores(1, n_items)
    with torch.no_grad():
        model.mf.user_emb.zero_()
        model.mf.user_emb[0, 0] = 1.0  # only factor 0: the top of its ordering
    cfg = sampler_config(name="aobpr", aobpr_lambda=20.0, num_negatives=1000)
    probe = build_sampler(cfg, _empty(1, n_items), torch.ones(n_items))
    g = torch.Generator().manual_seed(0)
    probe.refresh(model.mf, g)
    top = probe.order[0, :10]  # the ten items AOBPR draws most
    positives = InteractionIndex(torch.zeros(10, dtype=torch.long), top, 1, n_items)
    sampler = build_sampler(cfg, positives, torch.ones(n_items))
    sampler.refresh(model.mf, g)
    neg = sampler.sample(model.mf, torch.tensor([0]), torch.tensor([0]), g)
    assert not bool(positives.contains(torch.tensor([[0]]), neg.items).any())
    position = torch.empty(n_items, dtype=torch.long)
    position[sampler.order[0]] = torch.arange(n_items)
    # Redrawn near the top of the ranking; a uniform replacement would put ~40% of draws
    # (those that hit the ten positives) anywhere, lifting the mean position to ~400.
    assert float(position[neg.items[0]].double().mean()) < 60


def _srns(positives, **options):
    cfg = sampler_config(name="srns", srns_memory=10, srns_tracked=30, srns_history=3, **options)
    return build_sampler(cfg, positives, torch.ones(positives.num_items))


def test_srns_prefers_unstable_scores_after_the_warmup():
    positives = _positives(4, 60, per_user=20, seed=2)
    table = torch.zeros(4, 60)
    model = FixedScores(table)
    pos = positives.items[positives.offsets[0]].view(1)  # a train positive of user 0, score 0

    def pick(warmup):
        g = torch.Generator().manual_seed(0)
        sampler = _srns(
            positives,
            srns_candidates=300,
            srns_alpha=10.0,
            srns_warmup=warmup,
            num_negatives=1,
            temperature=1e-3,
        )
        sampler.refresh(model, g)
        # Slot 3 has a fluctuating history; slot 5 is the hardest right now. Both outscore
        # every other tracked item, so the τ → 0 memory renewal keeps both.
        sampler.history[0] = 0.5
        sampler.history[0, 3] = torch.tensor([0.1, 0.9, 0.5])
        sampler.seen[0] = 3
        table.zero_()
        table[0, sampler.tracked[0, 5]] = 1.0
        table[0, sampler.tracked[0, 3]] = 0.5
        sampler.memory[0] = torch.tensor([3, 5, 0, 1, 2, 4, 6, 7, 8, 9])
        neg = sampler.sample(model, torch.tensor([0]), pos, g)
        return int(neg.items[0, 0]), sampler.tracked[0]

    item, tracked = pick(warmup=0.0)  # α at full weight: the unstable item wins
    assert item == int(tracked[3])
    item, tracked = pick(warmup=1.0)  # first epoch: α is still 0, hardness alone decides
    assert item == int(tracked[5])


def test_srns_memory_leans_to_hard_items_and_tracks_history():
    positives = _positives(4, 60, per_user=20, seed=2)
    table = torch.arange(60, dtype=torch.float).expand(4, 60) / 6  # item j scores j/6
    model = FixedScores(table)
    users = torch.arange(4)
    mask = positives.dense_mask(users)
    pos_mean = (table * mask).sum(1) / mask.sum(1)

    def remembered(temperature):
        g = torch.Generator().manual_seed(0)
        sampler = _srns(positives, temperature=temperature)
        items = []
        for epoch in range(4):
            sampler.refresh(model, g)
            assert not positives.contains(users, sampler.tracked).any()
            # The newest history entry belongs to the item now tracked in that slot.
            expected = torch.sigmoid(table.gather(1, sampler.tracked) - pos_mean[:, None])
            assert torch.allclose(sampler.history[:, :, -1], expected)
            assert int(sampler.seen.max()) == min(epoch + 1, 3) and int(sampler.seen.min()) == 1
            for _ in range(5):
                neg = sampler.sample(model, users.repeat(3), users.repeat(3), g)  # duplicate users
                assert not positives.contains(users.repeat(3), neg.items).any()
                items.append(sampler.tracked[users[:, None], sampler.memory[:4]].float())
        return torch.stack(items).mean(0).mean(1), sampler

    hard, sampler = remembered(1.0)
    flat, _ = remembered(1e4)
    tracked_mean = sampler.tracked.float().mean(1)  # item ids, so higher means harder
    assert (hard > tracked_mean + 10).all()  # softmax(r) keeps the high scorers
    assert ((flat - tracked_mean).abs() < 8).all()  # τ → ∞: the memory is a uniform subset


def test_irgan_written_out_gradient_matches_autograd():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 40, generator=g)
    logits[0, :5] = float("-inf")  # masked positives get no gradient
    items = torch.randint(5, 40, (6, 3), generator=g)
    reward = torch.randn(6, 3, generator=g)
    leaf = logits.clone().requires_grad_()
    (-(torch.log_softmax(leaf, 1).gather(1, items) * reward).mean()).backward()
    manual = reinforce_logit_grad(torch.softmax(logits, 1), items, reward)
    assert torch.allclose(manual, leaf.grad, atol=1e-6)


def test_irgan_generator_learns_what_the_discriminator_finds_hard():
    n_items = 30
    table = torch.zeros(2, n_items)
    table[:, 7] = 8.0  # the recommender scores item 7 far above the rest: the hard negative
    sampler = build_sampler(
        sampler_config(name="irgan", irgan_lr=0.05, num_negatives=64),
        _empty(2, n_items),
        torch.ones(n_items),
    )
    g = torch.Generator().manual_seed(0)
    model = FactorScores(2, n_items)
    sampler.refresh(model, g)
    users = torch.tensor([0, 1])

    def p7():
        with torch.no_grad():
            return float(
                torch.softmax(sampler.gen_users[users] @ sampler.gen_items.T, 1)[:, 7].mean()
            )

    start = p7()
    for _ in range(150):
        sampler.sample(FixedScores(table), users, torch.zeros(2, dtype=torch.long), g)
    assert p7() > 5 * start
