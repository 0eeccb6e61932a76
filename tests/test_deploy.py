"""deploy/: the manifests parse, name the project's images and entry points, and fit."""

from __future__ import annotations

import os
import re
import shlex
import tomllib

import pytest
import yaml
from conftest import ROOT

from trainer.cli.train import build_parser

DEPLOY = os.path.join(ROOT, "deploy")


def _docs(name):
    with open(os.path.join(DEPLOY, name)) as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


def _project():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        return tomllib.load(fh)["project"]


def _pinned_ray() -> str:
    spec = next(d for d in _project()["dependencies"] if d.startswith("ray["))
    return re.search(r"==([\d.]+)", spec).group(1).rstrip(".")


def _images(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "image":
                yield v
            else:
                yield from _images(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _images(v)


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_images_build_on_the_pinned_ray(name):
    text = open(os.path.join(DEPLOY, "docker", name)).read()
    base = re.search(r"^FROM rayproject/ray:([\d.]+)-py311-(cpu|gpu)$", text, re.M)
    assert base and base.group(1).startswith(_pinned_ray()), "base image must match pyproject's Ray"
    assert "torch==2.13.0" in text and "pip install --no-cache-dir -e ." in text
    for path in re.findall(r"^COPY --chown=\S+ (\S+) ", text, re.M):
        for p in path.split():
            assert os.path.exists(os.path.join(ROOT, p)), p


def test_every_manifest_uses_the_project_image():
    version = _project()["version"]
    files = [
        "kuberay/raycluster.yaml",
        "kuberay/rayjob.yaml",
        "kuberay/service.yaml",
        "cluster-launcher.yaml",
    ]
    images = {img for f in files for d in _docs(f) for img in _images(d)}
    assert images == {f"adasir-service:{version}", f"adasir-service:{version}-cuda"}


def test_raycluster_and_rayjob_fit_together():
    (cluster,) = _docs("kuberay/raycluster.yaml")
    (job,) = _docs("kuberay/rayjob.yaml")
    assert cluster["apiVersion"] == job["apiVersion"] == "ray.io/v1"
    assert cluster["kind"] == "RayCluster" and job["kind"] == "RayJob"
    assert cluster["spec"]["rayVersion"].startswith(_pinned_ray())
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    # The entry point is the project's run.py, and its flags parse.
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["python", "/app/trainer/run.py"]
    args = build_parser().parse_args(argv[2:])
    assert args.storage_path.startswith("/shared/") and args.out.startswith("/shared/")
    # Workers take 1 CPU each: the CPU worker group must hold them.
    cpu_group = next(
        g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "cpu-workers"
    )
    cpus = int(cpu_group["rayStartParams"]["num-cpus"]) * cpu_group["replicas"]
    assert args.workers <= cpus
    for group in cluster["spec"]["workerGroupSpecs"]:
        container = group["template"]["spec"]["containers"][0]
        assert int(container["resources"]["requests"]["cpu"]) >= int(
            group["rayStartParams"]["num-cpus"]
        )
        if "num-gpus" in group["rayStartParams"]:
            assert (
                container["resources"]["limits"]["nvidia.com/gpu"]
                == group["rayStartParams"]["num-gpus"]
            )
            assert container["image"].endswith("-cuda")
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_front_end_points_at_the_cluster_and_shared_storage():
    deployment, service = _docs("kuberay/service.yaml")
    (cluster,) = _docs("kuberay/raycluster.yaml")
    (pvc,) = _docs("kuberay/storage.yaml")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["uvicorn", "service.app:app"]
    env = {e["name"]: e for e in container["env"]}
    assert (
        env["ADASIR_RAY_ADDRESS"]["value"] == f"http://{cluster['metadata']['name']}-head-svc:8265"
    )
    assert env["ADASIR_API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "adasir-api"
    assert env["ADASIR_JOB_SCRIPT"]["value"] == "/app/trainer/run.py"
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
    }
    assert claims == {pvc["metadata"]["name"]} and "ReadWriteMany" in pvc["spec"]["accessModes"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_cluster_launcher():
    (launcher,) = _docs("cluster-launcher.yaml")
    assert launcher["provider"]["type"] == "local"
    assert len(launcher["provider"]["worker_ips"]) >= launcher["min_workers"]
    assert any("ray start --head" in c for c in launcher["head_start_ray_commands"])
    assert "/shared:/shared" in " ".join(launcher["docker"]["run_options"])


def test_rayservice_runs_the_serve_application_with_known_settings():
    """deploy/kuberay/rayservice.yaml: the project's image and Ray version, an import path
    that resolves to the bound Serve application, and only settings the service reads."""
    from service.settings import Settings

    (doc,) = _docs("kuberay/rayservice.yaml")
    assert doc["kind"] == "RayService"
    assert doc["spec"]["rayClusterConfig"]["rayVersion"].startswith(_pinned_ray())
    assert set(_images(doc)) == {f"adasir-service:{_project()['version']}"}
    (app,) = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"]
    module, attr = app["import_path"].split(":")
    import importlib

    from ray.serve import Application

    assert isinstance(getattr(importlib.import_module(module), attr), Application)
    env = app["runtime_env"]["env_vars"]
    fields = {f"ADASIR_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    Settings.from_env(env)  # the values validate
