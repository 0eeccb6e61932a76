"""Trained models found under the model root, loaded lazily into a bounded LRU cache.

A model id is the run directory's path relative to the root (e.g. `ml1m-adasir` or
`jobs/adasir-1a2b`), so finding a named model is one stat of ROOT/<id>/checkpoint/model.pt,
however many runs the root holds. Only `latest` and the listing walk the root, from an index
refreshed at most every `scan_interval` seconds. A newer checkpoint of a model (model.pt's
mtime changed) is loaded on the next request; until it has loaded — or if it cannot be — the
cached copy keeps answering. A checkpoint that fails to load with nothing cached raises
CheckpointError for that model only.
"""

from __future__ import annotations

import builtins
import gc
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from service.names import is_safe_name
from trainer.api import Model
from trainer.outputs.checkpoint import CheckpointError, load_checkpoint

log = logging.getLogger("adasir.service")


class UnknownModel(KeyError):
    pass


@dataclass
class LoadedModel:
    """A model as the registry caches it: the Python API's Model, which checkpoint file
    version it came from (model.pt's mtime) and what GET /models says of it."""

    model_id: str
    mtime: float | None
    model: Model
    info: dict


def _load(model_id: str, path: str, mtime: float | None) -> LoadedModel:
    blob = load_checkpoint(path)
    try:
        model = Model(blob)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return LoadedModel(
        model_id, mtime, model, describe(model_id, blob["config"], blob["metrics"], blob)
    )


def describe(model_id: str, config: dict, metrics: dict, blob: dict | None = None) -> dict:
    """What GET /models says of a model: no filesystem paths (the dataset by name only)."""
    dataset = config.get("dataset", {})
    info = {
        "id": model_id,
        "model": config.get("train", {}).get("model"),
        "sampler": config.get("train", {}).get("sampler", {}).get("name"),
        "dataset": {
            "name": os.path.basename(dataset.get("path") or ""),
            "source": dataset.get("source"),
            "counts": dataset.get("counts"),
        },
        "config": config.get("train"),
        "test": metrics.get("test"),
        "epochs": len(metrics.get("epochs", [])),
    }
    if blob is not None:
        info.update(users=blob["num_users"], items=blob["num_items"], epoch=blob["epoch"])
    return info


class LoadFailures:
    """Newer checkpoints that failed to load while an older copy serves: remembered per model
    and checkpoint version (model.pt's mtime) and retried after a delay that doubles from
    1 s to 60 s, so a broken file costs one load attempt per delay, not one per request."""

    FIRST_DELAY_S, MAX_DELAY_S = 1.0, 60.0

    def __init__(self):
        self._lock = threading.Lock()
        self._by_model: dict[str, dict] = {}

    def waiting(self, model_id: str, mtime: float | None) -> bool:
        with self._lock:
            f = self._by_model.get(model_id)
            return f is not None and f["mtime"] == mtime and time.monotonic() < f["retry_at"]

    def record(self, model_id: str, mtime: float | None, exc: Exception) -> bool:
        """Note a failed load; True when this version had not failed before (worth a log)."""
        with self._lock:
            f = self._by_model.get(model_id)
            new = f is None or f["mtime"] != mtime
            delay = (
                self.FIRST_DELAY_S if f is None or new else min(self.MAX_DELAY_S, f["delay"] * 2)
            )
            self._by_model[model_id] = {
                "mtime": mtime,
                "delay": delay,
                "retry_at": time.monotonic() + delay,
                "error": str(exc),
                "since": time.time() if f is None or new else f["since"],
            }
            return new

    def clear(self, model_id: str) -> None:
        with self._lock:
            self._by_model.pop(model_id, None)

    def describe(self, model_id: str) -> dict | None:
        """What GET /models says of a failing newer checkpoint (no paths)."""
        with self._lock:
            f = self._by_model.get(model_id)
            if f is None:
                return None
            reason = f["error"].split(": ", 1)[-1]  # the message after the checkpoint's path
            return {"error": reason, "since": f["since"], "retry_in_s": f["delay"]}


