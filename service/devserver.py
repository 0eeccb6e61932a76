"""A local uvicorn, or a local Ray Serve application, for tests and benchmarks: started on a
free loopback port, waited for until it answers, stopped on exit. Loopback only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

from trainer.project import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_server(env: dict, *uvicorn_args: str, startup_s: float = 60.0, **popen):
    """Yields the base URL of `uvicorn service.app:app` running with `env`."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "service.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *uvicorn_args,
        ],
        cwd=PROJECT_ROOT,
        env=env,
        **popen,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base + "/healthz", server, startup_s, 0.1, "uvicorn")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextmanager
def local_ray_serve(env: dict, startup_s: float = 240.0):
    """Yields the base URL of `adasir serve --ray` (Ray Serve on a local Ray it starts, with
    the replicas `env` asks for); the process group and its Ray are stopped on exit."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "trainer.cli", "serve", "--ray", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base + "/readyz", server, startup_s, 1.0, "Ray Serve")
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        subprocess.run(["ray", "stop", "--force"], capture_output=True, env=env, timeout=120)


def _wait_until_up(url: str, server: subprocess.Popen, within_s: float, pause_s: float, what):
    """Poll `url` until it answers 200; RuntimeError once `server` has exited or `within_s`
    has passed."""
    import httpx

    deadline = time.monotonic() + within_s
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (exit {server.poll()})")
        time.sleep(pause_s)
