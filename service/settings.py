"""Service configuration from environment variables (read once, at app creation)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    data_root: str
    """ADASIR_DATA_ROOT: prepared datasets live here; jobs name them relative to it."""
    model_root: str
    """ADASIR_MODEL_ROOT: run directories (each with checkpoint/) are found under here; jobs
    write to MODEL_ROOT/jobs/<job id>."""
    ray_address: str
    """ADASIR_RAY_ADDRESS: the Ray Jobs API, e.g. http://127.0.0.1:8265."""
    api_token: str | None
    """ADASIR_API_TOKEN: bearer token for the job endpoints. Unset ⇒ they are refused."""
    protect_recommend: bool
    """ADASIR_PROTECT_RECOMMEND=1: /recommend needs the token too."""
    cache_size: int
    """ADASIR_MODEL_CACHE: models kept loaded at once (least recently used is dropped)."""
    job_working_dir: str | None
    """ADASIR_JOB_WORKING_DIR: uploaded as the job's working_dir (default: this project);
    'none' when the cluster's image already has the project installed."""

    job_script: str
    """ADASIR_JOB_SCRIPT: the training entry point a job runs (default trainer/run.py, relative
    to the uploaded working_dir; /app/trainer/run.py in the project's image)."""

    @classmethod
    def from_env(cls, env: dict | None = None) -> Settings:
        env = os.environ if env is None else env
        project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        working_dir = env.get("ADASIR_JOB_WORKING_DIR", project)
        return cls(
            data_root=os.path.abspath(env.get("ADASIR_DATA_ROOT", os.path.join("runs", "data"))),
            model_root=os.path.abspath(env.get("ADASIR_MODEL_ROOT", "runs")),
            ray_address=env.get("ADASIR_RAY_ADDRESS", "http://127.0.0.1:8265"),
            api_token=env.get("ADASIR_API_TOKEN") or None,
            protect_recommend=env.get("ADASIR_PROTECT_RECOMMEND", "0") in ("1", "true", "yes"),
            cache_size=max(1, int(env.get("ADASIR_MODEL_CACHE", "4"))),
            job_working_dir=None if working_dir.lower() == "none" else working_dir,
            job_script=env.get("ADASIR_JOB_SCRIPT", "trainer/run.py"),
        )
