"""Model.evaluate and split_frame: a held-out DataFrame scored as training scores its test."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import block_frame

from trainer import fit, split_frame
from trainer.core.config import TrainConfig
from trainer.data.dataset import PreparedData
from trainer.errors import UsageError


def _split_frame_of(data: PreparedData, split: str, model) -> pd.DataFrame:
    part = data.splits[split]
    return pd.DataFrame(
        {
            "user": [model.user_ids[u] for u in part.users.tolist()],
            "item": [model.item_ids[i] for i in part.items.tolist()],
        }
    )


def test_evaluate_on_the_test_split_is_the_runs_test_metric(tiny_data):
    model = fit(tiny_data, epochs=2, verbose=False, refit=False, sampler={"num_negatives": 50})
    test = _split_frame_of(PreparedData.load(tiny_data), "test", model)
    got = model.evaluate(test)
    for metric, value in model.metrics["test"].items():
        assert got[metric] == pytest.approx(value, abs=1e-9), metric
    assert got["unknown_users"] == got["unknown_items"] == got["seen_pairs"] == 0


def test_what_cannot_count_is_counted_not_scored():
    frame = block_frame()
    train, test = split_frame(frame, test_ratio=0.25, seed=1)
    assert len(train) + len(test) == len(frame) and not set(train.index) & set(test.index)
    model = fit(train, epochs=1, verbose=False, sampler={"num_negatives": 20})
    extra = pd.DataFrame(
        {"user": ["nobody", train.user.iloc[0]], "item": [test.item.iloc[0], "nothing"]}
    )
    seen = train.head(2)[["user", "item"]]
    clean, noisy = model.evaluate(test, k=20), model.evaluate(pd.concat([test, extra, seen]), k=20)
    assert noisy == {**clean, "unknown_users": 1, "unknown_items": 1, "seen_pairs": 2}
    assert set(clean) == {
        "recall@20",
        "ndcg@20",
        "users",
        "unknown_users",
        "unknown_items",
        "seen_pairs",
    }


def test_split_frame_keeps_every_user_in_train_and_refuses_a_bad_ratio():
    frame = block_frame()
    train, test = split_frame(frame, test_ratio=0.5, seed=0)
    assert set(train.user) == set(frame.user)
    assert split_frame(frame, 0.5, seed=0)[1].index.equals(test.index)  # seeded
    with pytest.raises(UsageError, match="test_ratio"):
        split_frame(frame, test_ratio=1.0)
    model = fit(train, epochs=1, verbose=False, sampler={"num_negatives": 20})
    with pytest.raises(UsageError, match="k "):
        model.evaluate(test, k=0)
    for bad in ([("u1", "i1")], "test.csv", None):
        with pytest.raises(UsageError, match="DataFrame"):
            model.evaluate(bad)
    with pytest.raises(UsageError, match="no column"):
        model.evaluate(pd.DataFrame({"who": ["u1"], "what": ["i1"]}))


def test_a_model_without_a_test_split_has_no_test_metrics_rather_than_zeros(tmp_path):
    model = fit(block_frame(), epochs=1, verbose=False, sampler={"num_negatives": 20})
    assert model.metrics["test"] and all(v is None for v in model.metrics["test"].values())
    assert model.metrics["before_refit"]["test"]["recall@20"] is None


def test_fit_filters_a_dataframe_as_prepare_does(tiny_data):
    frame = block_frame(pairs=1500)
    frame["rating"] = [1.0 + (i % 5) for i in range(len(frame))]
    kept = frame[frame.rating >= 4]
    model = fit(frame, epochs=1, verbose=False, min_rating=4, sampler={"num_negatives": 20})
    assert len(model.seen) == len(kept)  # train + validation: every kept row, no other
    rare = kept.user.value_counts()
    cored = fit(kept, epochs=1, verbose=False, kcore=3, sampler={"num_negatives": 5})
    assert set(cored.user_ids) <= set(rare[rare >= 3].index)
    assert cored.num_users < kept.user.nunique()  # some users had fewer than 3
    with pytest.raises(UsageError, match="prepared dataset"):
        fit(tiny_data, epochs=1, verbose=False, kcore=5)
    with pytest.raises(UsageError, match="kcore"):
        fit(frame, epochs=1, verbose=False, kcore="5")
    for bad in ("4", True):
        with pytest.raises(UsageError, match="min_rating"):
            fit(frame, epochs=1, verbose=False, min_rating=bad)


def test_fit_names_its_split_seed_apart_from_the_training_seed(tiny_data):
    frame = block_frame(pairs=600)
    quiet = {"epochs": 1, "verbose": False, "refit": False, "sampler": {"num_negatives": 20}}
    a = fit(frame, split_seed=1, seed=5, **quiet)
    b = fit(frame, split_seed=2, seed=5, **quiet)
    c = fit(frame, split_seed=1, seed=6, **quiet)
    assert a.config["seed"] == 5 and c.config["seed"] == 6  # seed is TrainConfig.seed
    assert not torch.equal(a.item_counts, b.item_counts)  # train counts: another split
    assert torch.equal(a.item_counts, c.item_counts)  # the same split, another training seed
    assert not torch.equal(a.queries, c.queries)
    for option in ({"valid_ratio": 0.2}, {"split_seed": 1}, {"name": "x"}):
        with pytest.raises(UsageError, match=f"{next(iter(option))}: for a DataFrame"):
            fit(tiny_data, **option, **quiet)
    with pytest.raises(UsageError, match="split_seed"):
        fit(frame, split_seed="1", **quiet)


def test_a_negative_count_given_in_a_config_is_refused_not_fitted():
    frame = block_frame()  # 40 items: fewer than the recommended preset's 1,000 negatives
    quiet = {"epochs": 1, "verbose": False}
    fitted = fit(frame, **quiet)  # the preset's count, fitted to the catalogue
    assert fitted.config["sampler"]["num_negatives"] == fitted.num_items - 1
    for config in ({"sampler": {"num_negatives": 1000}}, TrainConfig(dim=4)):
        with pytest.raises(ValueError, match="--negatives 1000"):
            fit(frame, config, **quiet)
