"""AdaSIR-B (pools/sir.py): per-batch importance resampling approaches softmax(r/τ) as |K|
grows, never hands out a positive, and its weights are Eq. (1)'s."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import FixedScores
from pydantic import ValidationError

from pools import InteractionIndex, build_sampler, sampler_config
from pools.base import NegativeSampler
from pools.sir import _RowDraws

N_ITEMS = 1000


def _table():
    return torch.randn(N_ITEMS, generator=torch.Generator().manual_seed(0)) * 1.5


def _draws(k, tau=1.0, positives=None, batches=200, users=64):
    """Item frequencies over many batches of users who share one score row."""
    model = FixedScores(_table().expand(users, N_ITEMS))
    if positives is None:
        positives = InteractionIndex(
            torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), users, N_ITEMS
        )
    sampler = build_sampler(
        sampler_config(name="adasir-b", num_candidates=k, temperature=tau, num_negatives=8),
        positives,
        torch.ones(N_ITEMS),
    )
    g = torch.Generator().manual_seed(1)
    batch = torch.arange(users).repeat(2)  # users repeat in a batch, as they do in training
    drawn = torch.cat(
        [
            sampler.sample(model, batch, torch.zeros_like(batch), g).items.reshape(-1)
            for _ in range(batches)
        ]
    )
    return torch.bincount(drawn, minlength=N_ITEMS).double() / drawn.numel()


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_per_batch_draws_approach_softmax_as_candidates_grow(tau):
    """TV(draw frequencies, softmax(r/τ)) falls with |K| and is near sampling noise at large
    |K| (candidates are drawn with replacement, so |K| = N is not yet every item)."""
    target = torch.softmax(_table().double() / tau, 0)
    tv = [0.5 * float((_draws(k, tau) - target).abs().sum()) for k in (20, 100, 1000, 10000)]
    assert tv == sorted(tv, reverse=True), tv
    assert tv[-1] < 0.05, tv  # 204,800 draws: noise alone is ≈ 0.03
    assert tv[0] > 0.1, tv


def test_positives_are_never_drawn_and_the_rest_follow_softmax():
    """Positives are masked out of the candidates: draws are softmax over the non-positives."""
    users = 64
    per_user = torch.arange(0, N_ITEMS, 7)[:100]  # every user has the same 100 train items
    positives = InteractionIndex(
        torch.arange(users).repeat_interleave(100), per_user.repeat(users), users, N_ITEMS
    )
    freq = _draws(10 * N_ITEMS, positives=positives)
    assert float(freq[per_user].sum()) == 0.0
    logits = _table().double()
    logits[per_user] = float("-inf")
    assert 0.5 * float((freq - torch.softmax(logits, 0)).abs().sum()) < 0.05


def test_weights_are_eq_1s_and_the_proposal_is_k_q_w():
    """The loss's offset is −log w (`paper`) and log Q of a draw is log(|K|/N) + log w."""
    users, k = 16, 50
    model = FixedScores(torch.randn(users, N_ITEMS, generator=torch.Generator().manual_seed(2)))
    empty = InteractionIndex(
        torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), users, N_ITEMS
    )
    sampler = build_sampler(
        sampler_config(name="adasir-b", num_candidates=k), empty, torch.ones(N_ITEMS)
    )
    neg = sampler.sample(
        model,
        torch.arange(users),
        torch.zeros(users, dtype=torch.long),
        torch.Generator().manual_seed(3),
    )
    assert neg.items.shape == (users, 5)
    log_w = -neg.logit_offset
    assert torch.allclose(neg.log_proposal, math.log(k / N_ITEMS) + log_w, atol=1e-5)
    assert (log_w <= 0).all() and (log_w > math.log(1e-12)).all()


