"""Top-k answers for users of a loaded model, free of HTTP (testable on its own)."""

from __future__ import annotations

from service.model_store import ModelRegistry
from trainer.api import UnknownIds


class Recommender:
    """recommend(model id, users, k, …) → (model id, one result per user, in order); unknown
    users without a fallback raise trainer.api.UnknownIds."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def recommend(self, model_id: str, users: list[str], k: int, exclude_seen: bool = True,
                  fallback: str = "none") -> tuple[str, list[dict]]:
        loaded = self.registry.get(model_id)
        try:
            return loaded.model_id, loaded.model.answer(users, k, exclude_seen=exclude_seen,
                                                        fallback=fallback)
        except UnknownIds as exc:
            raise UnknownIds(exc.kind, exc.ids, loaded.model_id) from None
