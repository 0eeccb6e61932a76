"""Recommendation answers for a loaded model, free of HTTP (testable on its own): the HTTP
routes validate, this calls the Python API's Model and says what is wrong in one line."""

from __future__ import annotations

from service.model_store import ModelRegistry
from trainer.api import Model, UnknownIds
from trainer.errors import UsageError


class FilterTooNarrow(UsageError):
    """k over the catalogue, or filters that leave fewer than k items."""


def check_k(model: Model, k: int, exclude_items, candidates) -> None:
    """Refuse a k the catalogue or the filters cannot fill."""
    if k > model.num_items:
        raise FilterTooNarrow(f"k = {k} is over the model's {model.num_items} items")
    allowed = model.allowed_items(exclude_items, candidates)
    if allowed is not None and int(allowed.sum()) < k:
        raise FilterTooNarrow(f"the filters leave {int(allowed.sum())} items, fewer than k = {k}")


class Recommender:
    """recommend / recommend_history / similar(model id, …) → (model id, results); unknown
    users or items raise trainer.api.UnknownIds naming the model."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def recommend(
        self,
        model_id: str,
        users: list[str],
        k: int,
        exclude_seen: bool = True,
        fallback: str = "none",
        exclude_items=None,
        candidates=None,
        mark_unknown: bool = False,
        exact: bool = False,
    ) -> tuple[str, list[dict]]:
        loaded = self.registry.get(model_id)
        check_k(loaded.model, k, exclude_items, candidates)
        try:
            return loaded.model_id, loaded.model.answer(
                users,
                k,
                exclude_seen=exclude_seen,
                fallback=fallback,
                filter_items=exclude_items,
                candidates=candidates,
                mark_unknown=mark_unknown,
                exact=exact,
            )
        except UnknownIds as exc:
            raise UnknownIds(exc.kind, exc.ids, loaded.model_id) from None

    def recommend_history(
        self,
        model_id: str,
        items: list[str],
        k: int,
        user: str | None,
        exclude_seen: bool = True,
        exclude_items=None,
        candidates=None,
    ) -> tuple[str, dict]:
        loaded = self.registry.get(model_id)
        check_k(loaded.model, k, exclude_items, candidates)
        try:
            return loaded.model_id, loaded.model.answer_history(
                items,
                k,
                user=user,
                exclude_seen=exclude_seen,
                filter_items=exclude_items,
                candidates=candidates,
            )
        except UnknownIds as exc:
            raise UnknownIds("history item", exc.ids, loaded.model_id) from None

    def similar(
        self, model_id: str, items: list[str], k: int, exclude_items=None, candidates=None
    ) -> tuple[str, list[dict]]:
        loaded = self.registry.get(model_id)
        check_k(loaded.model, k, exclude_items, candidates)
        model = loaded.model
        try:
            found = model.similar_items(items, k, filter_items=exclude_items, candidates=candidates)
        except UnknownIds as exc:
            raise UnknownIds(exc.kind, exc.ids, loaded.model_id) from None
        return loaded.model_id, [
            {"item": item, "items": [{"item": i, "score": s} for i, s in recs]}
            for item, recs in zip(items, found)
        ]
