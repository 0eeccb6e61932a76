"""The Python API: train from a DataFrame, a sparse matrix or a prepared dataset, then query
the model with external ids. Everything else in `trainer` is internal.

    from trainer import fit, Model
    model = fit(df, dim=64)                        # df: columns user, item[, rating]
    model.recommend("u1", k=10)                    # [(item id, score), ...], best first
    model.recommend(["u1", "u2"], k=10, filter_items=["i9"])
    model.recommend_history(["i1", "i7"], k=10)    # a user the model never saw (fold-in)
    model.similar_items("i1", k=5)
    model.save("models/my-model")                  # what `adasir serve` reads
    model = Model.load("models/my-model")
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterable, Sequence
from typing import overload

import numpy as np
import torch
import torch.nn.functional as F

from pools.interactions import InteractionIndex
from trainer.core.ann import AnnRanker, ann_cache_name, load_or_build
from trainer.core.config import TrainConfig, check_against_data
from trainer.core.evaluate import ranking_sums
from trainer.core.fold_in import fold_in
from trainer.core.models import build_model
from trainer.core.presets import build_config, fit_to_data
from trainer.core.topk import VectorScorer, top_k
from trainer.core.training import describe_run, train_in_process
from trainer.data.dataset import PreparedData
from trainer.data.formats import RawInteractions, frame_interactions, matrix_interactions
from trainer.data.prepare import (
    FORMAT_VERSION,
    PrepareOptions,
    prepare_arrays,
    write_prepared,
)
from trainer.data.prepare import split_frame as split_frame  # public: trainer.split_frame
from trainer.errors import UsageError
from trainer.export import allowed_mask, export_top_k
from trainer.outputs.atomic import replace_directory, temp_sibling_prefix
from trainer.outputs.checkpoint import (
    CheckpointError,
    checkpoint_dir,
    file_stamp,
    load_checkpoint,
    save_target,
)
from trainer.outputs.rundir import RunDir

Recommendations = list[tuple[str, float]]


class UnknownIds(UsageError, LookupError):
    """Ids the model does not know; `ids` lists them."""

    def __init__(self, kind: str, ids: Sequence[str], model: str | None = None):
        self.kind, self.ids = kind, list(ids)
        where = f" for model {model!r}" if model else ""
        super().__init__(f"unknown {kind}(s){where}: {self.ids[:20]}")


class Model:
    """A trained recommender: query and item vectors whose dot products are its scores, the
    external ids, and the items each known user has seen (train and validation)."""

    ann_min_items: int = 200_000
    """Catalogues this large or larger rank known users through an HNSW index (0: never)."""

    def __init__(self, blob: dict, keep_alive: object | None = None):
        self._blob, self._keep_alive = blob, keep_alive
        train = (blob.get("config") or {}).get("train", {})
        self.config: dict = train
        self.metrics: dict = blob.get("metrics") or {}
        model = build_model(
            blob["model"],
            blob["num_users"],
            blob["num_items"],
            blob["dim"],
            seed=0,
            score=train.get("score", "dot"),
        )
        try:
            model.load_state_dict(blob["state"])
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(f"model state does not fit its checkpoint ({exc})") from None
        self.queries, self.items = model.serving_vectors()
        if not (torch.isfinite(self.queries).all() and torch.isfinite(self.items).all()):
            raise CheckpointError("checkpoint holds non-finite parameters")
        self.cosine = train.get("score") == "cosine"
        self.user_ids: list[str] = list(blob["user_ids"])
        self.item_ids: list[str] = list(blob["item_ids"])
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.item_index = {v: i for i, v in enumerate(self.item_ids)}
        self.seen = InteractionIndex(
            torch.as_tensor(blob["seen_users"]).long(),
            torch.as_tensor(blob["seen_items"]).long(),
            blob["num_users"],
            blob["num_items"],
        )
        self.item_counts = torch.as_tensor(blob["item_counts"]).double()
        self._scorer = VectorScorer(self.queries, self.items)
        self._ann: AnnRanker | None = None
        self._ann_lock = threading.Lock()
        self._unit_items = F.normalize(self.items, dim=1)

    # -- evaluation --------------------------------------------------------------------

    def evaluate(self, test, k: int | Sequence[int] = (10, 20, 50)) -> dict:
        """Recall@k and NDCG@k of this model's top k on held-out interactions `test` (a
        DataFrame with columns user and item), ranked over every item but those each user
        has seen, as training evaluates: the means over the test users the model knows.
        Also returned: "users" (how many counted), and what could not count — "unknown_users"
        and "unknown_items" (their rows, ids the model never saw) and "seen_pairs" (test rows
        the model trained on: masked, so never a hit)."""
        ks = tuple(_check_k(x) for x in ([k] if isinstance(k, int) else k))
        if not hasattr(test, "columns"):
            raise UsageError(
                f"evaluate takes a DataFrame with columns user and item, not {_kind(test)}"
            )
        raw = frame_interactions(test)
        users = [self.user_index.get(u, -1) for u in raw.users.to_pylist()]
        items = [self.item_index.get(v, -1) for v in raw.items.to_pylist()]
        u, v = torch.tensor(users, dtype=torch.long), torch.tensor(items, dtype=torch.long)
        known = (u >= 0) & (v >= 0)
        seen = torch.zeros_like(known)
        seen[known] = self.seen.contains(u[known], v[known][:, None]).squeeze(1)
        keep = known & ~seen
        targets = InteractionIndex(u[keep], v[keep], self.num_users, self.num_items)
        sums, count = ranking_sums(self._scorer, targets, [self.seen], ks)
        out: dict = {name: (value / count if count else None) for name, value in sums.items()}
        out.update(
            users=count,
            unknown_users=int((u < 0).sum()),
            unknown_items=int(((u >= 0) & (v < 0)).sum()),
            seen_pairs=int(seen.sum()),
        )
        return out

    # -- files -------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        """A run directory (holding checkpoint/) or a checkpoint directory."""
        return cls(load_checkpoint(checkpoint_dir(path)))

    def save(self, path: str | os.PathLike) -> str:
        """Write this model as a run directory (PATH/checkpoint/, the format `adasir serve`
        and `Model.load` read); PATH may also name the checkpoint directory itself
        (RUN/checkpoint). What is there is replaced only once the new copy is whole, and only
        if it is this format's own: nothing, an empty directory, a checkpoint, or a directory
        holding just one. Anything else raises UsageError naming what is there."""
        run_dir, target = save_target(path)
        os.makedirs(run_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=temp_sibling_prefix("checkpoint"), dir=run_dir)
        try:
            shutil.copytree(self._blob["path"], tmp, dirs_exist_ok=True)
            os.chmod(tmp, 0o755)
            replace_directory(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return run_dir

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    # -- queries -----------------------------------------------------------------------

    @overload
    def recommend(  # type: ignore[overload-overlap]  # a str is also a Sequence[str]
        self,
        users: str,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter_items: Iterable[str] | None = None,
        candidates: Iterable[str] | None = None,
    ) -> Recommendations: ...

    @overload
    def recommend(
        self,
        users: Sequence[str],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter_items: Iterable[str] | None = None,
        candidates: Iterable[str] | None = None,
    ) -> list[Recommendations]: ...

    def recommend(
        self,
        users: str | Sequence[str],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter_items: Iterable[str] | None = None,
        candidates: Iterable[str] | None = None,
    ) -> Recommendations | list[Recommendations]:
        """The k best items for a user id (→ [(item, score), ...]) or a list of user ids (→ one
        such list per user). exclude_seen leaves out the user's train and validation items;
        filter_items are never recommended; candidates, if given, are the only items that may
        be. Raises UnknownIds for users the model does not know."""
        one = isinstance(users, str)
        wanted = _as_list(users, "users")
        unknown = [u for u in wanted if u not in self.user_index]
        if unknown:
            raise UnknownIds("user", unknown)
        rows = [self.user_index[u] for u in wanted]
        scores, items = self._rank_users(
            rows, k, exclude_seen, self._allowed_items(filter_items, candidates)
        )
        out = self._named(scores, items)
        return out[0] if one else out

    def recommend_history(
        self,
        items: Sequence[str],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter_items: Iterable[str] | None = None,
        candidates: Iterable[str] | None = None,
        exclude_history: bool | None = None,
    ) -> Recommendations:
        """The k best items for a user the model never saw, from their item history (fold-in,
        trainer/core/fold_in.py). exclude_seen leaves out the history's items; the filters
        are recommend's. Unknown history items are ignored; none known raises UnknownIds.
        `exclude_history` is the old name of exclude_seen (deprecated)."""
        if exclude_history is not None:
            warnings.warn(
                "recommend_history(exclude_history=) is now exclude_seen=",
                DeprecationWarning,
                stacklevel=2,
            )
            exclude_seen = exclude_history
        known = self._history_indices(items)
        return self._rank_history(
            known, k, exclude_seen, self._allowed_items(filter_items, candidates)
        )

    def _rank_history(
        self, history: list[int], k: int, exclude: bool, allowed: torch.Tensor | None
    ) -> Recommendations:
        """Top k for a query folded in from item indices."""
        scorer = VectorScorer(self._fold_in_indices([history]), self.items)
        masked = [_history_index(history, self.num_items)] if exclude else []
        scores, found = _rank(scorer, [0], k, masked, allowed)
        return self._named(scores, found)[0]

    def fold_in(self, items: Sequence[str]) -> torch.Tensor:
        """The query vector [d] of a user with this item history (unknown items ignored)."""
        known = self._history_indices(items)
        return self._fold_in_indices([known])[0]

    def _history_indices(self, items: Sequence[str], extra: Sequence[int] = ()) -> list[int]:
        """The known items of a history as indices, each once, in first-seen order (unknown
        ones ignored), then the indices `extra` (a known user's own items): the one rule for
        a history, whoever asks. None known raises UnknownIds."""
        items = _as_list(items, "history")
        known = [self.item_index[i] for i in items if i in self.item_index] + list(extra)
        if not known:
            raise UnknownIds("item", items)
        return list(dict.fromkeys(known))

    def _fold_in_indices(self, histories: list[list[int]]) -> torch.Tensor:
        """Query vectors [B, d] for histories of item indices."""
        temperature = float(self.config.get("loss_temperature", 1.0))
        return fold_in(
            self.items,
            [torch.as_tensor(h, dtype=torch.long) for h in histories],
            cosine=self.cosine,
            loss=self.config.get("loss", "bpr"),
            temperature=temperature,
            l2=float(self.config.get("l2", 0.0)),
        )

    @overload
    def similar_items(  # type: ignore[overload-overlap]  # a str is also a Sequence[str]
        self,
        items: str,
        k: int = 10,
        *,
        filter_items: Iterable[str] | None = None,
        candidates: Iterable[str] | None = None,
    ) -> Recommendations: ...

    @overload
    def similar_items(
        self,
        items: Sequence[str],
        k: int = 10,
        *,
        filter_items: Iterable[str] | None = None,
        candidates: Iterable[str] | None = None,
    ) -> list[Recommendations]: ...

    def similar_items(
        self,
        items: str | Sequence[str],
        k: int = 10,
        *,
        filter_items: Iterable[str] | None = None,
        candidates: Iterable[str] | None = None,
    ) -> Recommendations | list[Recommendations]:
        """The k items most similar to an item (cosine of item vectors; the item itself left
        out) → [(item, similarity), ...], or one such list per item of a list."""
        one = isinstance(items, str)
        wanted = _as_list(items, "items")
        unknown = [i for i in wanted if i not in self.item_index]
        if unknown:
            raise UnknownIds("item", unknown)
        rows = [self.item_index[i] for i in wanted]
        scorer = VectorScorer(self._unit_items, self._unit_items)
        itself = InteractionIndex(
            torch.as_tensor(rows), torch.as_tensor(rows), self.num_items, self.num_items
        )
        scores, found = _rank(
            scorer, rows, k, [itself], self._allowed_items(filter_items, candidates)
        )
        out = self._named(scores, found)
        return out[0] if one else out

    def export(
        self,
        path: str | os.PathLike,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter_items: Iterable[str] | None = None,
        candidates: Iterable[str] | None = None,
        block: int | None = None,
    ) -> dict:
        """Every user's top k to one Parquet file (columns user, rank, item, score), streamed
        in blocks of users with bounded memory (trainer/export.py; `block`: users a block,
        by default what keeps a block's scores within 256 MB). Returns its counts."""
        return export_top_k(
            self,
            os.fspath(path),
            k,
            exclude_seen=exclude_seen,
            block=block,
            allowed=self._allowed_items(filter_items, candidates),
        )

    # -- index-level: item indices and masks (the service and the export rank through these) --

    def _allowed_items(
        self, filter_items: Iterable[str] | None, candidates: Iterable[str] | None
    ) -> torch.Tensor | None:
        """[N] bool of the items that may be returned, or None for all (export.allowed_mask)."""
        return allowed_mask(
            self.item_index,
            _optional_ids(filter_items, "filter_items"),
            _optional_ids(candidates, "candidates"),
        )

    def _rank_users(
        self,
        rows: list[int],
        k: int,
        exclude_seen: bool,
        allowed: torch.Tensor | None = None,
        exact: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Known users (indices) → (scores [B, k'], item indices [B, k']); −inf marks a slot
        with no eligible item left. Catalogues of `ann_min_items` items or more are searched
        through an HNSW index (trainer/core/ann.py; filters stay exact) unless `exact`."""
        if self.searches_ann(exact):
            k = _check_k(k)
            users = torch.as_tensor(rows, dtype=torch.long)
            if exclude_seen:  # each user's slice of the sorted rows: no masks over all of them
                seen = [self.seen.items_of(u) for u in rows]
            else:
                seen = [torch.zeros(0, dtype=torch.long)] * len(rows)
            return self._ann_ranker().rank(self.queries[users], k, seen, allowed)
        return _rank(self._scorer, rows, k, [self.seen] if exclude_seen else [], allowed)

    def searches_ann(self, exact: bool = False) -> bool:
        """Whether known users are ranked through the HNSW index (`ann_min_items` items or
        more, `exact` not asked for) rather than by scoring every item."""
        return not exact and bool(self.ann_min_items) and self.num_items >= self.ann_min_items

    def _ann_ranker(self) -> AnnRanker:
        """The HNSW ranker over this model's items, built on first use and cached beside the
        checkpoint (_ann_cache_path) where the directory allows and the checkpoint is still
        the one this model was loaded from."""
        with self._ann_lock:
            if self._ann is None:
                cache = self._ann_cache_path()
                writable = self._checkpoint_unchanged()
                index = load_or_build(self.items, cache, write=writable)
                self._ann = AnnRanker(index, self.items)
            return self._ann

    def _ann_cache_path(self) -> str:
        """Where this model's HNSW graph is cached: named by a digest of the item vectors it
        indexes, so that no other tables' graph is ever read for them."""
        return os.path.join(self._blob["path"], ann_cache_name(self.items))

    def _checkpoint_unchanged(self) -> bool:
        """Whether model.pt is still the file this model was read from (a retrained run may
        have replaced the directory since)."""
        try:
            return file_stamp(os.path.join(self._blob["path"], "model.pt")) == self._blob.get(
                "stamp"
            )
        except OSError:
            return False

    def _named(self, scores: torch.Tensor, items: torch.Tensor) -> list[Recommendations]:
        out = []
        for s_row, i_row in zip(scores.tolist(), items.tolist()):
            out.append([(self.item_ids[i], s) for s, i in zip(s_row, i_row) if s > float("-inf")])
        return out


def _as_list(ids: str | Iterable[str], what: str = "ids") -> list[str]:
    """Ids as a list: a bare string is one id (never its characters); anything but strings
    is refused, since ids are the strings the model was trained with."""
    if isinstance(ids, str):
        return [ids]
    if isinstance(ids, (bytes, dict)) or not isinstance(ids, Iterable):
        raise UsageError(f"{what}: give an id (a string) or a list of them, not {_kind(ids)}")
    out = list(ids)
    wrong = [i for i in out if not isinstance(i, str)]
    if wrong:
        raise UsageError(
            f"{what}: ids are strings (as trained: the DataFrame's values as text); got "
            f"{_kind(wrong[0])} {wrong[0]!r}"
        )
    return out


def _optional_ids(ids: str | Iterable[str] | None, what: str) -> list[str] | None:
    return None if ids is None else _as_list(ids, what)


def _kind(value) -> str:
    return type(value).__name__


def _check_k(k, most: int | None = None) -> int:
    """k as the int it must be (≥ 1; not a bool, a float or a string)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise UsageError(f"k must be a whole number ≥ 1, not {_kind(k)} {k!r}")
    if k < 1:
        raise UsageError(f"k must be ≥ 1, not {k}")
    return int(k) if most is None else min(int(k), most)


def _history_index(items: list[int], num_items: int) -> InteractionIndex:
    """One folded-in user (row 0) who has seen `items`."""
    t = torch.as_tensor(items, dtype=torch.long)
    return InteractionIndex(torch.zeros_like(t), t, 1, num_items)


def _rank(scorer, rows: list[int], k: int, masked: list, allowed: torch.Tensor | None):
    k = _check_k(k)
    return top_k(scorer, torch.as_tensor(rows, dtype=torch.long), k, masked, allowed=allowed)


# -- fit -------------------------------------------------------------------------------------


def fit(
    data,
    config: TrainConfig | dict | None = None,
    *,
    preset: str | None = None,
    out: str | os.PathLike | None = None,
    log=None,
    verbose: bool = True,
    overwrite: bool = False,
    valid_ratio: float | None = None,
    split_seed: int | None = None,
    name: str | None = None,
    min_rating: float | None = None,
    kcore: int | None = None,
    **options,
) -> Model:
    """Train a model in this process and return it.

    data: a prepared dataset directory (`adasir prepare`), a pandas DataFrame with columns
    user and item (and rating, kept as information), or a scipy sparse matrix of users × items
    (ids are then the row and column numbers as strings).
    config: a TrainConfig, taken as it is, or a dict of its fields; `options` are more fields
    (dim=64, epochs=20, seed=1, ...) over either. `fit(df, dim=4)`,
    `fit(df, {"dim": 4})`, `fit(df, TrainConfig(dim=4))` and `adasir train --dim 4` train one
    configuration; `preset="paper"` is the same as the field `preset="paper"`.
    `init_from=model` (a Model, or a run directory) warm-starts on grown data: the users and
    items that model knew start from its rows (trainer/core/warm_start.py).
    out: the run directory to write (metrics.json and checkpoint/); by default a temporary one
    that lives as long as the model. An existing run there is refused unless `overwrite`
    (then replaced only once the new one completes).
    log: a callable that takes each progress line: what is trained first, one line per
    epoch, then the refit's (default: standard error; `verbose=False` silences them).
    For a DataFrame or matrix only (a prepared directory was split and filtered when it was
    prepared, so they are refused there): `valid_ratio` (0.1) of each user's items held out
    for early stopping, drawn with `split_seed` (0), and no test split; `name`, what the
    dataset is called (the service's `latest:NAME`; "dataframe"); `min_rating` and `kcore`,
    as `adasir prepare` takes them — keep rows rated at least `min_rating` (needs a rating
    column), then drop users and items with fewer than `kcore` interactions until none is
    left (0: keep all).
    """
    cfg = _fit_config(config, preset, options)
    split = _fit_split(data, valid_ratio, split_seed, min_rating, kcore, name)
    keep_alive = None
    if out is None:
        keep_alive = tempfile.TemporaryDirectory(prefix="adasir-fit-")
        out = keep_alive.name
    out = os.path.abspath(os.fspath(out))
    log = log or (_to_stderr if verbose else _silent)
    with _prepared(data, split, name or "dataframe") as data_dir:
        prepared = PreparedData.load(data_dir)
        notes: list[str] = []  # said after the header, which says what is trained first
        cfg = fit_to_data(cfg, prepared.num_items, _given(config, options), notes.append)
        check_against_data(cfg, prepared.num_users, prepared.num_items, prepared.has_ratings)
        rundir = RunDir(out, overwrite=overwrite, names=_FIT_OUT)
        for line in [describe_run(cfg, prepared, out, 0), *notes]:
            log(line)
        with rundir.running():  # as `adasir train`: run.json, and a swap-in only when whole
            train_in_process(cfg, prepared, rundir.work, log=log)
    return Model(load_checkpoint(os.path.join(out, "checkpoint")), keep_alive)


def _given(config: TrainConfig | dict | None, options: dict) -> dict:
    """The fields the user set, for fit_to_data: every field of a TrainConfig, or the dict's,
    with `options` over either (a negative count given is refused, not fitted)."""
    fields = config.model_dump() if isinstance(config, TrainConfig) else dict(config or {})
    return {**fields, **options}


def _fit_config(config: TrainConfig | dict | None, preset: str | None, options: dict):
    """The TrainConfig fit trains with: a TrainConfig as it is, or fields over their preset;
    `options` over either. Validated strictly, as a --config file is. A Model given as
    `init_from` (a warm start) is taken by its checkpoint's path."""
    if isinstance(options.get("init_from"), Model):
        options = {**options, "init_from": options["init_from"]._blob["path"]}
    if isinstance(config, TrainConfig):
        if preset is not None and preset != config.preset:
            raise UsageError(
                f"preset={preset!r} for a TrainConfig with preset {config.preset!r}: "
                "a TrainConfig already holds its preset"
            )
        if not options:
            return config
        config = config.model_dump(mode="json")
    elif config is not None and not isinstance(config, dict):
        raise UsageError(
            f"fit(config=...) takes a TrainConfig or a dict of its fields, "
            f"not {type(config).__name__}"
        )
    return build_config(preset, {**(config or {}), **options})


def _fit_split(data, valid_ratio, split_seed, min_rating, kcore, name) -> PrepareOptions:
    """How fit prepares a DataFrame or matrix; for a prepared directory, none of it may be
    given (it was split and filtered when it was prepared)."""
    table_only = {
        "valid_ratio": valid_ratio,
        "split_seed": split_seed,
        "name": name,
        "min_rating": min_rating,
        "kcore": kcore,
    }
    if isinstance(data, (str, os.PathLike)):
        given = [k for k, v in table_only.items() if v is not None]
        if given:
            raise UsageError(
                f"{', '.join(given)}: for a DataFrame or matrix; a prepared dataset was split "
                "and filtered when it was prepared (adasir prepare --valid-ratio/--seed/"
                "--min-rating/--kcore)"
            )
    kcore = 0 if kcore is None else kcore
    if isinstance(kcore, bool) or not isinstance(kcore, int) or kcore < 0:
        raise UsageError(f"kcore {kcore!r}: give a whole number ≥ 0")
    if min_rating is not None and (
        isinstance(min_rating, bool) or not isinstance(min_rating, (int, float))
    ):
        raise UsageError(f"min_rating {min_rating!r}: give a number, or None to keep every row")
    seed = 0 if split_seed is None else split_seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"split_seed {split_seed!r}: give a whole number")
    return PrepareOptions(
        min_rating=min_rating,
        kcore=kcore,
        test_ratio=0.0,
        valid_ratio=0.1 if valid_ratio is None else valid_ratio,
        seed=seed,
    )


_FIT_OUT = ("fit(out=...)", "pass overwrite=True to replace it")


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _silent(line: str) -> None:
    pass


class _prepared:
    """A context giving a prepared dataset directory for `data`: the directory itself, or a
    temporary one prepared from an in-memory table (removed on exit)."""

    def __init__(self, data, options: PrepareOptions, name: str = "dataframe"):
        self.data, self.options = data, options
        self.tmp: tempfile.TemporaryDirectory | None = None
        if not name or os.sep in name or name.startswith("."):
            raise UsageError(f"name {name!r}: give a plain dataset name (no path)")
        self.name = name

    def __enter__(self) -> str:
        if isinstance(self.data, (str, os.PathLike)):
            return os.fspath(self.data)
        raw = _raw_interactions(self.data)
        self.tmp = tempfile.TemporaryDirectory(prefix="adasir-data-")
        out = os.path.join(self.tmp.name, self.name)
        result = prepare_arrays(raw, self.options, "in-memory data")
        manifest = {
            "format_version": FORMAT_VERSION,
            "source": {"in_memory": type(self.data).__name__},
            "options": vars(self.options),
            "counts": result["counts"],
            "split": "random per user",
        }
        write_prepared(out, result, manifest)
        return out

    def __exit__(self, *exc) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()


def _raw_interactions(data) -> RawInteractions:
    """A DataFrame (user, item[, rating]) or a scipy sparse users × items matrix as string-id
    interactions."""
    if hasattr(data, "tocoo"):
        return matrix_interactions(data, "the matrix")
    if hasattr(data, "columns"):
        return frame_interactions(data)
    raise UsageError(
        f"fit(data=...) takes a prepared dataset directory, a pandas DataFrame or "
        f"a scipy sparse matrix, not {type(data).__name__}"
    )
