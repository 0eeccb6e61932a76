"""What the routers depend on: settings, the token check, the model registry, the jobs, as
typed `Annotated` aliases (SettingsDep, RecommenderDep, JobsDep, FoldInLimiterDep).

Every dependency here is `async def`: none blocks, and FastAPI runs a plain `def` dependency
in its thread pool, a hop per dependency per request that cost more than the lookup."""

from __future__ import annotations

import hmac
import os
from typing import Annotated

import anyio
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.jobs import JobService
from service.recommender import Recommender
from service.settings import Settings

bearer = HTTPBearer(auto_error=False)


async def settings(request: Request) -> Settings:
    return request.app.state.settings


async def recommender(request: Request) -> Recommender:
    return request.app.state.recommender


async def jobs(request: Request) -> JobService:
    return request.app.state.jobs


def _check_token(cfg: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    if cfg.api_token is None:
        raise HTTPException(
            403, "job endpoints are disabled: no API token is configured (set ADASIR_API_TOKEN)"
        )
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), cfg.api_token.encode()):  # constant time
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


async def require_token(
    cfg: Settings = Depends(settings),
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> None:
    _check_token(cfg, credentials)


def token_ok(cfg: Settings, credentials: HTTPAuthorizationCredentials | None) -> bool:
    """Whether the request carries the configured token (never, when none is configured)."""
    try:
        _check_token(cfg, credentials)
    except HTTPException:
        return False
    return True


async def recommend_guard(
    cfg: Settings = Depends(settings),
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> None:
    """The token, where ADASIR_PROTECT_RECOMMEND asks for it on the read endpoints."""
    if cfg.protect_recommend:
        _check_token(cfg, credentials)


async def fold_in_limiter(request: Request) -> anyio.CapacityLimiter:
    """The app's one limiter of concurrent fold-ins (made in the event loop, on first use)."""
    state = request.app.state
    if getattr(state, "fold_in_limiter", None) is None:
        cfg: Settings = state.settings
        state.fold_in_limiter = anyio.CapacityLimiter(cfg.fold_in_slots or os.cpu_count() or 1)
    return state.fold_in_limiter


SettingsDep = Annotated[Settings, Depends(settings)]
FoldInLimiterDep = Annotated[anyio.CapacityLimiter, Depends(fold_in_limiter)]
RecommenderDep = Annotated[Recommender, Depends(recommender)]
JobsDep = Annotated[JobService, Depends(jobs)]
