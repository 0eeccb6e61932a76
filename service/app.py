"""HTTP front end: submit and watch training jobs on Ray, list models, serve top-k.

    ADASIR_API_TOKEN=secret ADASIR_RAY_ADDRESS=http://127.0.0.1:8265 uvicorn service.app:app

Environment: see service/settings.py. OpenAPI docs at /docs.
"""

from __future__ import annotations

import hmac
import logging
import os
from typing import Literal

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from service.jobs import DatasetError, JobRequest, JobService, UnknownJob
from service.registry import ModelRegistry, UnknownModel, popularity_fallback
from service.settings import Settings
from trainer.checkpoint import CheckpointError

log = logging.getLogger("adasir.service")


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("latest", min_length=1, max_length=300)
    """A model id from GET /models, or `latest` (the most recently written checkpoint)."""
    user: str = Field(..., min_length=1, max_length=1000)
    """The user's external id, as in the training data."""
    k: int = Field(10, ge=1, le=1000)
    exclude_seen: bool = True
    """Leave out the items the user interacted with in train and validation."""
    fallback: Literal["none", "popularity"] = "none"
    """For a user the model does not know: `none` → 404; `popularity` → most popular items."""


class BatchRecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("latest", min_length=1, max_length=300)
    users: list[str] = Field(..., min_length=1, max_length=1000)
    k: int = Field(10, ge=1, le=1000)
    exclude_seen: bool = True
    fallback: Literal["none", "popularity"] = "none"


class ScoredItem(BaseModel):
    item: str
    score: float


class UserRecommendations(BaseModel):
    user: str
    fallback: Literal["popularity"] | None
    """`popularity` when the model did not know the user and a fallback was asked for."""
    items: list[ScoredItem]


class RecommendResponse(UserRecommendations):
    model: str


class BatchRecommendResponse(BaseModel):
    model: str
    results: list[UserRecommendations]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    os.makedirs(settings.model_root, exist_ok=True)
    registry = ModelRegistry(settings.model_root, settings.cache_size)
    jobs = JobService(settings)
    app = FastAPI(title="AdaSIR service", version="0.1.0",
                  description="Train recommenders with AdaSIR on Ray and serve their top-k.")
    app.state.settings, app.state.registry, app.state.jobs = settings, registry, jobs
    bearer = HTTPBearer(auto_error=False)

    def check_token(credentials: HTTPAuthorizationCredentials | None) -> None:
        if settings.api_token is None:
            raise HTTPException(403, "job endpoints are disabled: no API token is configured "
                                     "(set ADASIR_API_TOKEN)")
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), settings.api_token.encode()):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        check_token(credentials)

    def recommend_guard(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if settings.protect_recommend:
            check_token(credentials)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # never a stack trace to clients
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": f"internal error ({type(exc).__name__})"})

    def load(model_id: str):
        try:
            return registry.get(model_id)
        except UnknownModel as exc:
            raise HTTPException(404, exc.args[0]) from None
        except CheckpointError as exc:
            raise HTTPException(503, f"model {model_id!r} is unavailable: {exc}") from None

    def answer(model, users: list[str], k: int, exclude_seen: bool, fallback: str) -> list[dict]:
        known = [u for u in users if u in model.user_index]
        unknown = [u for u in users if u not in model.user_index]
        if unknown and fallback == "none":
            raise HTTPException(404, f"unknown user(s) for model {model.model_id!r}: {unknown[:20]}")
        results = {}
        if known:
            scores, items = model.recommend([model.user_index[u] for u in known], k, exclude_seen)
            for row, user in enumerate(known):
                keep = scores[row] > float("-inf")  # a user who has seen nearly everything
                results[user] = {"user": user, "fallback": None, "items": [
                    {"item": model.item_ids[i], "score": float(s)}
                    for s, i in zip(scores[row][keep].tolist(), items[row][keep].tolist())]}
        if unknown:
            pscores, pitems = popularity_fallback(model, k)
            for user in unknown:
                results[user] = {"user": user, "fallback": "popularity", "items": [
                    {"item": model.item_ids[i], "score": float(s)} for s, i in zip(pscores, pitems)]}
        return [results[u] for u in users]

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        ok = os.path.isdir(settings.model_root) and os.access(settings.model_root, os.R_OK)
        body = {"ready": ok, "model_root": settings.model_root, "models_loaded": registry.cached_ids(),
                "jobs_enabled": settings.api_token is not None}
        return JSONResponse(status_code=200 if ok else 503, content=body)

    @app.get("/models")
    def list_models(_=Depends(recommend_guard)):
        return {"models": registry.list()}

    # The hot path: async (no threadpool hop; the scoring is ~0.5 ms on a Gowalla-size model)
    # and serialised with orjson straight to bytes, skipping FastAPI's jsonable_encoder.
    @app.post("/recommend", response_model=RecommendResponse)
    async def recommend(req: RecommendRequest, _=Depends(recommend_guard)):
        model = load(req.model)
        result = answer(model, [req.user], req.k, req.exclude_seen, req.fallback)[0]
        return Response(orjson.dumps({"model": model.model_id, **result}), media_type="application/json")

    @app.post("/recommend/batch", response_model=BatchRecommendResponse)
    async def recommend_batch(req: BatchRecommendRequest, _=Depends(recommend_guard)):
        model = load(req.model)
        body = {"model": model.model_id,
                "results": answer(model, req.users, req.k, req.exclude_seen, req.fallback)}
        return Response(orjson.dumps(body), media_type="application/json")

    def on_cluster(call, *args):
        """Run a Jobs API call; an unreachable cluster or unknown job is a clear HTTP error."""
        import requests

        try:
            return call(*args)
        except UnknownJob as exc:
            raise HTTPException(404, f"unknown job {exc.args[0]!r}") from None
        except (ConnectionError, requests.exceptions.RequestException) as exc:
            raise HTTPException(503, f"Ray cluster at {settings.ray_address} is unreachable "
                                     f"({type(exc).__name__})") from None

    @app.post("/jobs", status_code=201, dependencies=[Depends(require_token)])
    def submit_job(req: JobRequest):
        try:
            job_id = on_cluster(jobs.submit, req)
        except DatasetError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"id": job_id, "model": f"jobs/{job_id}"}

    @app.get("/jobs", dependencies=[Depends(require_token)])
    def list_jobs():
        return {"jobs": on_cluster(jobs.list)}

    @app.get("/jobs/{job_id}", dependencies=[Depends(require_token)])
    def get_job(job_id: str):
        return on_cluster(jobs.get, job_id)

    @app.delete("/jobs/{job_id}", dependencies=[Depends(require_token)])
    def stop_job(job_id: str):
        return on_cluster(jobs.stop, job_id)

    return app


def __getattr__(name: str):
    """`uvicorn service.app:app` builds the app from the environment on first access."""
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)
