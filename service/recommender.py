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
    """recommend / recommend_history / similar(model id, …) → (model id, results): each
    checks k against the model and the filters (FilterTooNarrow) and re-raises unknown users
    or items as trainer.api.UnknownIds naming the model."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def _ask(self, model_id: str, k: int, exclude_items, candidates, question, kind=None):
        """(model id, question(model)) for the model `model_id` names."""
        loaded = self.registry.get(model_id)
        check_k(loaded.model, k, exclude_items, candidates)
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
        exclude_items=None,
        candidates=None,
        mark_unknown: bool = False,
        exact: bool = False,
    ) -> tuple[str, list[dict]]:
        return self._ask(
            model_id,
            k,
            exclude_items,
            candidates,
            lambda model: model.answer(
                users,
                k,
                exclude_seen=exclude_seen,
                fallback=fallback,
                filter_items=exclude_items,
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
        exclude_items=None,
        candidates=None,
        fallback: str = "none",
    ) -> tuple[str, dict]:
        return self._ask(
            model_id,
            k,
            exclude_items,
            candidates,
            lambda model: model.answer_history(
                items,
                k,
                user=user,
                exclude_seen=exclude_seen,
                fallback=fallback,
                filter_items=exclude_items,
                candidates=candidates,
            ),
            kind="history item",
        )

    def similar(
        self, model_id: str, items: list[str], k: int, exclude_items=None, candidates=None
    ) -> tuple[str, list[dict]]:
        def question(model):
            found = model.similar_items(items, k, filter_items=exclude_items, candidates=candidates)
            return [
                {"item": item, "items": [{"item": i, "score": s} for i, s in recs]}
                for item, recs in zip(items, found)
            ]

        return self._ask(model_id, k, exclude_items, candidates, question)