def _normaliser_ratio(mode: str) -> float:
    """The mean of (1/n)·Σ e^{r_j}/Q(j) over a pair's kept draws (n = 8), ÷ the sum of e^{r}
    over the non-positives, when each user's train items are the 30 best-scored items (their
    mass P of w is ≈ 0.46)."""
    users, table = 64, _table()
    best = table.topk(30).indices
    positives = InteractionIndex(
        torch.arange(users).repeat_interleave(30), best.repeat(users), users, N_ITEMS
    )
    sampler = build_sampler(
        sampler_config(name="adasir-b", num_candidates=200, num_negatives=8, positive_draws=mode),
        positives,
        torch.ones(N_ITEMS),
    )
    model, g, batch = (
        FixedScores(table.expand(users, N_ITEMS)),
        torch.Generator().manual_seed(1),
        torch.arange(users),
    )
    estimates = []
    for _ in range(100):
        neg = sampler.sample(model, batch, torch.zeros_like(batch), g)
        terms = (table[neg.items].double() - neg.log_proposal.double()).exp()
        if mode == "redraw":
            assert neg.invalid is None and not positives.contains(batch, neg.items).any()
        else:
            assert torch.equal(neg.invalid, positives.contains(batch, neg.items))
            terms = terms.masked_fill(neg.invalid, 0.0)
        estimates.append(terms.sum(dim=1) / neg.items.shape[1])
    truth = float(table.double().exp().sum() - table[best].double().exp().sum())
    return float(torch.cat(estimates).mean()) / truth


def test_masked_positives_give_the_softmax_normaliser_over_the_non_positives():
    """Masked train items: (1/n)·Σ over the kept draws is the unbiased estimate; redrawn ones
    inflate it by 1/(1 − P), P the row's mass of w on train items."""
    assert _normaliser_ratio("mask") == pytest.approx(1.0, abs=0.03)
    assert _normaliser_ratio("redraw") > 1.5


def test_dropped_positives_estimate_what_redrawing_to_the_end_does(monkeypatch):
    """`drop` averages over the kept draws only: the mean of redraw's estimate, 1/(1 − P) times
    the normaliser, with no redraw rounds. The reference redraws until no train item is left
    (60 rounds instead of 3, so no draw falls back to a uniform non-positive)."""
    dropped = _normaliser_ratio("drop")
    redraw = NegativeSampler._redraw_positives
    monkeypatch.setattr(
        NegativeSampler,
        "_redraw_positives",
        lambda self, *a, **kw: redraw(self, *a, rounds=60, **kw),
    )
    redrawn = _normaliser_ratio("redraw")
    assert dropped > 1.5 and dropped == pytest.approx(redrawn, rel=0.08), (dropped, redrawn)


def test_groups_draw_their_own_candidates():
    """Groups of `group_users` users get distinct candidate sets; one group shares one set."""
    users, k = 64, 20
    model = FixedScores(torch.zeros(users, N_ITEMS))
    empty = InteractionIndex(
        torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), users, N_ITEMS
    )

    def distinct_items(group_users):
        sampler = build_sampler(
            sampler_config(
                name="adasir-b", num_candidates=k, num_negatives=50, group_users=group_users
            ),
            empty,
            torch.ones(N_ITEMS),
        )
        neg = sampler.sample(
            model,
            torch.arange(users),
            torch.zeros(users, dtype=torch.long),
            torch.Generator().manual_seed(4),
        )
        return neg.items.unique().numel()

    assert distinct_items(users) <= k
    assert distinct_items(8) > 4 * k  # 8 groups of 20 candidates, nearly all drawn


def test_inverse_cdf_rows_follow_their_weights_and_skip_zeros():
    probs = torch.tensor([[0.0, 0.5, 0.5, 0.0], [0.7, 0.0, 0.1, 0.2]])
    row = torch.tensor([0, 1, 1, 0]).repeat(5000)
    slot = _RowDraws(probs).draw(row, 3, torch.Generator().manual_seed(0))
    for r in (0, 1):
        counts = torch.bincount(slot[row == r].reshape(-1), minlength=4).double()
        freq = counts / counts.sum()
        assert torch.allclose(freq, probs[r].double(), atol=0.01), (r, freq)
        assert (counts[probs[r] == 0] == 0).all()


