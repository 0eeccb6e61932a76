"""HTTP front end: submit and watch training jobs on Ray, list models, serve top-k.

    ADASIR_API_TOKEN=secret ADASIR_RAY_ADDRESS=http://127.0.0.1:8265 uvicorn service.app:app

Environment: see service/settings.py. OpenAPI docs at /docs. Routes live in service/routes/
(one module per resource), their dependencies in service/deps.py.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.jobs import JobService
from service.limits import BodySizeLimit, terse_validation_error
from service.model_store import ModelRegistry
from service.recommender import Recommender
from service.routes import health, jobs, models, recommend
from service.settings import Settings

log = logging.getLogger("adasir.service")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    os.makedirs(settings.model_root, exist_ok=True)
    docs: dict[str, Any] = (
        {}
        if settings.docs_are_public
        else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    )
    app = FastAPI(
        **docs,
        title="AdaSIR service",
        version="0.1.0",
        description="Train recommenders with AdaSIR on Ray and serve their top-k.",
    )
    registry = ModelRegistry(
        settings.model_root, settings.cache_size, settings.scan_interval_s, settings.ann_min_items
    )
    app.state.settings, app.state.registry = settings, registry
    app.state.recommender, app.state.jobs = Recommender(registry), JobService(settings)
    for module in (health, models, recommend, jobs):
        app.include_router(module.router)
    app.add_exception_handler(RequestValidationError, terse_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app


async def _unexpected(request: Request, exc: Exception):  # never a stack trace to clients
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(
        status_code=500, content={"detail": f"internal error ({type(exc).__name__})"}
    )


def __getattr__(name: str):
    """`uvicorn service.app:app` builds the app from the environment on first access."""
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
