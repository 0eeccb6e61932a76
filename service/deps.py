"""What the routers depend on: settings, the token check, the model registry, the jobs."""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.jobs import JobService
from service.recommender import Recommender
from service.settings import Settings

bearer = HTTPBearer(auto_error=False)


def settings(request: Request) -> Settings:
    return request.app.state.settings


def recommender(request: Request) -> Recommender:
    return request.app.state.recommender


def jobs(request: Request) -> JobService:
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


def require_token(
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


def recommend_guard(
    cfg: Settings = Depends(settings),
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> None:
    """The token, where ADASIR_PROTECT_RECOMMEND asks for it on the read endpoints."""
    if cfg.protect_recommend:
        _check_token(cfg, credentials)
