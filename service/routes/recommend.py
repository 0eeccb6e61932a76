"""POST /recommend and /recommend/batch.

Plain `def` handlers: FastAPI runs them in its thread pool, so loading a model (torch.load)
and scoring never hold the event loop that answers /healthz and other models' requests.
Responses are serialised with orjson straight to bytes.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response

from service import deps
from service.model_store import UnknownModel
from service.schemas import (
    BatchRecommendRequest,
    BatchRecommendResponse,
    RecommendRequest,
    RecommendResponse,
)
from trainer.api import UnknownIds
from trainer.outputs.checkpoint import CheckpointError

router = APIRouter(tags=["recommendations"], dependencies=[Depends(deps.recommend_guard)])


def _recommend(rec, cfg, model: str, users: list[str], k: int, exclude_seen: bool,
               fallback: str) -> tuple[str, list[dict]]:
    try:
        return rec.recommend(model, users, k, exclude_seen, fallback)
    except (UnknownModel, UnknownIds) as exc:
        raise HTTPException(404, exc.args[0]) from None
    except CheckpointError as exc:  # the model's own fault; the message names no paths
        reason = str(exc).replace(cfg.model_root, "<model root>")
        raise HTTPException(503, f"model {model!r} is unavailable: {reason}") from None


@router.post("/recommend", response_model=RecommendResponse)
def recommend(req: RecommendRequest, rec=Depends(deps.recommender), cfg=Depends(deps.settings)):
    model_id, results = _recommend(rec, cfg, req.model, [req.user], req.k, req.exclude_seen,
                                   req.fallback)
    return Response(orjson.dumps({"model": model_id, **results[0]}), media_type="application/json")


@router.post("/recommend/batch", response_model=BatchRecommendResponse)
def recommend_batch(req: BatchRecommendRequest, rec=Depends(deps.recommender),
                    cfg=Depends(deps.settings)):
    if len(req.users) * req.k > cfg.max_batch_items:
        raise HTTPException(422, f"users × k = {len(req.users) * req.k} is over "
                                 f"{cfg.max_batch_items}: split the batch or lower k")
    model_id, results = _recommend(rec, cfg, req.model, req.users, req.k, req.exclude_seen,
                                   req.fallback)
    return Response(orjson.dumps({"model": model_id, "results": results}),
                    media_type="application/json")
