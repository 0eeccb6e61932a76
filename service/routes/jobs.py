"""Training jobs on the Ray cluster: submit, list, inspect, stop (bearer token required)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from service import deps
from service.jobs import DatasetError, JobRequest, TooManyJobs, UnknownJob

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Depends(deps.require_token)])


def _on_cluster(cfg, call, *args):
    """Run a Jobs API call; an unknown job, an unreachable cluster or one that refuses the
    service's credentials is a one-line HTTP error (a 503 never names the cluster's URL)."""
    import requests

    try:
        return call(*args)
    except UnknownJob as exc:
        raise HTTPException(404, f"unknown job {exc.args[0]!r}") from None
    except (ConnectionError, requests.exceptions.RequestException) as exc:
        raise HTTPException(
            503,
            f"the Ray cluster is unreachable ({type(exc).__name__}); check "
            "ADASIR_RAY_ADDRESS and that the cluster is up",
        ) from None
    except Exception as exc:
        if "Authentication" not in type(exc).__name__:
            raise
        raise HTTPException(
            503,
            "the Ray cluster refused the service's credentials: start the service with "
            "the RAY_AUTH_MODE the cluster uses (and, for token mode, its token)",
        ) from None


@router.post("", status_code=201)
def submit_job(req: JobRequest, jobs: deps.JobsDep, cfg: deps.SettingsDep):
    """Submit a training job to the Ray cluster: a dataset under the data root and TrainConfig
    fields over a preset. Returns the job id and the model id its checkpoint will have."""
    try:
        job_id = _on_cluster(cfg, jobs.submit, req)
    except DatasetError as exc:
        raise HTTPException(422, str(exc)) from None
    except TooManyJobs as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": "30"}) from None
    return {"id": job_id, "model": f"jobs/{job_id}"}


@router.get("")
def list_jobs(jobs: deps.JobsDep, cfg: deps.SettingsDep):
    """Every job this service submitted, newest first."""
    return {"jobs": _on_cluster(cfg, jobs.list)}


@router.get("/{job_id}")
def get_job(job_id: str, jobs: deps.JobsDep, cfg: deps.SettingsDep):
    """One job: its status, the latest epoch's metrics and the tail of its log."""
    return _on_cluster(cfg, jobs.get, job_id)


@router.delete("/{job_id}")
def stop_job(job_id: str, jobs: deps.JobsDep, cfg: deps.SettingsDep):
    """Stop a job (its run keeps its last checkpoint)."""
    return _on_cluster(cfg, jobs.stop, job_id)
