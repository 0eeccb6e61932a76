"""Trained models found under the model root, loaded lazily into a bounded LRU cache.

A model id is the run directory's path relative to the root (e.g. `ml1m-adasir` or
`jobs/adasir-1a2b`). A newer checkpoint of the same model (model.pt's mtime changed) is
loaded on the next request, no restart needed. A checkpoint that fails to load raises
CheckpointError for that model only.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from pools.interactions import InteractionIndex
from trainer.checkpoint import CheckpointError, load_checkpoint
from trainer.models import build_model


class UnknownModel(KeyError):
    pass


@dataclass
class LoadedModel:
    model_id: str
    mtime: float
    queries: torch.Tensor  # [U, d]: the vector each user's scores are dotted with
    items: torch.Tensor  # [N, d]
    user_index: dict[str, int]
    item_ids: list[str]
    seen: InteractionIndex
    popular: torch.Tensor  # item indices by train count, descending
    item_counts: torch.Tensor  # [N] train interactions per item
    info: dict

    def recommend(self, users: list[int], k: int, exclude_seen: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """users (indices) → (scores [B, k'], item indices [B, k']); k' = min(k, items)."""
        u = torch.as_tensor(users, dtype=torch.long)
        with torch.no_grad():
            scores = self.queries.index_select(0, u) @ self.items.T
            if exclude_seen:
                rows, cols = self.seen.rows_of(u)
                scores[rows, cols] = -torch.inf
            top = scores.topk(min(k, scores.shape[1]), dim=1)
        return top.values, top.indices


def _load(model_id: str, path: str, mtime: float) -> LoadedModel:
    blob = load_checkpoint(path)
    score = (blob.get("config") or {}).get("train", {}).get("score", "dot")
    try:
        model = build_model(blob["model"], blob["num_users"], blob["num_items"], blob["dim"],
                            seed=0, score=score)
        model.load_state_dict(blob["state"])
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: model state does not fit ({exc})") from None
    queries, items = model.serving_vectors()  # cosine models rank by cosine here too
    if not (torch.isfinite(queries).all() and torch.isfinite(items).all()):
        raise CheckpointError(f"{path}: checkpoint holds non-finite parameters")
    seen = InteractionIndex(torch.as_tensor(blob["seen_users"]), torch.as_tensor(blob["seen_items"]),
                            blob["num_users"], blob["num_items"])
    counts = torch.as_tensor(blob["item_counts"]).double()
    popular = torch.argsort(-counts, stable=True)
    return LoadedModel(model_id, mtime, queries, items,
                       {uid: i for i, uid in enumerate(blob["user_ids"])}, blob["item_ids"],
                       seen, popular, counts, describe(model_id, path, blob["config"], blob["metrics"], blob))


def describe(model_id: str, path: str, config: dict, metrics: dict, blob: dict | None = None) -> dict:
    dataset = config.get("dataset", {})
    info = {"id": model_id, "path": path, "model": config.get("train", {}).get("model"),
            "sampler": config.get("train", {}).get("sampler", {}).get("name"),
            "dataset": {"path": dataset.get("path"), "source": dataset.get("source"),
                        "counts": dataset.get("counts")},
            "config": config.get("train"), "test": metrics.get("test"),
            "epochs": len(metrics.get("epochs", []))}
    if blob is not None:
        info.update(users=blob["num_users"], items=blob["num_items"], epoch=blob["epoch"])
    return info


class ModelRegistry:
    def __init__(self, root: str, cache_size: int = 4):
        self.root = os.path.abspath(root)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._paths: dict[str, str] = {}  # model id → checkpoint dir, from the last scan
        self._lock = threading.Lock()

    def scan(self) -> dict[str, str]:
        """model id → checkpoint directory, for every run under the root."""
        found = {}
        if not os.path.isdir(self.root):
            return found
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in ("ray", "data", "workers")]
            if os.path.basename(dirpath) == "checkpoint" and "model.pt" in filenames:
                run_dir = os.path.dirname(dirpath)
                found[os.path.relpath(run_dir, self.root).replace(os.sep, "/")] = dirpath
                dirnames[:] = []
        return found

    def resolve(self, model_id: str) -> tuple[str, str]:
        # The walk costs I/O proportional to the root; a known id only needs its model.pt.
        # Rescan when the id is new, its checkpoint vanished, or "latest" may have changed.
        known = self._paths.get(model_id)
        if known is not None and os.path.isfile(os.path.join(known, "model.pt")):
            return model_id, known
        models = self._paths = self.scan()
        if model_id == "latest":
            if not models:
                raise UnknownModel("no trained models yet")
            model_id = max(models, key=lambda m: os.path.getmtime(os.path.join(models[m], "model.pt")))
        if model_id not in models:
            raise UnknownModel(f"unknown model {model_id!r}")
        return model_id, models[model_id]

    def get(self, model_id: str) -> LoadedModel:
        model_id, path = self.resolve(model_id)
        try:
            mtime = os.path.getmtime(os.path.join(path, "model.pt"))
        except OSError:
            raise UnknownModel(f"model {model_id!r} disappeared") from None
        with self._lock:
            cached = self._cache.get(model_id)
            if cached is not None and cached.mtime == mtime:
                self._cache.move_to_end(model_id)
                return cached
        loaded = _load(model_id, path, mtime)  # outside the lock: one slow load blocks no one
        with self._lock:
            self._cache[model_id] = loaded
            self._cache.move_to_end(model_id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return loaded

    def list(self) -> list[dict]:
        """Every model with its dataset, config and metrics; a broken one says why."""
        out = []
        for model_id, path in sorted(self.scan().items()):
            try:
                with open(os.path.join(path, "config.json")) as fh:
                    config = json.load(fh)
                with open(os.path.join(path, "metrics.json")) as fh:
                    metrics = json.load(fh)
                out.append(describe(model_id, path, config, metrics))
            except (OSError, ValueError) as exc:
                out.append({"id": model_id, "path": path, "error": f"unreadable checkpoint: {exc}"})
        return out

    def cached_ids(self) -> list[str]:
        with self._lock:
            return list(self._cache)


def popularity_fallback(model: LoadedModel, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For a user the model does not know: the most popular items, scored by train count."""
    idx = model.popular[:k]
    return model.item_counts[idx].numpy(), idx.numpy()
