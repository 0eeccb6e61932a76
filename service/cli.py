"""`adasir serve`: the HTTP service under uvicorn (the default) or as a Ray Serve application
(`--ray`). Settings come from ADASIR_* variables (docs/service.md)."""

from __future__ import annotations

import argparse
import signal
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="adasir serve",
        description="Start the HTTP service; it is configured by ADASIR_* variables "
        "(docs/service.md).",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    ap.add_argument(
        "--ray",
        action="store_true",
        help="run as a Ray Serve application on $RAY_ADDRESS, the cluster on this "
        "host, or a local Ray (replicas: ADASIR_SERVE_*)",
    )
    args = ap.parse_args(argv)
    if args.ray:
        return serve_on_ray(args.host, args.port)
    import uvicorn

    uvicorn.run("service.app:app", host=args.host, port=args.port, workers=args.workers)
    return 0


def serve_on_ray(host: str, port: int) -> int:
    """Deploy the application with Serve and keep it up until SIGINT or SIGTERM."""
    import ray
    from ray import serve

    from service.serve import build_application, deployment_options
    from service.settings import Settings
    from trainer.distributed.ray_train import connect

    settings = Settings.from_env()
    connect(None)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_application(settings), name="adasir", route_prefix="/")
    options = deployment_options(settings)
    scale = options.get("autoscaling_config")
    replicas = (
        f"{scale['min_replicas']}–{scale['max_replicas']} replicas (autoscaling)"
        if scale
        else f"{options['num_replicas']} replica(s)"
    )
    print(f"serving on http://{host}:{port} through Ray Serve, {replicas}", flush=True)
    stop = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.append(True))
    while not stop:
        time.sleep(0.2)
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