class ModelRegistry:
    def __init__(
        self,
        root: str,
        cache_size: int = 4,
        scan_interval: float = 1.0,
        ann_min_items: int = Model.ann_min_items,
    ):
        self.root = os.path.abspath(root)
        self.ann_min_items = ann_min_items
        self.cache_size, self.scan_interval = cache_size, scan_interval
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}  # one load per model at a time
        self._index: dict[str, str] = {}
        self._latest: str | None = None
        self._latest_of: dict[str, str] = {}  # dataset name → its newest model id
        self._datasets: dict[str, tuple[float, str]] = {}  # checkpoint → (mtime, dataset)
        self._scanned_at = -float("inf")
        self._failures = LoadFailures()

    def scan(self) -> dict[str, str]:
        """model id → checkpoint directory, for every run under the root (a walk)."""
        found: dict[str, str] = {}
        if not os.path.isdir(self.root):
            return found
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [
                d for d in dirnames if not d.startswith(".") and d not in ("ray", "data", "workers")
            ]
            if os.path.basename(dirpath) == "checkpoint" and "model.pt" in filenames:
                run_dir = os.path.dirname(dirpath)
                found[os.path.relpath(run_dir, self.root).replace(os.sep, "/")] = dirpath
                dirnames[:] = []
        return found

    def index(self) -> dict[str, str]:
        """The walk's result, at most `scan_interval` seconds old; `latest` is kept with it."""
        now = time.monotonic()
        if now - self._scanned_at >= self.scan_interval:
            found = self.scan()
            stamps = {m: _mtime(p) for m, p in found.items()}
            mtimes: dict[str, float] = {m: t for m, t in stamps.items() if t is not None}
            self._index, self._scanned_at = found, now
            self._latest = max(mtimes, key=mtimes.__getitem__) if mtimes else None
            self._latest_of = {}
            for model_id in sorted(mtimes, key=mtimes.__getitem__):  # newest last: it wins
                dataset = self._dataset_of(found[model_id], mtimes[model_id])
                if dataset:
                    self._latest_of[dataset] = model_id
        return self._index

    def _dataset_of(self, checkpoint_dir: str, mtime: float) -> str | None:
        """The name of the dataset a checkpoint was trained on (its directory's name), read
        once per checkpoint version."""
        seen = self._datasets.get(checkpoint_dir)
        if seen is None or seen[0] != mtime:
            try:
                with open(os.path.join(checkpoint_dir, "config.json")) as fh:
                    path = json.load(fh).get("dataset", {}).get("path") or ""
            except (OSError, ValueError, AttributeError):
                path = ""
            seen = (mtime, os.path.basename(os.path.normpath(path)) if path else "")
            self._datasets[checkpoint_dir] = seen
        return seen[1] or None

    def _newest(self, model_id: str) -> str:
        """`latest`: the most recently written checkpoint; `latest:DATASET`: the most recently
        written one trained on the dataset named DATASET (as GET /models names it)."""
        self.index()
        if model_id == "latest":
            if self._latest is None:
                raise UnknownModel("no trained models yet")
            return self._latest
        dataset = model_id.removeprefix("latest:")
        if dataset not in self._latest_of:
            known = ", ".join(sorted(self._latest_of)) or "none yet"
            raise UnknownModel(f"no model trained on dataset {dataset!r} (datasets: {known})")
        return self._latest_of[dataset]

    def resolve(self, model_id: str) -> tuple[str, str]:
        if model_id == "latest" or model_id.startswith("latest:"):
            model_id = self._newest(model_id)
        elif not is_safe_name(model_id):
            raise UnknownModel(f"unknown model {model_id!r}")
        path = os.path.join(self.root, *model_id.split("/"), "checkpoint")
        if not os.path.isfile(os.path.join(path, "model.pt")):
            # The run is still there but its checkpoint is not: a replacement in progress
            # (where the swap is two renames), so the cached copy answers. A run that is gone
            # is forgotten.
            with self._lock:
                if model_id in self._cache and os.path.isdir(os.path.dirname(path)):
                    return model_id, path
                self._cache.pop(model_id, None)
            raise UnknownModel(f"unknown model {model_id!r}")
        return model_id, path

    def _serving(self, model_id: str, mtime: float | None) -> LoadedModel | None:
        """The cached model to answer with as it is, under self._lock: unchanged on disk,
        mid-replacement (no model.pt: mtime None), or its newer checkpoint failed to load a
        moment ago (not yet again); None when there is a load to do."""
        cached = self._cache.get(model_id)
        if cached is None:
            return None
        if mtime is None or cached.mtime == mtime or self._failures.waiting(model_id, mtime):
            self._cache.move_to_end(model_id)
            return cached
        return None

    def peek(self, model_id: str) -> LoadedModel | None:
        """What get() would answer with without loading anything (a stat; no torch.load),
        or None where get() has a load to do. Raises UnknownModel as get() does."""
        model_id, path = self.resolve(model_id)
        mtime = _mtime(path)
        with self._lock:
            return self._serving(model_id, mtime)

    def get(self, model_id: str) -> LoadedModel:
        model_id, path = self.resolve(model_id)
        mtime = _mtime(path)
        with self._lock:
            serving = self._serving(model_id, mtime)
            if serving is not None:
                return serving
            cached = self._cache.get(model_id)
            gate = self._loading.setdefault(model_id, threading.Lock())
        with gate:  # outside the registry lock: one slow load blocks no other model
            with self._lock:
                cached = self._cache.get(model_id)
                if cached is not None and cached.mtime == mtime:
                    return cached  # another request loaded it meanwhile
            try:
                loaded = _load(model_id, path, mtime)
                loaded.model.ann_min_items = self.ann_min_items
            except (CheckpointError, OSError) as exc:
                if cached is None:
                    if isinstance(exc, OSError):
                        raise UnknownModel(f"model {model_id!r} disappeared") from None
                    raise
                if self._failures.record(model_id, mtime, exc):
                    log.warning(
                        "model %s: newer checkpoint not loadable (%s); serving the "
                        "cached one, retrying with backoff",
                        model_id,
                        exc,
                    )
                return cached
        self._failures.clear(model_id)
        _settle_heap()
        with self._lock:
            self._cache[model_id] = loaded
            self._cache.move_to_end(model_id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return loaded

    def list(self) -> list[dict]:
        """Every model with its dataset, config and metrics; a broken one says why."""
        out = []
        for model_id, path in sorted(self.index().items()):
            try:
                out.append(describe(model_id, *_documents(path)))
                failure = self._failures.describe(model_id)
                if failure:
                    failure["error"] = failure["error"].replace(self.root, "<model root>")
                    out[-1]["load_error"] = failure
            except (OSError, ValueError) as exc:
                out.append(
                    {"id": model_id, "error": f"unreadable checkpoint ({type(exc).__name__})"}
                )
        return out

    def cached_ids(self) -> builtins.list[str]:
        with self._lock:
            return list(self._cache)


def _documents(path: str) -> tuple[dict, dict]:
    """A checkpoint's config.json and metrics.json; ValueError unless both are objects and
    the config has its train options (what `describe` reads)."""
    docs = []
    for name in ("config.json", "metrics.json"):
        with open(os.path.join(path, name)) as fh:
            docs.append(json.load(fh))
    config, metrics = docs
    if not (isinstance(config, dict) and isinstance(config.get("train"), dict)):
        raise ValueError("config.json is not a checkpoint's")
    if not isinstance(metrics, dict):
        raise ValueError("metrics.json is not an object")
    return config, metrics


def _settle_heap() -> None:
    """After a load: collect once, then freeze what survives (gc.freeze), so the collector's
    full passes stop walking a model's hundreds of thousands of id strings, which stalled
    requests (benchmarks/results/serve_load.md has the latencies). Refcounting still frees an evicted model; a cycle
    among frozen objects waits for the next load, which unfreezes and collects first."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _mtime(checkpoint_dir: str) -> float | None:
    try:
        return os.path.getmtime(os.path.join(checkpoint_dir, "model.pt"))
    except OSError:
        return None
