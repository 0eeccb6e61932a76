"""The Python API (trainer/api.py): fit from every kind of input, and queries that keep their
promises — seen items, exclusions and allow-lists, the item itself in similar_items, ids in
and out, save/load."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from trainer import Model, TrainConfig, UnknownIds, fit
from trainer.data.dataset import PreparedData


def _frame(seed: int = 0, users: int = 120, items: int = 80, pairs: int = 2400) -> pd.DataFrame:
    """Users who like items of their own block: a signal a few epochs learn."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, pairs)
    i = (u * 2 + rng.integers(0, 12, pairs)) % items
    df = pd.DataFrame({"user": [f"u{x}" for x in u], "item": [f"i{x}" for x in i]})
    return df.drop_duplicates().reset_index(drop=True)


@pytest.fixture(scope="module")
def model() -> Model:
    return fit(_frame(), dim=8, epochs=4, eval_every=2)


def test_fit_takes_a_dataframe_and_keeps_its_ids(model):
    df = _frame()
    assert model.num_users == df.user.nunique() and model.num_items == df.item.nunique()
    assert set(model.user_ids) == set(df.user) and set(model.item_ids) == set(df.item)
    assert model.metrics["epochs"] and model.config["dim"] == 8


def test_fit_takes_a_sparse_matrix_and_a_prepared_directory(tiny_data):
    m = sp.random(40, 30, density=0.3, format="csr", random_state=np.random.default_rng(1))
    from_matrix = fit(m, dim=4, epochs=1)
    assert from_matrix.num_users <= 40 and all(i.isdigit() for i in from_matrix.item_ids)
    from_dir = fit(tiny_data, TrainConfig(preset="paper", dim=4, epochs=1), preset="paper")
    data = PreparedData.load(tiny_data)
    assert (from_dir.num_users, from_dir.num_items) == (data.num_users, data.num_items)
    assert from_dir.config["loss"] == "bpr"  # the paper preset, not the recommended one


def test_fit_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="user and item"):
        fit(pd.DataFrame({"who": ["a"], "what": ["b"]}))
    with pytest.raises(ValueError, match="DataFrame or a scipy sparse matrix"):
        fit([("a", "b")])


def test_recommend_leaves_out_seen_items_and_filters(model):
    df = _frame()
    user = df.user.iloc[0]
    seen = set(df[df.user == user].item)
    recs = model.recommend(user, k=10)
    items = [i for i, _ in recs]
    assert len(items) == 10 and not seen & set(items)
    assert [s for _, s in recs] == sorted((s for _, s in recs), reverse=True)
    banned = items[:3]
    filtered = [i for i, _ in model.recommend(user, k=10, filter_items=banned)]
    assert not set(banned) & set(filtered) and filtered[:7] == items[3:10]
    allow = items[5:8] + ["not-an-item"]
    assert [i for i, _ in model.recommend(user, k=10, candidates=allow)] == items[5:8]
    with_seen = [i for i, _ in model.recommend(user, k=model.num_items, exclude_seen=False)]
    assert seen <= set(with_seen)


def test_recommend_for_several_users_matches_one_by_one(model):
    users = model.user_ids[:5]
    together = model.recommend(users, k=4)
    for user, recs in zip(users, together):
        alone = model.recommend(user, k=4)
        assert [i for i, _ in recs] == [i for i, _ in alone]
        assert [s for _, s in recs] == pytest.approx([s for _, s in alone], abs=1e-6)


def test_unknown_ids_are_named(model):
    with pytest.raises(UnknownIds, match="nobody"):
        model.recommend(["u1", "nobody"])
    with pytest.raises(UnknownIds, match="nothing"):
        model.similar_items("nothing")
    with pytest.raises(UnknownIds):
        model.recommend_history(["nothing", "at-all"])


def test_similar_items_are_the_nearest_by_cosine_without_the_item(model):
    item = model.item_ids[3]
    similar = model.similar_items(item, k=5)
    assert item not in [i for i, _ in similar]
    v = torch.nn.functional.normalize(model.items, dim=1)
    cos = v @ v[3]
    cos[3] = -2
    expected = [model.item_ids[j] for j in cos.topk(5).indices.tolist()]
    assert [i for i, _ in similar] == expected


def test_fold_in_fits_the_history_better_than_its_start_and_the_trained_query(model):
    """Fold-in minimises the full-softmax likelihood of the history over the frozen items
    (what the sampled BSL loss estimates): its query scores the history better than the
    history's mean vector it starts from, and than the user's own trained query."""
    from trainer.core.fold_in import _softmax_objective

    df = _frame()
    user = df.user.iloc[0]
    history = list(df[df.user == user].item)
    rows = torch.as_tensor([model.item_index[i] for i in history])
    mask = torch.zeros(1, model.num_items, dtype=torch.bool)
    mask[0, rows] = True
    t = float(model.config["loss_temperature"])

    def objective(q: torch.Tensor) -> float:
        q = torch.nn.functional.normalize(q.view(1, -1), dim=1)
        return float(_softmax_objective(q @ model.items.T, mask, t, q, 0.0))

    folded = model.fold_in(history)
    start = model.items[rows].mean(0)
    trained = model.queries[model.user_index[user]]
    assert objective(folded) < objective(start) and objective(folded) < objective(trained)
    assert folded.shape == (model.items.shape[1],) and torch.isfinite(folded).all()
    recs = model.recommend_history(history, k=5)
    assert len(recs) == 5 and not set(history) & {i for i, _ in recs}


