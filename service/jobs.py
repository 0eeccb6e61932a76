"""Training jobs on a Ray cluster through the Ray Jobs API."""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import shlex
import threading
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.names import is_safe_name
from trainer.core.config import TrainConfig
from trainer.core.presets import PresetName, build_config
from trainer.project import PROJECT_ROOT


class DatasetError(ValueError):
    """A dataset reference that is not a prepared dataset inside the data root."""


def resolve_dataset(data_root: str, name: str) -> str:
    """The dataset's directory, confined to the data root: no absolute paths, no `..`, no
    symlink that leads outside, and it must be a prepared dataset."""
    if not is_safe_name(name):
        raise DatasetError(
            f"dataset {name!r}: use a name relative to the data root "
            "(letters, digits, . _ - and /; no '..', no absolute path)"
        )
    root = os.path.realpath(data_root)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root:
        raise DatasetError(f"dataset {name!r} resolves outside the data root")
    if not os.path.isfile(os.path.join(path, "manifest.json")):
        raise DatasetError(f"dataset {name!r} is not a prepared dataset under the data root")
    return path


class JobRequest(BaseModel):
    """A training job: where it runs and the TrainConfig fields it trains with (over their
    preset) — the same schema as `adasir train --config` and Tune's configs.
    Unknown fields are rejected at every level, when the job is submitted."""

    model_config = ConfigDict(extra="forbid", strict=True)

    dataset: str = Field(..., min_length=1, max_length=200)
    """Prepared dataset, relative to the data root."""
    workers: int = Field(0, ge=0, le=1024)
    """0: train inside the job's driver process; N ≥ 1: Ray Train with N workers."""
    gpu: bool = False
    """Ray: each worker takes one GPU."""
    checkpoint_every: int = Field(0, ge=0)
    """Also checkpoint every N epochs (0: only at the end)."""
    mlflow: bool = False
    """Track the job in MLflow, in the store beside the jobs' directories
    (MODEL_ROOT/jobs/mlflow.db; `adasir train --mlflow`)."""
    preset: PresetName | None = None
    """Another way to write `train.preset` (`recommended` unless named; `paper`); naming two
    different ones is refused."""
    train: dict[str, Any] = {}
    """TrainConfig fields (preset, model, loss, sampler, …); a whole TrainConfig is taken as
    it is."""

    @field_validator("train", mode="before")
    @classmethod
    def _whole_config_as_dict(cls, v):
        return v.model_dump(mode="json") if isinstance(v, TrainConfig) else v

    @model_validator(mode="after")
    def _train_is_valid(self):
        self.config()  # refuse a bad option now (422), not when the job runs
        return self

    def config(self) -> TrainConfig:
        """The TrainConfig the job trains with (before it is fitted to the dataset's size)."""
        return build_config(self.preset, self.train)

    def config_fields(self) -> dict[str, Any]:
        """`train` with the preset in it: what the job's command line passes to --config."""
        return {**self.train, "preset": self.preset} if self.preset else dict(self.train)

    def command(self, data_dir: str, out_dir: str, script: str = "trainer/run.py") -> list[str]:
        args = [
            "python",
            script,
            "--data",
            data_dir,
            "--out",
            out_dir,
            "--workers",
            str(self.workers),
            "--checkpoint-every",
            str(self.checkpoint_every),
            "--config",
            json.dumps(self.config_fields()),
        ]
        return args + (["--gpu"] if self.gpu else []) + (["--mlflow"] if self.mlflow else [])


class UnknownJob(KeyError):
    pass


class TooManyJobs(RuntimeError):
    """ADASIR_MAX_RUNNING_JOBS jobs are pending or running already."""


ACTIVE = ("PENDING", "RUNNING")

_OTHER_PATH = re.compile(r"(?<![\w<>/.:-])/(?:[\w.\-]+/)+[\w.\-]*")
"""An absolute path on the host, not one that a root's name already replaced, nor a URL's
or a ratio's slash."""


