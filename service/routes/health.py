"""Liveness and readiness: answered on the event loop, which blocking work never holds."""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from service import deps

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz():
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(
    cfg: deps.SettingsDep,
    rec: deps.RecommenderDep,
    credentials: HTTPAuthorizationCredentials | None = Depends(deps.bearer),
):
    """Readiness: the model root is readable (503 if not) and whether the job endpoints are
    enabled; which models are loaded too, unless ADASIR_PROTECT_RECOMMEND asks for the token
    and the request has none."""
    ok = os.path.isdir(cfg.model_root) and os.access(cfg.model_root, os.R_OK)
    body: dict[str, object] = {"ready": ok, "jobs_enabled": cfg.api_token is not None}
    if not cfg.protect_recommend or deps.token_ok(cfg, credentials):
        body["models_loaded"] = rec.registry.cached_ids()
    return JSONResponse(status_code=200 if ok else 503, content=body)
