"""One contract for every sampler, plus the statistics the paper promises (Theorem 3.1, Eq. 2)."""

from __future__ import annotations

import pytest
import torch
from conftest import FixedScores

from pools import SAMPLER_NAMES, InteractionIndex, build_sampler, estimate_rank, sampler_config
from pools.rank import harmonic_table
from pools.registry import capabilities_of, options_of


def config_for(name, **wanted):
    """`name`'s config with the options of `wanted` its options class declares; n only where
    the sampler does not fix its own negatives per pair (WARP takes one)."""
    fields = options_of(name).model_fields
    if capabilities_of(name).negatives_per_pair:
        wanted.pop("num_negatives", None)
    return sampler_config(name=name, **{k: v for k, v in wanted.items() if k in fields})


def _positives(num_users, num_items, per_user, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.stack(
        [torch.randperm(num_items, generator=g)[:per_user] for _ in range(num_users)]
    )
    users = torch.arange(num_users).repeat_interleave(per_user)
    return InteractionIndex(users, items.reshape(-1), num_users, num_items)


class FactorScores(FixedScores):
    """A real MF model that also exposes its table of scores (some samplers need factors)."""

    def __init__(self, num_users, num_items, seed=1):
        from trainer.core.models import build_model

        self.mf = build_model("mf", num_users, num_items, 8, seed)
        with torch.no_grad():
            self.mf.user_emb.mul_(10)
            self.mf.item_emb.mul_(5)
        self.query, self.item_emb = self.mf.query, self.mf.item_emb
        super().__init__((self.mf.user_emb @ self.mf.item_emb.T).detach())


@pytest.fixture(scope="module")
def setup():
    num_users, num_items = 50, 120
    positives = _positives(num_users, num_items, per_user=30)
    model = FactorScores(num_users, num_items)
    counts = torch.bincount(positives.items, minlength=num_items)
    return positives, model, counts


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_sampler_contract(name, setup):
    """Shapes, ranges, positives avoided, weights well-formed, same seed ⇒ same draws."""
    positives, model, counts = setup
    cfg = config_for(name, num_negatives=7, num_candidates=40, pool_size=30)
    users = torch.randint(
        0, positives.num_users, (256,), generator=torch.Generator().manual_seed(2)
    )
    pos = positives.items[positives.offsets[users]]  # each user's first train item

    def draw(seed):
        sampler = build_sampler(cfg, positives, counts)
        g = torch.Generator().manual_seed(seed)
        for _ in range(2):  # two refreshes: exercises pool reuse
            sampler.refresh(model, g)
        return sampler.sample(model, users, pos, g)

    neg = draw(3)
    caps = build_sampler(cfg, positives, counts).capabilities  # declared, not looked up by name
    from pools.registry import capabilities_of

    assert capabilities_of(name) == caps  # what the class declares is what an instance has
    n = caps.negatives_per_pair or 7
    assert neg.items.shape == (256, n) and neg.items.dtype == torch.long
    assert int(neg.items.min()) >= 0 and int(neg.items.max()) < positives.num_items
    acting = positives.contains(users, neg.items)  # a train item the loss would use as negative
    invalid = neg.invalid_mask(users.numel())
    if invalid is not None:
        acting &= ~invalid
    assert not acting.any(), f"{name} returned a train positive"
    if neg.logit_offset is not None:
        assert neg.logit_offset.shape == (256, n) and torch.isfinite(neg.logit_offset).all()
    if neg.log_proposal is not None:
        assert neg.log_proposal.shape == (256, n) and (neg.log_proposal <= 1e-6).all()
    if caps.weights_positives:
        assert neg.pos_weight.shape == (256,) and (neg.pos_weight >= 0).all()
        positive = neg.pos_weight[neg.pos_weight > 0]
        assert torch.allclose(positive.mean(), torch.tensor(1.0), atol=1e-5)  # batch-mean norm
        if caps.negatives_per_pair is None:  # no pair goes without negatives: all weigh > 0
            assert (neg.pos_weight > 0).all()
    else:
        assert neg.pos_weight is None
    assert torch.equal(draw(3).items, neg.items)
    assert not torch.equal(draw(4).items, neg.items)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_keep_positives_option_allows_them(name, setup):
    from pools.registry import capabilities_of

    positives, model, counts = setup
    if not capabilities_of(name).can_keep_positives:  # refused, not silently ignored
        with pytest.raises(ValueError, match="not supported"):
            sampler_config(name=name, exclude_positives=False)
        return
    cfg = config_for(name, exclude_positives=False, num_negatives=50)
    sampler = build_sampler(cfg, positives, counts)
    g = torch.Generator().manual_seed(0)
    sampler.refresh(model, g)
    users = torch.arange(positives.num_users)
    neg = sampler.sample(model, users, positives.items[positives.offsets[users]], g)
    assert positives.contains(users, neg.items).any()  # 25% of items are positives here


@pytest.mark.parametrize("path", ["complement", "bitset", "search"])
def test_complement_sampling_is_uniform_over_non_positives(path):
    """Uniform negatives avoid the user's train items, uniformly over the rest, whether drawn
    from the complement or drawn from all items with the positives replaced (the CPU path
    where membership is a bitset lookup; `search`: no bitset, so the complement)."""
    users = torch.tensor([0, 1, 2])
    positives = _positives(3, 20, per_user=15, seed=5)
    g = torch.Generator().manual_seed(0)
    if path == "complement":
        draws = positives.sample_complement(users, 20000, g)
    else:
        if path == "search":
            positives._bits = None
        sampler = build_sampler(config_for("uniform", num_negatives=20000), positives, None)
        assert sampler._rejects_cheaply() == (path == "bitset")
        draws = sampler.sample(None, users, torch.zeros(3, dtype=torch.long), g).items
    for row, u in enumerate(users):
        allowed = set(range(20)) - set(
            positives.items[positives.offsets[u] : positives.offsets[u + 1]].tolist()
        )
        counts = torch.bincount(draws[row], minlength=20).float()
        assert set(torch.nonzero(counts).squeeze(1).tolist()) == allowed
        freq = counts[list(allowed)] / 20000
        assert (freq - 1 / len(allowed)).abs().max() < 0.02


def test_membership_paths_agree():
    """The bitset and the sorted-key search answer the same."""
    positives = _positives(40, 300, per_user=25, seed=3)
    keys_only = InteractionIndex(
        positives.keys // 300, positives.items, 40, 300, bitset_budget_bytes=0
    )
    users = torch.randint(0, 40, (500,))
    items = torch.randint(0, 300, (500, 9))
    assert torch.equal(positives.contains(users, items), keys_only.contains(users, items))
    assert positives.contains(users, items).any()


def _pool_distribution(name, num_candidates, table, users=2000, reuse=False, **options):
    """Empirical item frequencies over the pools of many users who share one score row."""
    n_items = table.numel()
    model = FixedScores(table.expand(users, n_items))
    empty = InteractionIndex(
        torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), users, n_items
    )
    counts = torch.randint(1, 100, (n_items,), generator=torch.Generator().manual_seed(9))
    cfg = config_for(
        name, num_candidates=num_candidates, pool_size=200, reuse_pool=reuse, **options
    )
    sampler = build_sampler(cfg, empty, counts)
    g = torch.Generator().manual_seed(11)
    if name == "uniform":
        items = sampler.sample(model, torch.arange(users), torch.zeros(users, dtype=torch.long), g)
        drawn = items.items.reshape(-1)
    else:
        sampler.refresh(model, g)
        drawn = sampler.pool_items.reshape(-1)
        if options.get("pool_distinct"):
            assert all(len(set(row.tolist())) == row.numel() for row in sampler.pool_items)
    return torch.bincount(drawn, minlength=n_items).double() / drawn.numel()


