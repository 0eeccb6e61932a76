"""The service as a Ray Serve application: the same FastAPI app (service.app.create_app),
built on each replica from the ADASIR_* settings, behind Serve's HTTP proxy, with a fixed
number of replicas or autoscaling from settings.

    adasir serve --ray --port 8000          # on $RAY_ADDRESS, the host's cluster, or a local Ray
    serve run service.serve:app             # Ray's own CLI; RayService: deploy/kuberay/

Each replica holds its own model cache and picks up a newer checkpoint on the next request,
as the uvicorn service does, so replacing a model drops no request. uvicorn alone
(`adasir serve`) stays the default; this is for scaling out on a Ray cluster.
"""

from __future__ import annotations

import os

from ray import serve

from service.settings import Settings


def _build_app():
    """On each replica: the FastAPI app from the environment Serve gave the replica."""
    from service.app import create_app

    return create_app()


@serve.ingress(_build_app)
class AdasirService:
    """The ingress deployment: every route of the FastAPI app."""


def replica_env() -> dict[str, str]:
    """What a replica needs from this process's environment: the ADASIR_* settings and the
    Ray auth mode the job endpoints use."""
    keep = ("ADASIR_", "RAY_AUTH_MODE")
    return {k: v for k, v in os.environ.items() if k.startswith(keep)}


def deployment_options(settings: Settings) -> dict:
    """serve.deployment options from the settings: replicas or an autoscaling range."""
    options: dict = {
        "name": "adasir",
        "ray_actor_options": {
            "num_cpus": settings.serve_replica_cpus,
            "runtime_env": {"env_vars": replica_env()},
        },
        "max_ongoing_requests": settings.serve_max_ongoing_requests,
    }
    if settings.serve_max_replicas > settings.serve_replicas:
        options["autoscaling_config"] = {
            "min_replicas": settings.serve_replicas,
            "max_replicas": settings.serve_max_replicas,
            "target_ongoing_requests": settings.serve_target_ongoing_requests,
        }
    else:
        options["num_replicas"] = settings.serve_replicas
    return options


def build_application(settings: Settings | None = None):
    """The bound application (what `serve.run` and a RayService's import_path take)."""
    settings = settings or Settings.from_env()
    return serve.deployment(AdasirService, **deployment_options(settings)).bind()


def __getattr__(name: str):
    """`service.serve:app` (Serve's CLI, a RayService) builds the application on first use."""
    if name == "app":
        globals()["app"] = build_application()
        return globals()["app"]
    raise AttributeError(name)
