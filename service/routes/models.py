"""GET /models: what the registry finds under the model root (no filesystem paths)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service import deps

router = APIRouter(tags=["models"], dependencies=[Depends(deps.recommend_guard)])


@router.get("/models")
def list_models(rec: deps.RecommenderDep):  # sync: the listing reads files
    """Every model under the model root: its id, dataset, config and test metrics."""
    return {"models": rec.registry.list()}