# Shared candidates, one chunk per user: each user's candidate set is its own draw, so the
# per-user theorem is what the pooled frequencies measure (a larger chunk shares the draw).
# Shared uniform candidates are distinct items: at |K| = N they are every item, and the pool
# is exact softmax draws, so their grid stops at N = 1000.
SHARED = {"shared_candidates": True, "refresh_chunk_users": 1}


@pytest.mark.parametrize(
    "name,options,grid",
    [
        ("adasir-u", {}, (20, 100, 1000, 5000)),
        ("adasir-p", {}, (20, 100, 1000, 5000)),
        ("adasir-u", SHARED, (20, 100, 400, 1000)),
        ("adasir-p", SHARED, (20, 100, 1000, 5000)),
    ],
)
def test_theorem_3_1_pool_approaches_softmax(name, options, grid):
    """TV(pool frequencies, softmax) falls as |K| grows and is small at large |K|."""
    table = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 1.5
    target = torch.softmax(table.double(), 0)
    tv = [
        0.5 * float((_pool_distribution(name, k, table, **options) - target).abs().sum())
        for k in grid
    ]
    assert tv == sorted(tv, reverse=True), dict(zip(grid, tv))
    assert tv[-1] < 0.06, tv  # sampling noise alone is ≈ 0.02 with 400k entries
    uniform_tv = 0.5 * float((_pool_distribution("uniform", 1, table) - target).abs().sum())
    assert uniform_tv > 0.4, uniform_tv


