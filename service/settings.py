"""Service configuration from ADASIR_* environment variables (read once, at app creation)."""

from __future__ import annotations

import os

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainer.project import PROJECT_ROOT


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ADASIR_", frozen=True, extra="ignore")

    data_root: str = os.path.join("runs", "data")
    """ADASIR_DATA_ROOT: prepared datasets live here; jobs name them relative to it."""
    model_root: str = "runs"
    """ADASIR_MODEL_ROOT: run directories (each with checkpoint/) are found under here; jobs
    write to MODEL_ROOT/jobs/<job id>."""
    ray_address: str = "http://127.0.0.1:8265"
    """ADASIR_RAY_ADDRESS: the Ray Jobs API, e.g. http://127.0.0.1:8265."""
    api_token: str | None = None
    """ADASIR_API_TOKEN: bearer token for the job endpoints. Unset ⇒ they are refused."""
    protect_recommend: bool = False
    """ADASIR_PROTECT_RECOMMEND=1: /recommend and /models need the token too."""
    public_docs: bool | None = None
    """ADASIR_PUBLIC_DOCS: whether /docs, /redoc and /openapi.json are served to anyone
    (default: yes, unless ADASIR_PROTECT_RECOMMEND is set; then no)."""
    model_cache: int = Field(4, ge=1, le=1000)
    """ADASIR_MODEL_CACHE: models kept loaded at once (least recently used is dropped)."""
    job_working_dir: str | None = PROJECT_ROOT
    """ADASIR_JOB_WORKING_DIR: uploaded as the job's working_dir (default: this project);
    'none' when the cluster's image already has the project installed."""
    job_script: str = "trainer/run.py"
    """ADASIR_JOB_SCRIPT: the training entry point a job runs (default trainer/run.py, relative
    to the uploaded working_dir; /app/trainer/run.py in the project's image)."""
    max_running_jobs: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) // 2), ge=1, le=10_000
    )
    """ADASIR_MAX_RUNNING_JOBS: jobs this service keeps pending or running at once; one more
    is a 429 with Retry-After (default: half this host's CPUs, at least 1)."""
    ann_min_items: int = Field(200_000, ge=0)
    """ADASIR_ANN_MIN_ITEMS: models with this many items or more rank users through an HNSW
    index (faiss; built on first use, cached beside the checkpoint); 0: always exact.
    Requests can still ask for `"exact": true`."""
    serve_replicas: int = Field(1, ge=1, le=1000)
    """ADASIR_SERVE_REPLICAS: Ray Serve replicas (`adasir serve --ray`); the minimum when
    autoscaling."""
    serve_max_replicas: int = Field(1, ge=1, le=1000)
    """ADASIR_SERVE_MAX_REPLICAS: above ADASIR_SERVE_REPLICAS, Serve autoscales between the
    two on ADASIR_SERVE_TARGET_ONGOING_REQUESTS per replica."""
    serve_target_ongoing_requests: float = Field(4.0, gt=0)
    serve_max_ongoing_requests: int = Field(16, ge=1)
    """ADASIR_SERVE_MAX_ONGOING_REQUESTS: requests one replica takes at once (more queue)."""
    serve_replica_cpus: float = Field(0.5, gt=0)
    """ADASIR_SERVE_REPLICA_CPUS: logical CPUs each replica reserves."""
    fold_in_slots: int | None = Field(None, ge=1, le=1000)
    """ADASIR_FOLD_IN_SLOTS: fold-in requests computed at once, the others waiting their turn
    (default: this host's CPUs); more at once only contend for the GIL (docs/service.md has
    the measurement)."""
    max_body_bytes: int = Field(1 << 20, ge=1024)
    """ADASIR_MAX_BODY_BYTES: larger request bodies get 413 before they are read (1 MiB)."""
    max_batch_items: int = Field(100_000, ge=1)
    """ADASIR_MAX_BATCH_ITEMS: users × k of one /recommend/batch (422 above it)."""
    scan_interval_s: float = Field(1.0, ge=0.0)
    """ADASIR_SCAN_INTERVAL_S: `latest` and GET /models walk the model root at most this
    often; a model named by its id is found with one stat, whatever the interval."""

    @field_validator("data_root", "model_root")
    @classmethod
    def _absolute(cls, v: str) -> str:
        return os.path.abspath(v)

    @field_validator("api_token", "job_working_dir")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return None if v is None or v == "" or v.lower() == "none" else v

    @property
    def docs_are_public(self) -> bool:
        return not self.protect_recommend if self.public_docs is None else self.public_docs

    @property
    def cache_size(self) -> int:
        return self.model_cache

    @classmethod
    def from_env(cls, env: dict | None = None) -> Settings:
        """From `env` (a dict of ADASIR_* variables) instead of the process environment."""
        if env is None:
            return cls()
        prefix = "ADASIR_"
        values = {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)}
        # A prefix no variable has: only `env` counts, not what the process happens to carry.
        return cls(_env_prefix="ADASIR_FROM_DICT_ONLY_", **values)