def test_fold_in_partition_sampled_from_a_large_catalogue_stands_for_all_of_it():
    """Above FOLD_IN_NEGATIVES items the partition is stratified: the history and the row's
    M/2 best-scoring items weigh 1, its uniform draws from the rest stand for all of the
    rest; the fitted query then scores its history under the full softmax nearly as well as
    the exact fit does (and is the exact fit when M ≥ N)."""
    from trainer.core.fold_in import _sampled_partition, _softmax_objective, fold_in

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(30, 16, generator=g)
    noisy = centres[torch.randint(0, 30, (6000,), generator=g)] + 0.5 * torch.randn(
        6000, 16, generator=g
    )
    items = torch.nn.functional.normalize(noisy, dim=1)
    near = (items @ torch.nn.functional.normalize(centres[3], dim=0)).topk(200).indices
    histories = [torch.randperm(6000, generator=g)[:5], near[:40]]
    history = torch.zeros(2, 6000, dtype=torch.bool)
    for row, h in enumerate(histories):
        history[row, h] = True
    start = torch.stack([items[h].mean(0) for h in histories])
    columns, offset, y = _sampled_partition(history, 1000, start, items, cosine=False)
    assert history[:, columns].sum(1).tolist() == [5, 40]  # every history item is scored
    for row, h in enumerate((5, 40)):
        weights = offset[row].exp()
        own = history[row, columns]
        assert y[row, own].sum() == pytest.approx(1.0) and y[row, ~own].eq(0).all()
        assert weights[own].eq(1).all() and weights.eq(1).sum() == h + 500  # + its top 500
        assert weights.sum().item() == pytest.approx(6000, rel=1e-4)  # the rest stands in

    def full_objective(q: torch.Tensor) -> list[float]:
        q = torch.nn.functional.normalize(q, dim=1)
        return [
            float(_softmax_objective(q[r : r + 1] @ items.T, history[r : r + 1], 0.2, q, 0.0))
            for r in range(2)
        ]

    options = dict(cosine=True, loss="bsl", temperature=0.2)
    exact = full_objective(fold_in(items, histories, negatives=6000, **options))
    sampled_q = fold_in(items, histories, negatives=1000, **options)
    assert torch.equal(fold_in(items, histories, negatives=1000, **options), sampled_q)
    for s, e, st in zip(full_objective(sampled_q), exact, full_objective(start), strict=True):
        assert e < s < e + 0.1 * (st - e)  # 90% of the exact fit's gain, not all of it


def test_save_and_load_round_trip(model, tmp_path):
    path = model.save(tmp_path / "m")
    again = Model.load(path)
    assert again.recommend(model.user_ids[:3], k=5) == model.recommend(model.user_ids[:3], k=5)
    assert Model.load(tmp_path / "m" / "checkpoint").item_ids == model.item_ids


def test_export_writes_every_users_top_k_as_recommend_does(model, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "new" / "recs.parquet"  # a directory that is not there yet
    stats = model.export(out, k=4, block=7)  # several blocks, the last one short
    table = pq.read_table(out).to_pandas()
    assert stats["users"] == model.num_users and stats["rows"] == len(table) == 4 * model.num_users
    assert list(table.columns) == ["user", "rank", "item", "score"]
    for user in model.user_ids[:10] + model.user_ids[-3:]:
        mine = table[table.user == user].sort_values("rank")
        assert list(mine["rank"]) == [1, 2, 3, 4]
        assert list(mine["item"]) == [i for i, _ in model.recommend(user, k=4)]
    assert not list((tmp_path / "new").glob("*.tmp*"))
    with pytest.raises(ValueError, match="k = 0"):
        model.export(tmp_path / "bad.parquet", k=0)
    assert not (tmp_path / "bad.parquet").exists()


def test_ann_ranking_keeps_filters_exact_and_finds_the_exact_top_k(model, tmp_path):
    """Above ann_min_items the model ranks through HNSW: seen, excluded and disallowed items
    never appear, and the top k matches exact scoring (a small catalogue: HNSW finds all)."""
    copy = Model.load(model.save(tmp_path / "m"))
    users = copy.user_ids[:40]
    exact = copy.recommend(users, k=10)
    copy.ann_min_items = 1
    banned = [i for i, _ in exact[0][:3]]
    approx = copy.recommend(users, k=10)
    found = sum(len({i for i, _ in a} & {i for i, _ in e}) for a, e in zip(approx, exact))
    assert found / (10 * len(users)) >= 0.95
    df = _frame()
    for user, recs in zip(users, copy.recommend(users, k=10, filter_items=banned)):
        got = {i for i, _ in recs}
        assert len(got) == 10 and not got & set(df[df.user == user].item) and not got & set(banned)
    allow = copy.item_ids[:12]
    for recs in copy.recommend(users[:5], k=5, candidates=allow):
        assert {i for i, _ in recs} <= set(allow)
    assert os.path.isfile(copy._ann_cache_path())  # cached for the next load


def test_fit_says_what_it_trains_first_then_each_epoch_and_the_refit(capsys):
    fit(_frame(), dim=4, epochs=2, eval_every=1, name="blocks")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("training MF (d = 4") and "data blocks:" in lines[0]
    assert "then a refit on train + valid" in lines[0]
    assert any(line.startswith("epoch 2/2") and "valid recall@20" in line for line in lines)
    assert any(line.startswith("refit: a fresh model") for line in lines)
    fit(_frame(), dim=4, epochs=1, verbose=False)
    assert capsys.readouterr().err == ""
