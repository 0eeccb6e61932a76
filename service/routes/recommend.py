"""POST /recommend, /recommend/batch and /similar.

Plain `def` handlers, which FastAPI runs in its thread pool, so that loading a model
(torch.load) and scoring many users never hold the event loop that answers /healthz and other
models' requests. One exception: /recommend for one known user of a model already loaded, on
a catalogue small enough to score exactly in about a millisecond, is answered on the event
loop: the thread pool's hop cost more than the answer; that answer is serialised by the
handler. HNSW searches stay in the thread pool, where concurrent ones are searched as one
batch (trainer/core/ann.py). The other responses are validated against their response
models.
"""

from __future__ import annotations

import anyio
import orjson
from fastapi import APIRouter, Depends, HTTPException, Response
from starlette.concurrency import run_in_threadpool

from service import deps
from service.model_store import UnknownModel
from service.recommender import FilterTooNarrow, Recommender
from service.schemas import (
    BatchRecommendRequest,
    BatchRecommendResponse,
    RecommendRequest,
    RecommendResponse,
    SimilarRequest,
    SimilarResponse,
)
from trainer.api import UnknownIds
from trainer.outputs.checkpoint import CheckpointError

router = APIRouter(tags=["recommendations"], dependencies=[Depends(deps.recommend_guard)])


def _answer(cfg, model: str, call, *args, **kwargs):
    """Run a Recommender call; what the client got wrong is a one-line 4xx naming no path."""
    try:
        return call(model, *args, **kwargs)
    except (UnknownModel, UnknownIds) as exc:
        raise HTTPException(404, exc.args[0]) from None
    except FilterTooNarrow as exc:
        raise HTTPException(422, str(exc)) from None
    except CheckpointError as exc:  # the model's own fault; the message names no paths
        reason = str(exc).replace(cfg.model_root, "<model root>")
        raise HTTPException(503, f"model {model!r} is unavailable: {reason}") from None


INLINE_SCORES = 1 << 22
"""items × d up to which one user's exact answer is computed on the event loop (≈ 1 ms)."""


def _answers_inline(req: RecommendRequest, rec: Recommender) -> bool:
    """A known user's top k from a loaded model, scored exactly over a small catalogue."""
    if req.items is not None:
        return False  # fold-in: tens of steps
    try:
        loaded = rec.registry.peek(req.model)
    except UnknownModel:
        return False  # the thread-pool path says so
    model = loaded.model if loaded is not None else None
    if model is None:
        return False
    if model.searches_ann(req.exact):
        return False  # searched: in the thread pool, batched with concurrent searches
    return model.num_items * model.items.shape[1] <= INLINE_SCORES


@router.post("/recommend", response_model=RecommendResponse)
async def recommend(
    req: RecommendRequest,
    rec: deps.RecommenderDep,
    cfg: deps.SettingsDep,
    fold_ins: deps.FoldInLimiterDep,
):
    """The top k items for one user of a model, best first, with their scores. With `items`,
    the user's query is fitted to that history first (fold-in): for users who signed up after
    training. `filter_items` and `candidates` filter every answer exactly."""
    if _answers_inline(req, rec):
        # Serialised here: the answer's types are ours, and FastAPI's response validation
        # cost as much as the ranking. The keys are the response model's, nulls included.
        answer = {"fold_in": None, "error": None} | _recommend(req, rec, cfg)
        return Response(orjson.dumps(answer), media_type="application/json")
    if req.items is not None:  # fold-in: tens of small torch steps, GIL-bound in parallel
        return await anyio.to_thread.run_sync(_recommend, req, rec, cfg, limiter=fold_ins)
    return await run_in_threadpool(_recommend, req, rec, cfg)


def _recommend(req: RecommendRequest, rec: Recommender, cfg) -> dict:
    """The /recommend answer as a dict, on whichever thread the handler chose."""
    filters = {"filter_items": req.filter_items, "candidates": req.candidates}
    if req.items is not None:
        model_id, result = _answer(
            cfg,
            req.model,
            rec.recommend_history,
            req.items,
            req.k,
            req.user,
            req.exclude_seen,
            fallback=req.fallback,
            **filters,
        )
        return {"model": model_id, **result}
    model_id, results = _answer(
        cfg,
        req.model,
        rec.recommend,
        [req.user],
        req.k,
        req.exclude_seen,
        req.fallback,
        exact=req.exact,
        **filters,
    )
    return {"model": model_id, **results[0]}


def _check_batch_size(size: int, what: str, cfg) -> None:
    """A batch's answer (rows × k) within ADASIR_MAX_BATCH_ITEMS, else a 422."""
    if size > cfg.max_batch_items:
        raise HTTPException(
            422, f"{what} × k = {size} is over {cfg.max_batch_items}: split the batch or lower k"
        )


@router.post("/recommend/batch", response_model=BatchRecommendResponse)
def recommend_batch(req: BatchRecommendRequest, rec: deps.RecommenderDep, cfg: deps.SettingsDep):
    """The top k items for each of up to 1,000 users, in the order asked (users × k is
    bounded by ADASIR_MAX_BATCH_ITEMS). A user the model does not know is answered with no
    items and an `error` (or the popular items, with the popularity fallback); the others
    are answered all the same."""
    _check_batch_size(len(req.users) * req.k, "users", cfg)
    model_id, results = _answer(
        cfg,
        req.model,
        rec.recommend,
        req.users,
        req.k,
        req.exclude_seen,
        req.fallback,
        filter_items=req.filter_items,
        candidates=req.candidates,
        mark_unknown=True,
        exact=req.exact,
    )
    return {"model": model_id, "results": results}


@router.post("/similar", response_model=SimilarResponse)
def similar(req: SimilarRequest, rec: deps.RecommenderDep, cfg: deps.SettingsDep):
    """For each item, the k most similar items ("more like this"): the cosine of the model's
    item vectors, the item itself left out, filters applied (items × k is bounded by
    ADASIR_MAX_BATCH_ITEMS, as /recommend/batch's users × k is)."""
    _check_batch_size(len(req.items) * req.k, "items", cfg)
    model_id, results = _answer(
        cfg,
        req.model,
        rec.similar,
        req.items,
        req.k,
        filter_items=req.filter_items,
        candidates=req.candidates,
    )
    return {"model": model_id, "results": results}