def test_one_level_row_draws_follow_unnormalised_weights_and_skip_zeros():
    """pools.draws.draw_rows (AdaSIR's pool refresh): each row's draws follow its weights,
    whatever their sum; zero weights, leading and trailing, are never drawn."""
    from pools.draws import draw_rows

    weights = torch.tensor([[0.0, 2.0, 6.0, 0.0], [0.0, 0.0, 0.0, 3.0], [0.7, 0.0, 0.1, 0.2]])
    slot = draw_rows(weights, 40000, torch.Generator().manual_seed(0))
    assert slot.shape == (3, 40000)
    for r in range(3):
        counts = torch.bincount(slot[r], minlength=4).double()
        want = (weights[r] / weights[r].sum()).double()
        assert torch.allclose(counts / counts.sum(), want, atol=0.01), (r, counts)
        assert (counts[weights[r] == 0] == 0).all()


def test_two_level_draws_follow_wide_rows_across_blocks():
    """Rows wider than a block (101 columns: blocks of 32, the last one padded), unnormalised,
    with zero weights and a whole zero block: block then column reproduces the row's weights."""
    g = torch.Generator().manual_seed(1)
    weights = torch.rand(3, 101, generator=g) * 5
    weights[:, ::7] = 0.0
    weights[1, 32:64] = 0.0  # a block with no mass
    weights[2] = 0.0
    weights[2, 100] = 2.0  # all mass in the padded last block
    row = torch.arange(3).repeat(20000)
    slot = _RowDraws(weights).draw(row, 5, g)
    for r in range(3):
        counts = torch.bincount(slot[row == r].reshape(-1), minlength=101).double()
        freq, want = counts / counts.sum(), (weights[r] / weights[r].sum()).double()
        assert (freq - want).abs().sum() / 2 < 0.02, (r, (freq - want).abs().sum() / 2)
        assert (counts[weights[r] == 0] == 0).all()


def test_ess_target_steers_tau_to_the_wanted_selectivity():
    """With `ess_target`, τ moves until the ESS of w over the candidates is that fraction of
    |K|: a sharper target ends at a lower τ, from the same start."""
    users = 64
    model = FixedScores(_table().expand(users, N_ITEMS) * 3)
    empty = InteractionIndex(
        torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), users, N_ITEMS
    )
    batch = torch.arange(users)
    reached = {}
    for target in (0.05, 0.6):
        sampler = build_sampler(
            sampler_config(name="adasir-b", ess_target=target, ess_rate=2.0),
            empty,
            torch.ones(N_ITEMS),
        )
        assert not sampler.capabilities.pure_sample
        g = torch.Generator().manual_seed(5)
        for _ in range(300):
            sampler.sample(model, batch, torch.zeros_like(batch), g)
        assert abs(sampler.last_ess - target) < 0.02 + 0.2 * target, (target, sampler.last_ess)
        reached[target] = sampler.tau
    assert reached[0.05] < reached[0.6]


@pytest.mark.parametrize(
    "bad, says",
    [
        ({"ess_target": 1.5}, "ess_target"),
        ({"group_users": 0}, "group_users"),
        ({"num_candidates": 0}, "num_candidates"),
        ({"pool_size": 40}, "has none of these options"),
        ({"positive_draws": "mask", "exclude_positives": False}, "drop one of the two"),
        ({"positive_draws": "drop", "exclude_positives": False}, "drop one of the two"),
        ({"positive_draws": "skip"}, "positive_draws"),
    ],
)
def test_impossible_options_are_refused_with_the_field_named(bad, says):
    with pytest.raises(ValidationError, match=says):
        sampler_config(name="adasir-b", **bad)
