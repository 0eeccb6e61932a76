"""What every trained `Model` promises, whatever it is (MF or GMF; dot or cosine scores): the
query API's contract, checked on each kind as implicit's shared recommender tests check each
of its models."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import block_frame

from pools.interactions import InteractionIndex
from trainer import Model, fit
from trainer.api import UnknownIds
from trainer.core.models import MODELS
from trainer.errors import UsageError

KINDS = [(model, score) for model in sorted(MODELS) for score in ("dot", "cosine")]


@pytest.fixture(scope="module", params=KINDS, ids=[f"{m}-{s}" for m, s in KINDS])
def model(request) -> Model:
    name, score = request.param
    return fit(
        block_frame(),
        model=name,
        score=score,
        dim=8,
        epochs=2,
        verbose=False,
        sampler={"num_negatives": 20},
    )


def _seen(model: Model, user: str) -> set[str]:
    index: InteractionIndex = model.seen
    return {model.item_ids[i] for i in index.items_of(model.user_index[user]).tolist()}


def _well_formed(recs, model: Model, k: int) -> None:
    assert len(recs) == k and len({i for i, _ in recs}) == k
    assert all(isinstance(i, str) and i in model.item_index for i, _ in recs)
    scores = [s for _, s in recs]
    assert all(isinstance(s, float) and math.isfinite(s) for s in scores)
    assert scores == sorted(scores, reverse=True)


def _same(a: list, b: list) -> bool:
    """Two answers (or lists of answers) alike: the same items, scores to float tolerance (a
    batch's GEMM may round differently from one row's)."""
    if a and isinstance(a[0], list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return [i for i, _ in a] == [i for i, _ in b] and all(
        math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) for (_, x), (_, y) in zip(a, b)
    )


def test_recommend_ranks_unseen_items_best_first(model):
    user = model.user_ids[0]
    recs = model.recommend(user, k=5)
    _well_formed(recs, model, 5)
    assert not {i for i, _ in recs} & _seen(model, user)
    everything = model.recommend(user, k=model.num_items, exclude_seen=False)
    assert _seen(model, user) <= {i for i, _ in everything}


def test_a_batch_is_answered_as_each_user_alone(model):
    users = model.user_ids[:4]
    assert _same(model.recommend(users, k=3), [model.recommend(u, k=3) for u in users])
    items = model.item_ids[:3]
    assert _same(model.similar_items(items, k=3), [model.similar_items(i, k=3) for i in items])


def test_filters_are_exact_everywhere(model):
    user, item = model.user_ids[1], model.item_ids[1]
    top = [i for i, _ in model.recommend(user, k=4)]
    banned = top[:2]
    assert not set(banned) & {i for i, _ in model.recommend(user, k=4, filter_items=banned)}
    allow = top[1:3]
    assert [i for i, _ in model.recommend(user, k=2, candidates=allow)] == allow
    history = model.item_ids[5:8]
    assert not set(banned) & {
        i for i, _ in model.recommend_history(history, k=4, filter_items=banned)
    }
    assert {i for i, _ in model.similar_items(item, k=2, candidates=allow)} <= set(allow)


def test_a_history_folds_in_to_a_query(model):
    history = model.item_ids[10:14]
    recs = model.recommend_history(history, k=5)
    _well_formed(recs, model, 5)
    assert not set(history) & {i for i, _ in recs}
    assert set(history) & {
        i for i, _ in model.recommend_history(history, k=model.num_items, exclude_seen=False)
    }
    query = model.fold_in(history)
    assert query.shape == (model.queries.shape[1],) and torch.isfinite(query).all()
    assert _same(model.recommend_history(history + ["not-an-item"], k=5), recs)


def test_similar_items_leave_the_item_out(model):
    item = model.item_ids[2]
    similar = model.similar_items(item, k=5)
    _well_formed(similar, model, 5)
    assert item not in {i for i, _ in similar}
    assert all(-1.0 - 1e-5 <= s <= 1.0 + 1e-5 for _, s in similar)  # cosines


def test_unknown_ids_raise_one_error_naming_them(model):
    for call in (
        lambda: model.recommend(["nobody", model.user_ids[0]]),
        lambda: model.similar_items("nothing"),
        lambda: model.recommend_history(["nothing", "at-all"]),
    ):
        with pytest.raises(UnknownIds) as caught:
            call()
        assert isinstance(caught.value, UsageError) and isinstance(caught.value, LookupError)
        assert caught.value.ids and "no" in caught.value.ids[0]


def test_save_and_load_give_the_same_answers(model, tmp_path):
    again = Model.load(model.save(tmp_path / "copy"))
    users = model.user_ids[:3]
    assert again.recommend(users, k=4) == model.recommend(users, k=4)
    assert again.similar_items(model.item_ids[0], k=4) == model.similar_items(
        model.item_ids[0], k=4
    )
    assert again.config == model.config and (again.num_users, again.num_items) == (
        model.num_users,
        model.num_items,
    )


def test_evaluate_gives_metrics_between_0_and_1(model):
    import pandas as pd

    users = model.user_ids[:20]
    test = pd.DataFrame(
        {"user": users, "item": [model.recommend(u, k=1)[0][0] for u in users]}
    )  # each user's own top item: a hit at every k
    result = model.evaluate(test, k=(1, 5))
    assert result["users"] == 20 and result["recall@1"] == 1.0 and result["ndcg@5"] == 1.0


def test_the_command_line_takes_the_same_filter_names(tmp_path, capsys):
    import json

    from adasir.cli import main

    model = fit(block_frame(), dim=4, epochs=1, verbose=False, sampler={"num_negatives": 20})
    run = model.save(tmp_path / "run")
    user = model.user_ids[0]
    top = [i for i, _ in model.recommend(user, k=3)]

    def answer(*flags: str) -> list[str]:
        assert main(["recommend", "--model", run, "--user", user, "-k", "3", *flags]) == 0
        return [x["item"] for x in json.loads(capsys.readouterr().out)["items"]]

    assert answer() == top
    for flag in ("--filter-items", "--exclude"):  # --exclude: the former name
        assert top[0] not in answer(flag, top[0])
    assert answer("--candidates", ",".join(top[1:])) == top[1:]  # fewer than k: all it allows
    unmasked = {i for i, _ in model.recommend(user, k=3, exclude_seen=False)}
    assert set(answer("--no-exclude-seen")) == unmasked == set(answer("--include-seen"))