def test_pool_reuse_keeps_softmax():
    """Corollary 3.3: merging an old and a new pool of the same model stays near softmax."""
    table = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 1.5
    target = torch.softmax(table.double(), 0)
    n_items, users = 1000, 2000
    model = FixedScores(table.expand(users, n_items))
    empty = InteractionIndex(
        torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), users, n_items
    )
    sampler = build_sampler(
        sampler_config(name="adasir-u", num_candidates=5000), empty, torch.ones(n_items)
    )
    g = torch.Generator().manual_seed(1)
    sampler.refresh(model, g)
    first = sampler.pool_items.clone()
    sampler.refresh(model, g)
    assert (sampler.pool_items != first).any()
    freq = torch.bincount(sampler.pool_items.reshape(-1), minlength=n_items).double()
    assert 0.5 * float((freq / freq.sum() - target).abs().sum()) < 0.06


def test_pool_merge_keeps_each_entry_with_probability_half_in_every_slot():
    """Step 4: each of old ∪ new survives with probability 1/2, R entries a pool, and an old
    entry's survival does not depend on its slot (else low slots would hold stale entries
    for ever)."""
    users, r = 4000, 50
    empty = InteractionIndex(
        torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), users, 2 * r
    )
    sampler = build_sampler(
        sampler_config(name="adasir-u", num_candidates=100, pool_size=r), empty, torch.ones(2 * r)
    )
    old = torch.arange(r, dtype=torch.int32).expand(users, r)
    new = torch.arange(r, 2 * r).expand(users, r)
    sampler.pool_items = old.clone()
    sampler.pool_log_w = torch.zeros(users, r)
    sampler.pool_score = old.float().clone()
    zeros = torch.zeros(users, r)
    sampler._merge_(slice(0, users), new, zeros, new.float(), torch.Generator().manual_seed(3))
    kept_old = sampler.pool_items < r
    assert torch.equal(sampler.pool_score, sampler.pool_items.float())  # fields move together
    per_slot = kept_old.double().mean(dim=0)  # [R]: each slot's survival over 4,000 pools
    assert abs(float(per_slot.mean()) - 0.5) < 0.01
    assert float((per_slot - 0.5).abs().max()) < 0.04  # ±0.0079 one sd: 5 sd
    # A kept old entry stays in its slot; a replaced one takes the new pool's entry there.
    slots = torch.arange(r).expand(users, r)
    assert torch.equal(sampler.pool_items.long() % r, slots)


def test_row_scratch_scores_equal_fresh_gathers():
    """Scores through the reused buffer equal the model's own, for every model and score;
    a larger gather grows the buffer, a smaller one reuses it."""
    from pools.scratch import RowScratch
    from trainer.core.models import build_model

    g = torch.Generator().manual_seed(0)
    scratch = RowScratch()
    for name, score in (("mf", "dot"), ("mf", "cosine"), ("gmf", "dot")):
        model = build_model(name, 30, 400, 8, seed=1, score=score)
        with torch.no_grad():
            for k in (20, 7, 24):
                users = torch.randint(0, 30, (16,), generator=g)
                items = torch.randint(0, 400, (16, k), generator=g)
                assert torch.allclose(
                    model.score(users, items, scratch=scratch), model.score(users, items)
                )
    assert scratch._buffer.numel() == 16 * 24 * 8


