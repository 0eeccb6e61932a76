"""Top-k answers for users of a loaded model, free of HTTP (testable on its own)."""

from __future__ import annotations

from service.model_store import LoadedModel, ModelRegistry, popularity_fallback
from trainer.errors import UsageError


class UnknownUsers(UsageError, LookupError):
    """Users the model does not know, asked for without a fallback."""

    def __init__(self, model_id: str, users: list[str]):
        super().__init__(f"unknown user(s) for model {model_id!r}: {users[:20]}")


class Recommender:
    """recommend(model id, users, k, …) → (model id, one result per user, in order)."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def recommend(self, model_id: str, users: list[str], k: int, exclude_seen: bool = True,
                  fallback: str = "none") -> tuple[str, list[dict]]:
        model = self.registry.get(model_id)
        return model.model_id, answer(model, users, k, exclude_seen, fallback)


def answer(model: LoadedModel, users: list[str], k: int, exclude_seen: bool,
           fallback: str) -> list[dict]:
    """Each user's top k as {"user", "fallback", "items": [{"item", "score"}]}; a user the
    model does not know gets the most popular items with fallback="popularity", or raises."""
    known = [u for u in users if u in model.user_index]
    unknown = [u for u in users if u not in model.user_index]
    if unknown and fallback == "none":
        raise UnknownUsers(model.model_id, unknown)
    results = {}
    if known:
        scores, items = model.recommend([model.user_index[u] for u in known], k, exclude_seen)
        for row, user in enumerate(known):
            keep = scores[row] > float("-inf")  # a user who has seen nearly everything
            results[user] = {"user": user, "fallback": None, "items": [
                {"item": model.item_ids[i], "score": float(s)}
                for s, i in zip(scores[row][keep].tolist(), items[row][keep].tolist())]}
    if unknown:
        pscores, pitems = popularity_fallback(model, k)
        popular = [{"item": model.item_ids[i], "score": float(s)} for s, i in zip(pscores, pitems)]
        for user in unknown:
            results[user] = {"user": user, "fallback": "popularity", "items": popular}
    return [results[u] for u in users]
