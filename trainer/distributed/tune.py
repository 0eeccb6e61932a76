"""Ray Tune searches described in YAML (tune_configs/), in the Train V2 pattern.

    python trainer/tune.py tune_configs/tiny.yaml
    ray job submit --working-dir . -- python trainer/tune.py tune_configs/paper_l2_grid.yaml

Each trial is a driver function that builds and fits a TorchTrainer running the project's
training function (trainer/distributed/ray_worker.train_worker) and forwards its reports to Tune with
TuneReportCallback. Trials are scheduled on validation NDCG@50 (never a test metric). Output
in the config's `output` directory: results.csv and results.md (every trial's config,
validation and test metrics and time), best.json, and the best trial's checkpoint copied to
`output/best/checkpoint`, where the service finds it (model id `<output relative to the
model root>/best`). The YAML is validated completely before Ray starts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
import uuid
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pools.config import DEFAULT_SAMPLER
from pools.registry import options_of, registered
from trainer.core.config import TrainConfig
from trainer.core.presets import PresetName, build_config, sampler_options
from trainer.data.dataset import PreparedData
from trainer.data.formats import DataError
from trainer.errors import one_line
from trainer.outputs.atomic import replace_directory

METRIC = "valid_ndcg@50"


class SearchSpace(BaseModel):
    """Exactly one of: grid (every value), choice (sampled), uniform / loguniform [low, high]."""

    model_config = ConfigDict(extra="forbid")

    grid: list[Any] | None = None
    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SearchSpace:
        given = [
            k for k in ("grid", "choice", "uniform", "loguniform") if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError("give exactly one of grid, choice, uniform, loguniform")
        for k in ("grid", "choice"):
            if getattr(self, k) is not None and not getattr(self, k):
                raise ValueError(f"{k} needs at least one value")
        for k in ("uniform", "loguniform"):
            rng = getattr(self, k)
            if rng is not None and not rng[0] < rng[1]:
                raise ValueError(f"{k} needs low < high")
            if k == "loguniform" and rng is not None and rng[0] <= 0:
                raise ValueError("loguniform needs low > 0")
        return self

    def candidates(self) -> list[Any]:
        """Values that must each make a valid config (range ends for ranges)."""
        return list(self.grid or self.choice or self.uniform or self.loguniform or ())

    def to_tune(self):
        from ray import tune

        if self.grid is not None:
            return tune.grid_search(self.grid)
        if self.choice is not None:
            return tune.choice(self.choice)
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        return tune.loguniform(*self.loguniform)


class Scheduler(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1)
    """ASHA: reports (epochs) before a trial can be stopped."""
    reduction_factor: float = Field(2, gt=1)


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workers: int = Field(1, ge=1)
    """Ray Train workers per trial (users sharded across them)."""
    cpus_per_worker: float = Field(1, gt=0)
    gpu: bool = False


class TuneSpec(BaseModel):
    """One search. `fixed` and the keys of `search` are TrainConfig fields; sampler options
    are written `sampler.<field>` (e.g. sampler.pool_size for |R|). When the search varies
    `sampler.name`, a fixed sampler option applies to the trials whose sampler takes it (the
    paper's grid fixes |K| = |R| = 200 for the AdaSIR trials among nine samplers); `check`
    refuses one that no searched sampler takes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    preset: PresetName | None = None
    """Another way to write `fixed.preset`: what every trial starts from before `fixed` and
    `search` (trainer/core/presets.py; `recommended` unless named)."""
    dataset: str
    """A prepared dataset directory (relative paths are relative to the working directory)."""
    fixed: dict[str, Any] = {}
    search: dict[str, SearchSpace]
    num_samples: int = Field(1, ge=1)
    """Repetitions of the grid (or samples of the random spaces)."""
    scheduler: Scheduler = Scheduler()
    resources: Resources = Resources()
    max_concurrent_trials: int = Field(1, ge=1)
    output: str | None = None
    """Default: runs/tune/<name>."""
    mlflow: str | None = None
    """Track every trial in MLflow (Ray Tune's MLflowLoggerCallback: a run per trial with its
    searched options and reported metrics) at this URI; "" : the embedded default,
    sqlite:///<output's parent>/mlflow.db. The experiment is the search's name."""
    tie: dict[str, str] = {}
    """target: source — the target option takes the source's value in every trial, e.g.
    `sampler.num_candidates: sampler.pool_size` keeps |K| = |R| as in the paper's Fig. 4."""

    def train_config(self, overrides: dict[str, Any]) -> TrainConfig:
        """fixed ⊕ overrides as a validated TrainConfig (dotted keys go into `sampler`)."""
        flat: dict[str, Any] = {}
        sampler: dict[str, Any] = sampler_options(self.fixed.get("sampler", {}))
        merged = {**{k: v for k, v in self.fixed.items() if k != "sampler"}, **overrides}
        for target, source in self.tie.items():
            if source in merged:
                merged[target] = merged[source]
            elif source.startswith("sampler.") and source.split(".", 1)[1] in sampler:
                merged[target] = sampler[source.split(".", 1)[1]]
        for key, value in merged.items():
            if key.startswith("sampler."):
                sampler[key.split(".", 1)[1]] = value
            else:
                flat[key] = value
        name = sampler.get("name", DEFAULT_SAMPLER)
        if "sampler.name" in self.search and name in registered():  # else validation refuses it
            takes = options_of(name).model_fields
            searched = {k.split(".", 1)[1] for k in merged if k.startswith("sampler.")}
            sampler = {k: v for k, v in sampler.items() if k in takes or k in searched}
        return build_config(self.preset, {**flat, "sampler": sampler} if sampler else flat)

    def check(self) -> None:
        """Every fixed option and every candidate value must form a valid TrainConfig."""
        self.train_config({})
        if "sampler.name" in self.search:
            names = self.search["sampler.name"].candidates()
            for option in sampler_options(self.fixed.get("sampler", {})):
                if not any(
                    option in options_of(n).model_fields for n in names if n in registered()
                ):
                    raise ValueError(
                        f"fixed sampler option {option!r} is taken by none of the "
                        f"searched samplers {names}"
                    )
        for key, space in self.search.items():
            for value in space.candidates():
                try:
                    self.train_config({key: value})
                except ValidationError as exc:
                    raise ValueError(
                        f"search.{key} = {value!r} is not a valid option: "
                        f"{exc.errors()[0]['msg']} ({'.'.join(map(str, exc.errors()[0]['loc']))})"
                    ) from None


def load_spec(path: str) -> TuneSpec:
    try:
        with open(path) as fh:
            raw = yaml.safe_load(fh)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: malformed YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    try:
        spec = TuneSpec(**raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    try:
        spec.check()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(
            f"{path}: fixed.{'.'.join(map(str, first['loc']))}: {first['msg']}"
        ) from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return spec


def run_trial(trial_config: dict) -> None:
    """A Tune trial: build and fit one TorchTrainer; its reports reach Tune via the callback."""
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from trainer.distributed.ray_worker import WorkerConfig, train_worker

    res = trial_config["resources"]
    worker = WorkerConfig(
        train=TrainConfig.model_validate(trial_config["train"]),
        data=trial_config["data"],
        gpu=res["gpu"],
        threads=max(1, int(res["cpus_per_worker"])),
    )
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=worker.as_loop_config(),
        scaling_config=ScalingConfig(
            num_workers=res["workers"],
            use_gpu=res["gpu"],
            resources_per_worker={"CPU": res["cpus_per_worker"]},
        ),
        run_config=RunConfig(
            name=f"trial-{uuid.uuid4().hex[:10]}",
            storage_path=trial_config["storage"],
            failure_config=FailureConfig(max_failures=1),
            callbacks=[TuneReportCallback()],
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    trainer.fit()


def _tracking_callbacks(spec: TuneSpec, out: str) -> list:
    """Ray Tune's MLflow logger when the spec asks for it, into an experiment made first so
    that a local store keeps its artifacts beside it; metric names without '@'."""
    if spec.mlflow is None:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from trainer.core.tracking import default_tracking_uri, ensure_experiment, metric_key

    class Callback(MLflowLoggerCallback):
        def log_trial_result(self, iteration, trial, result):
            named = {metric_key(k) if isinstance(k, str) else k: v for k, v in result.items()}
            super().log_trial_result(iteration, trial, named)

    uri = spec.mlflow or default_tracking_uri(out)
    ensure_experiment(uri, spec.name)
    return [Callback(tracking_uri=uri, experiment_name=spec.name, save_artifact=False)]


def run_search(spec: TuneSpec, out: str, data: PreparedData) -> list[dict]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from trainer.distributed.ray_train import connect

    connect(os.environ.get("RAY_ADDRESS"))
    storage = os.path.join(out, "ray")
    keys = sorted(spec.search)
    # The closure ships plain data only and imports by module on the worker: pickling the
    # pydantic classes by value (this file runs as __main__) breaks their schemas.
    data_path, resources, spec_dump = data.path, spec.resources.model_dump(), spec.model_dump()

    def trial(config: dict) -> None:
        from trainer.distributed.tune import TuneSpec as Spec
        from trainer.distributed.tune import run_trial as run

        train = Spec(**spec_dump).train_config({k: config[k] for k in keys}).model_dump()
        run({"train": train, "data": data_path, "resources": resources, "storage": storage})

    epochs = spec.train_config({}).epochs
    # Trials report at validation epochs, so ASHA counts epochs, not reports.
    scheduler = (
        ASHAScheduler(
            time_attr="epoch",
            max_t=epochs,
            grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor,
        )
        if spec.scheduler.type == "asha"
        else FIFOScheduler()
    )
    tuner = tune.Tuner(
        # The trial driver holds a token CPU share (Tune refuses zero); the Train workers it
        # starts hold the real CPUs, so drivers cannot starve their own workers.
        tune.with_resources(trial, {"cpu": 0.01}),
        param_space={k: spec.search[k].to_tune() for k in keys},
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            scheduler=scheduler,
            num_samples=spec.num_samples,
            max_concurrent_trials=spec.max_concurrent_trials,
        ),
        # A fresh name each run: reusing one would silently resume an old search.
        run_config=tune.RunConfig(
            name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
            storage_path=storage,
            callbacks=_tracking_callbacks(spec, out),
        ),
    )
    grid = tuner.fit()
    rows = []
    for result in grid:
        m = result.metrics or {}
        rows.append(
            {
                "trial": os.path.basename(result.path) if result.path else "",
                **{k: (result.config or {}).get(k) for k in keys},
                "epochs": m.get("epoch"),
                "valid_ndcg@50": m.get(METRIC),
                "valid_recall@50": m.get("valid_recall@50"),
                "test_ndcg@50": m.get("test_ndcg@50"),
                "test_recall@50": m.get("test_recall@50"),
                "time_s": m.get("time_total_s"),
                "checkpoint": m.get("checkpoint_path"),
                "error": str(result.error) if result.error else None,
            }
        )
    if not os.environ.get("RAY_ADDRESS"):
        ray.shutdown()  # the local Ray this search started
    return rows


def write_results(rows: list[dict], spec: TuneSpec, out: str) -> dict | None:
    os.makedirs(out, exist_ok=True)
    columns = list(rows[0]) if rows else []
    with open(os.path.join(out, "results.csv.tmp"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(os.path.join(out, "results.csv.tmp"), os.path.join(out, "results.csv"))

    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))

    shown = [c for c in columns if c not in ("checkpoint",)]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(cell(r[c]) for c in shown) + " |" for r in rows]
    scored = [r for r in rows if r["valid_ndcg@50"] is not None]
    best = max(scored, key=lambda r: r["valid_ndcg@50"]) if scored else None
    if best is not None:
        lines += [
            "",
            f"Best by validation NDCG@50: trial {best['trial']} "
            f"({', '.join(f'{k}={best[k]}' for k in sorted(spec.search))}).",
        ]
    with open(os.path.join(out, "results.md"), "w") as fh:
        fh.write(f"# Tune search `{spec.name}` on `{spec.dataset}`\n\n" + "\n".join(lines) + "\n")
    if best is not None:
        with open(os.path.join(out, "best.json"), "w") as fh:
            json.dump(
                {
                    "trial": best,
                    "train_config": spec.train_config(
                        {k: best[k] for k in spec.search}
                    ).model_dump(),
                },
                fh,
                indent=2,
            )
        if best["checkpoint"] and os.path.isdir(best["checkpoint"]):
            target = os.path.join(out, "best", "checkpoint")
            tmp = target + f".tmp{os.getpid()}"
            shutil.copytree(best["checkpoint"], tmp)
            replace_directory(tmp, target)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("config", help="a YAML file in tune_configs/")
    ap.add_argument("--output", help="override the config's output directory")
    args = ap.parse_args(argv)
    try:
        spec = load_spec(args.config)
        data = PreparedData.load(spec.dataset)
    except (ValueError, DataError) as exc:
        print(f"tune: error: {one_line(exc)}", file=sys.stderr)
        return 2
    out = os.path.abspath(args.output or spec.output or os.path.join("runs", "tune", spec.name))
    if spec.mlflow is not None:
        from trainer.core.tracking import require_mlflow

        try:
            require_mlflow()
        except ValueError as exc:
            print(f"tune: error: {one_line(exc)}", file=sys.stderr)
            return 2
    rows = run_search(spec, out, data)
    best = write_results(rows, spec, out)
    print(open(os.path.join(out, "results.md")).read())
    if best is None:
        print("tune: error: no trial reported a validation metric", file=sys.stderr)
        return 1
    print(f"best checkpoint: {os.path.join(out, 'best', 'checkpoint')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