def test_popularity_proposal_draws_its_distribution():
    """The alias table draws Q(i) ∝ log(1 + f_i): frequencies within sampling noise of Q,
    items with no train count never drawn, log_prob the log of Q."""
    from pools.proposals import PopularityProposal

    counts = torch.randint(0, 50, (300,), generator=torch.Generator().manual_seed(4))
    counts[:7] = 0
    counts[7] = 5000  # one heavy item: its column and others' aliases carry its mass
    proposal = PopularityProposal(counts)
    target = torch.log1p(counts.double()) / torch.log1p(counts.double()).sum()
    draws = proposal.draw((1000, 600), torch.Generator().manual_seed(5))
    assert draws.shape == (1000, 600) and draws.dtype == torch.long
    freq = torch.bincount(draws.reshape(-1), minlength=300).double() / draws.numel()
    assert float(freq[:7].sum()) == 0.0
    sd = (target * (1 - target) / draws.numel()).sqrt()
    assert float(((freq - target).abs() / sd.clamp(min=1e-12))[7:].max()) < 5.0
    assert torch.allclose(
        proposal.log_prob(torch.arange(7, 300)).double(), target[7:].log(), atol=1e-5
    )


def test_rank_estimate_is_unbiased_within_the_floor():
    """Eq. (2): averaged over candidate draws, the estimate is the true rank within (N−1)/|K|."""
    n_items, k, trials = 1000, 200, 4000
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(n_items, generator=g)
    order = scores.argsort(descending=True)
    for true_rank in (1, 10, 250, 700, 1000):
        pos = scores[order[true_rank - 1]]
        cand = torch.randint(0, n_items, (trials, k), generator=g)
        est = estimate_rank(pos.expand(trials), scores[cand], n_items).double()
        stderr = float(est.std()) / trials**0.5
        assert abs(float(est.mean()) - true_rank) <= (n_items - 1) / k + 4 * stderr, true_rank


def test_rank_counts_candidates_above_not_below():
    cand = torch.tensor([[5.0, 4.0, 3.0, 2.0]])
    low = estimate_rank(torch.tensor([1.0]), cand, 101)  # every candidate above → bottom
    high = estimate_rank(torch.tensor([9.0]), cand, 101)  # none above → top
    assert int(low) == 101 and int(high) == 1
    table = harmonic_table(101)
    assert table[int(low)] > table[int(high)]  # low-ranked positives weigh more
    assert torch.isclose(table[3], torch.tensor(1 + 1 / 2 + 1 / 3))


def test_rank_weight_grows_for_badly_ranked_positives(setup):
    positives, model, counts = setup
    sampler = build_sampler(sampler_config(name="adasir-w", num_candidates=100), positives, counts)
    g = torch.Generator().manual_seed(0)
    sampler.refresh(model, g)
    users = torch.zeros(2, dtype=torch.long)
    row = model.table[0]
    best, worst = int(row.argmax()), int(row.argmin())
    neg = sampler.sample(model, users, torch.tensor([best, worst]), g)
    assert neg.pos_weight[1] > neg.pos_weight[0]


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_stateful_samplers_refuse_to_sample_before_a_refresh(name, setup):
    positives, model, counts = setup
    sampler = build_sampler(sampler_config(name=name), positives, counts)
    users = torch.arange(4)
    pos = positives.items[positives.offsets[users]]
    if not sampler.capabilities.stateful:
        assert sampler.sample(model, users, pos, torch.Generator()).items.shape[0] == 4
        return
    with pytest.raises(RuntimeError, match="refresh"):
        sampler.sample(model, users, pos, torch.Generator())