class JobService:
    """Submit, list, inspect and stop jobs; a job writes to MODEL_ROOT/jobs/<job id>."""

    def __init__(self, settings):
        self.settings = settings
        self._client = None
        self._submit_lock = threading.Lock()

    @property
    def client(self):
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.settings.ray_address)
        return self._client

    @property
    def store(self) -> str:
        """This service's job store: a digest of its model root. Jobs are tagged with it,
        and a service sees only the jobs of its own store, not every job another service
        submitted to the same cluster."""
        root = os.path.realpath(self.settings.model_root)
        return hashlib.sha256(root.encode()).hexdigest()[:16]

    def _ours(self, info) -> bool:
        meta = info.metadata or {}
        return meta.get("adasir") == "1" and meta.get("store") == self.store

    def out_dir(self, job_id: str) -> str:
        return os.path.join(self.settings.model_root, "jobs", job_id)

    def submit(self, request: JobRequest) -> str:
        """Submit the job, or raise TooManyJobs when the limit of active jobs is reached (the
        count and the submission happen under one lock, so concurrent requests cannot both
        take the last place)."""
        data_dir = resolve_dataset(self.settings.data_root, request.dataset)
        with self._submit_lock:
            active = sum(1 for j in self.list() if j["status"] in ACTIVE)
            if active >= self.settings.max_running_jobs:
                raise TooManyJobs(
                    f"{active} jobs are pending or running, the limit "
                    f"(ADASIR_MAX_RUNNING_JOBS) is {self.settings.max_running_jobs}; "
                    "retry when one has finished"
                )
            return self._submit(request, data_dir)

    def _submit(self, request: JobRequest, data_dir: str) -> str:
        job_id = f"adasir-{uuid.uuid4().hex[:12]}"
        out = self.out_dir(job_id)  # made by the job itself: a refused job leaves nothing
        runtime_env: dict = {}
        if os.environ.get("RAY_AUTH_MODE"):  # the job's own Ray client needs the same mode
            runtime_env["env_vars"] = {"RAY_AUTH_MODE": os.environ["RAY_AUTH_MODE"]}
        if self.settings.job_working_dir:
            runtime_env["working_dir"] = self.settings.job_working_dir
            runtime_env["excludes"] = [
                "runs/",
                ".git/",
                "benchmarks/results/",
                "benchmarks/reports/",
                "*.egg-info/",
            ]
        self.client.submit_job(
            entrypoint=shlex.join(request.command(data_dir, out, self.settings.job_script)),
            submission_id=job_id,
            runtime_env=runtime_env,
            metadata={"adasir": "1", "store": self.store, "request": request.model_dump_json()},
        )
        return job_id

    def _info(self, job_id: str):
        """The job's info; a job this service did not submit is unknown, as in the listing
        (it is neither shown nor stopped)."""
        try:
            info = self.client.get_job_info(job_id)
        except RuntimeError as exc:  # the client's way of saying 404
            if "does not exist" in str(exc) or "404" in str(exc):
                raise UnknownJob(job_id) from None
            raise
        if not self._ours(info):
            raise UnknownJob(job_id)
        return info

    def summary(self, info) -> dict:
        job_id = info.submission_id
        return {
            "id": job_id,
            "status": str(info.status.value if hasattr(info.status, "value") else info.status),
            "message": self.redact_message(info.message),
            "request": json.loads((info.metadata or {}).get("request", "{}")),
            "start_time": info.start_time,
            "end_time": info.end_time,
            "model": f"jobs/{job_id}",
        }

    def list(self) -> list[dict]:
        jobs = [j for j in self.client.list_jobs() if self._ours(j)]
        return [
            self.summary(j) for j in sorted(jobs, key=lambda j: j.start_time or 0, reverse=True)
        ]

    def get(self, job_id: str, log_lines: int = 40) -> dict:
        info = self._info(job_id)
        out = self.summary(info)
        metrics_path = os.path.join(self.out_dir(job_id), "metrics.json")
        epochs = []
        if os.path.isfile(metrics_path):
            try:
                with open(metrics_path) as fh:
                    epochs = json.load(fh).get("epochs", [])
            except ValueError:
                epochs = []  # being rewritten; the next poll reads it
        out["latest_epoch"] = epochs[-1] if epochs else None
        out["epochs_done"] = len(epochs)
        logs = self.client.get_job_logs(job_id) or ""
        out["log_tail"] = self.redact_lines(logs.splitlines())[-log_lines:]
        return out

    def redact(self, text: str) -> str:
        """`text` with the data, model and project roots replaced by their names, and any
        other absolute path of two or more parts (the Ray session's, a home directory) by
        <path>."""
        for root, name in (
            (self.settings.model_root, "<model root>"),
            (self.settings.data_root, "<data root>"),
            (PROJECT_ROOT, "<project>"),
        ):
            text = text.replace(root, name)
        return _OTHER_PATH.sub("<path>", text)

    def redact_message(self, message: str | None) -> str | None:
        """Ray's status message: its last line that is not a traceback frame, redacted."""
        kept = self.redact_lines((message or "").splitlines())
        return kept[-1] if kept else message and self.redact(message)

    def redact_lines(self, lines: builtins.list[str]) -> builtins.list[str]:
        """Log lines without filesystem roots and without traceback frames (a failed job
        keeps its last line, the error itself)."""
        kept, in_traceback = [], False
        for line in lines:
            if line.startswith("Traceback (most recent call last)"):
                in_traceback = True
                continue
            if in_traceback and (line.startswith(" ") or not line.strip()):
                continue
            in_traceback = False
            kept.append(self.redact(line))
        return kept

    def stop(self, job_id: str) -> dict:
        self._info(job_id)
        stopped = self.client.stop_job(job_id)
        return {"id": job_id, "stop_requested": bool(stopped)}
