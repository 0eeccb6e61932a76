"""Recommendation answers for a loaded model, free of HTTP (testable on its own): the JSON
shapes that POST /recommend, /recommend/batch and `adasir recommend` give — the popularity
fallback, unknown users marked, fold-in counts — over the Python API's Model. The HTTP
routes validate; this says what is wrong in one line."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from service.model_store import ModelRegistry
from trainer.api import Model, Recommendations, UnknownIds
from trainer.api import _as_list as as_ids
from trainer.api import _check_k as check_k_value
from trainer.errors import UsageError

FALLBACKS = ("none", "popularity")


def user_answers(
    model: Model,
    users: Sequence[str],
    k: int = 10,
    *,
    exclude_seen: bool = True,
    fallback: str = "none",
    filter_items: Iterable[str] | None = None,
    candidates: Iterable[str] | None = None,
    mark_unknown: bool = False,
    exact: bool = False,
) -> list[dict]:
    """Each user's top k as JSON-ready {"user", "fallback", "items": [{"item", "score"}]}
    (what `adasir recommend` prints and POST /recommend answers). A user the model does
    not know gets the most popular items (score: the item's train interaction count) with
    fallback="popularity" when `fallback` is "popularity"; else, with `mark_unknown`, no
    items and an "error", and otherwise UnknownIds is raised."""
    users = as_ids(users, "users")
    _check_fallback(fallback)
    known = [u for u in users if u in model.user_index]
    unknown = [u for u in users if u not in model.user_index]
    if unknown and fallback == "none" and not mark_unknown:
        raise UnknownIds("user", unknown)
    allowed = model._allowed_items(filter_items, candidates)
    results: dict[str, dict] = {}
    if known:
        scores, items = model._rank_users(
            [model.user_index[u] for u in known], k, exclude_seen, allowed, exact
        )
        for user, recs in zip(known, model._named(scores, items)):
            results[user] = {"user": user, "fallback": None, "items": _as_dicts(recs)}
    if unknown and fallback == "popularity":
        popular = _as_dicts(popular_items(model, k, allowed))
        for user in unknown:
            results[user] = {"user": user, "fallback": "popularity", "items": popular}
    for user in unknown if fallback == "none" else ():
        results[user] = {"user": user, "fallback": None, "items": [], "error": "unknown user"}
    return [results[u] for u in users]


def history_answer(
    model: Model,
    items: Sequence[str],
    k: int = 10,
    *,
    user: str | None = None,
    exclude_seen: bool = True,
    fallback: str = "none",
    filter_items: Iterable[str] | None = None,
    candidates: Iterable[str] | None = None,
) -> dict:
    """The top k for a query fitted to an item history (fold-in), JSON-ready as `user_answers',
    with "fold_in": {"items_used", "unknown_items"}. A known `user`'s own train and
    validation items join the history. When no history item is known: the most popular
    items with fallback="popularity", else UnknownIds."""
    items = as_ids(items, "history")
    _check_fallback(fallback)
    unknown = [i for i in items if i not in model.item_index]
    own = (
        model.seen.items_of(model.user_index[user]).tolist()
        if user is not None and user in model.user_index
        else []
    )
    allowed = model._allowed_items(filter_items, candidates)
    used: str | None = None
    try:
        known = model._history_indices(items, own)
    except UnknownIds:
        if fallback != "popularity":
            raise UnknownIds("item", unknown) from None
        recs, known, used = popular_items(model, k, allowed), [], "popularity"
    else:
        recs = model._rank_history(known, k, exclude_seen, allowed)
    return {
        "user": user,
        "fallback": used,
        "items": _as_dicts(recs),
        "fold_in": {"items_used": len(known), "unknown_items": unknown},
    }


def popular_items(
    model: Model, k: int = 10, allowed: torch.Tensor | None = None
) -> Recommendations:
    """The k items with the most train interactions → [(item, count), ...]."""
    counts = (
        model.item_counts
        if allowed is None
        else model.item_counts.masked_fill(~allowed, -float("inf"))
    )
    top = counts.topk(check_k_value(k, model.num_items))
    return [
        (model.item_ids[i], s)
        for s, i in zip(top.values.tolist(), top.indices.tolist())
        if s > float("-inf")
    ]


def _check_fallback(fallback: str) -> None:
    if fallback not in FALLBACKS:
        raise UsageError(f"fallback: give one of {list(FALLBACKS)}, not {fallback!r}")


def _as_dicts(recs: Recommendations) -> list[dict]:
    return [{"item": item, "score": float(score)} for item, score in recs]


class FilterTooNarrow(UsageError):
    """k over the catalogue, or filters that leave fewer than k items."""


def check_k(model: Model, k: int, filter_items, candidates) -> None:
    """Refuse a k the catalogue or the filters cannot fill."""
    if k > model.num_items:
        raise FilterTooNarrow(f"k = {k} is over the model's {model.num_items} items")
    allowed = model._allowed_items(filter_items, candidates)
    if allowed is not None and int(allowed.sum()) < k:
        raise FilterTooNarrow(f"the filters leave {int(allowed.sum())} items, fewer than k = {k}")


class Recommender:
    """recommend / recommend_history / similar(model id, …) → (model id, results): each
    checks k against the model and the filters (FilterTooNarrow) and re-raises unknown users
    or items as trainer.api.UnknownIds naming the model."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def _ask(self, model_id: str, k: int, filter_items, candidates, question, kind=None):
        """(model id, question(model)) for the model `model_id` names."""
        loaded = self.registry.get(model_id)
        check_k(loaded.model, k, filter_items, candidates)
        try:
            return loaded.model_id, question(loaded.model)
        except UnknownIds as exc:
            raise UnknownIds(kind or exc.kind, exc.ids, loaded.model_id) from None

    def recommend(
        self,
        model_id: str,
        users: list[str],
        k: int,
        exclude_seen: bool = True,
        fallback: str = "none",
        filter_items=None,
        candidates=None,
        mark_unknown: bool = False,
        exact: bool = False,
    ) -> tuple[str, list[dict]]:
        return self._ask(
            model_id,
            k,
            filter_items,
            candidates,
            lambda model: user_answers(
                model,
                users,
                k,
                exclude_seen=exclude_seen,
                fallback=fallback,
                filter_items=filter_items,
                candidates=candidates,
                mark_unknown=mark_unknown,
                exact=exact,
            ),
        )

    def recommend_history(
        self,
        model_id: str,
        items: list[str],
        k: int,
        user: str | None,
        exclude_seen: bool = True,
        filter_items=None,
        candidates=None,
        fallback: str = "none",
    ) -> tuple[str, dict]:
        return self._ask(
            model_id,
            k,
            filter_items,
            candidates,
            lambda model: history_answer(
                model,
                items,
                k,
                user=user,
                exclude_seen=exclude_seen,
                fallback=fallback,
                filter_items=filter_items,
                candidates=candidates,
            ),
            kind="history item",
        )

    def similar(
        self, model_id: str, items: list[str], k: int, filter_items=None, candidates=None
    ) -> tuple[str, list[dict]]:
        def question(model):
            found = model.similar_items(items, k, filter_items=filter_items, candidates=candidates)
            return [
                {"item": item, "items": [{"item": i, "score": s} for i, s in recs]}
                for item, recs in zip(items, found)
            ]

        return self._ask(model_id, k, filter_items, candidates, question)