def test_every_named_sampler_is_registered_and_shared_negatives_follow_capabilities():
    from pools.registry import capabilities_of, registered

    assert sorted(registered()) == sorted(SAMPLER_NAMES)
    for name in SAMPLER_NAMES:
        if capabilities_of(name).shares_negatives:
            sampler_config(name=name, shared_negatives=True)
        else:
            with pytest.raises(ValueError, match="shared_negatives"):
                sampler_config(name=name, shared_negatives=True)


def test_unknown_sampler_name_is_rejected():
    with pytest.raises(ValueError):
        sampler_config(name="nope")
    with pytest.raises(ValueError):
        sampler_config(name="uniform", temperature=0)
    with pytest.raises(ValueError):
        sampler_config(name="uniform", unknown_option=1)
    with pytest.raises(ValueError, match="srns_tracked"):
        sampler_config(name="srns", srns_tracked=0)


def test_distinct_pools_never_repeat_and_lean_to_high_scores():
    """pool_distinct: |R| distinct entries per user, drawn ∝ w without replacement, so the
    best-scored candidates are in the pool more often than the worst."""
    table = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 1.5
    freq = _pool_distribution(
        "adasir-u",
        800,
        table,
        users=500,
        pool_distinct=True,
        shared_candidates=True,
        refresh_chunk_users=1,
    )
    top, bottom = table.argsort(descending=True)[:100], table.argsort()[:100]
    assert float(freq[top].sum()) > 5 * float(freq[bottom].sum())
    with pytest.raises(ValueError, match="needs \\|R\\| < \\|K\\|"):
        sampler_config(name="adasir-u", num_candidates=200, pool_size=200, pool_distinct=True)


def test_pools_refresh_as_often_as_asked(tiny_data):
    from trainer.core.config import TrainConfig
    from trainer.core.engine import Engine
    from trainer.data.dataset import PreparedData

    data = PreparedData.load(tiny_data)
    engine = Engine(
        TrainConfig(
            preset="paper", batch_size=256, sampler={"name": "adasir-u", "refreshes_per_epoch": 4}
        ),
        data,
    )
    calls = []
    real = engine.sampler.refresh
    engine.sampler.refresh = lambda m, g: calls.append(1) or real(m, g)
    engine.train_epoch()
    assert engine.steps_per_epoch >= 8 and len(calls) == 4  # before step 0, then 3 more


def test_per_user_state_holds_item_ids_as_int32(setup):
    positives, model, counts = setup
    U, R, K = positives.num_users, 30, 40
    adasir = build_sampler(
        sampler_config(name="adasir-w", num_candidates=K, pool_size=R), positives, counts
    )
    adasir.refresh(model, torch.Generator().manual_seed(0))
    assert adasir.pool_items.dtype == adasir.candidates.dtype == torch.int32
    # ids, log w and scores [U, R] at 4 bytes each, the candidates [U, K] at 4.
    assert adasir.state_size_bytes() == U * R * 12 + U * K * 4
    srns = build_sampler(
        sampler_config(name="srns", srns_tracked=20, srns_memory=5, srns_history=3),
        positives,
        counts,
    )
    srns.refresh(model, torch.Generator().manual_seed(0))
    assert srns.tracked.dtype == srns.memory.dtype == torch.int32
    assert srns.state_size_bytes() == U * 20 * 4 + U * 20 * 3 * 4 + U * 20 + (U + 1) * 5 * 4


def test_shared_uniform_negatives_hand_over_the_invalid_entries_as_coordinates(tiny_data):
    """Shared uniform negatives carry their invalid entries as coordinates (no [B, n] mask):
    exactly the drawn items that are the row's user's train items."""
    from trainer.data.dataset import PreparedData

    data = PreparedData.load(tiny_data)
    positives = data.index("train", torch.device("cpu"))
    counts = torch.as_tensor(data.item_counts())
    cfg = sampler_config(name="uniform", num_negatives=200, shared_negatives=True)
    sampler = build_sampler(cfg, positives, counts)
    users = torch.arange(64)
    neg = sampler.sample(None, users, torch.zeros(64, dtype=torch.long), torch.Generator())
    assert neg.invalid is None and neg.invalid_at is not None
    expected = positives.contains(users, neg.items.expand(64, -1))
    assert expected.any() and torch.equal(neg.invalid_mask(64), expected)
