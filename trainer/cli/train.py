"""Train a recommender with a negative sampler; write OUT/metrics.json and OUT/checkpoint/.

    python trainer/run.py                       # embedded default: synthetic data
    python trainer/run.py --data data/ml-1m --model mf --sampler adasir-u --epochs 200 \\
        --device cpu --seed 0 --out runs/ml1m-adasir --workers 0

--workers 0 trains in this process; --workers N ≥ 1 trains under Ray Train with users sharded
across N workers, on the cluster this job was submitted to (`ray job submit -- python
trainer/run.py ...`), on --ray-address, or on a local Ray it starts when none is given.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import torch

from trainer.cli.flags import add_config_flags, config_overrides
from trainer.core.config import TrainConfig, check_against_data
from trainer.core.logs import progress_logger
from trainer.core.presets import build_config, fit_to_data, sampler_options
from trainer.core.tracking import MlflowRun, default_tracking_uri, require_mlflow
from trainer.core.training import describe_run, train_in_process
from trainer.data.dataset import PreparedData
from trainer.errors import error_line, is_usage_error
from trainer.outputs.checkpoint import resume_source
from trainer.outputs.rundir import RunDir, RunDirError

# Large catalogue, weak popularity, sharp latent signal: uniform negatives are mostly easy,
# so the samplers' differences show (benchmarks/pages/previous-defaults.md, "Which sampler wins").
DEFAULT_SYNTHETIC = "users=3000,items=4000,dim=16,mean=30,alpha=0,zipf=0.5,signal=6,seed=0"


def default_data_dir() -> str:
    """The embedded default dataset, generated on first use into ./runs/data/."""
    from trainer.data.prepare import PrepareOptions, prepare

    path = os.path.abspath(os.path.join("runs", "data", "synthetic-default"))
    if not os.path.isfile(os.path.join(path, "manifest.json")):
        prepare(path, PrepareOptions(), synthetic=DEFAULT_SYNTHETIC, overwrite=True)
    return path


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", help="prepared dataset directory (default: embedded synthetic data)")
    ap.add_argument("--out", help="output directory (default: runs/<sampler>-<time>)")
    ap.add_argument(
        "--config",
        help="TrainConfig fields as a JSON file, or inline JSON "
        "('{...}'); flags override it, and it overrides its preset",
    )
    add_config_flags(ap)  # --preset, --epochs, --lr, --sampler, … one per config field
    ap.add_argument(
        "--sampler-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any sampler option (pools/<module>.py), e.g. srns_alpha=2 or "
        "kernel_alpha=10 (repeatable; values parsed as JSON, else as text)",
    )
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out (the old run stays whole until this one completes)",
    )
    ap.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    ap.add_argument("--workers", type=int, default=0, help="0: in-process; N ≥ 1: Ray Train")
    ap.add_argument("--gpu", action="store_true", help="Ray: each worker uses one GPU")
    ap.add_argument(
        "--item-exchange",
        choices=["auto", "dense", "sparse"],
        default="auto",
        help="Ray: how workers average item gradients — all-reduce the table (dense), "
        "all-gather the touched rows (sparse), or per step the fewer bytes (auto)",
    )
    ap.add_argument(
        "--max-failures", type=int, default=2, help="Ray: restarts after worker failures"
    )
    ap.add_argument(
        "--ray-address", help="Ray: cluster address (default: $RAY_ADDRESS or a local Ray)"
    )
    ap.add_argument(
        "--storage-path",
        help="Ray: where checkpoints persist (shared storage on a "
        "multi-node cluster; default OUT/ray)",
    )
    ap.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        metavar="URI",
        help="track the run in MLflow: its options, every epoch's metrics, the test metrics "
        "and the model (default URI: sqlite:///<OUT's parent>/mlflow.db)",
    )
    ap.add_argument(
        "--mlflow-experiment", help="MLflow experiment (default: the dataset's directory name)"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="also checkpoint every N epochs (0: only at the end)",
    )
    return ap


def config_from_args(args, given: dict | None = None) -> TrainConfig:
    """Flags over an optional JSON config over its preset; validated by pydantic. `given`:
    given_options(args), when the caller already has it."""
    return build_config(None, given_options(args) if given is None else given)


def given_options(args) -> dict:
    """What the user set: the --config JSON, then --sampler-opt, then the flags (nested)."""
    base = read_config_option(args.config) if args.config else {}
    given = config_overrides(args)
    try:
        sampler = sampler_options(base.pop("sampler")) if "sampler" in base else {}
    except ValueError as exc:
        raise ValueError(f"--config: {exc}") from None
    sampler = {**sampler, **_sampler_options(args.sampler_opt), **given.pop("sampler", {})}
    base.update(given)
    return {**base, "sampler": sampler} if sampler else base


def read_config_option(text: str) -> dict:
    """--config: a JSON file's path, or inline JSON (what POST /jobs passes); an object of
    TrainConfig fields either way."""
    if os.path.isdir(text):
        raise ValueError(f"--config {text}: is a directory, not a JSON file")
    if os.path.isfile(text):
        try:
            with open(text, encoding="utf-8") as fh:
                value = json.load(fh)
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--config {text}: cannot read it ({exc})") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"--config {text}: not JSON ({exc})") from None
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(
                f"--config: {text[:60]!r} is neither a JSON file nor inline JSON"
            ) from None
    if not isinstance(value, dict):
        raise ValueError(
            f"--config: expected a JSON object of options, got "
            f"{type(value).__name__} {json.dumps(value)[:60]}"
        )
    return value


def _sampler_options(pairs: list[str]) -> dict:
    """KEY=VALUE strings → a dict; pydantic then rejects unknown keys and bad values."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--sampler-opt expects KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value  # a bare word such as weighting=paper
    return options


# What --resume may change: the epoch cap, where it runs and what is measured along the way;
# anything else would silently train a different run on top of the checkpoint's.
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "device",
        "eval_every",
        "eval_users",
        "valid_users",
        "topk",
        "diagnostics",
        "early_stopping_patience",
        "early_stopping_metric",
        "refit",
    }
)


def check_resume_config(out: str, config: TrainConfig, storage_path: str | None = None) -> None:
    """Refuse --resume with options other than the checkpoint's, naming the fields."""
    source = resume_source(out, storage_path) or out
    try:
        with open(os.path.join(source, "config.json")) as fh:
            saved = json.load(fh)["train"]
        with open(os.path.join(source, "metrics.json")) as fh:
            refitted = "before_refit" in json.load(fh)
    except (OSError, ValueError, KeyError, TypeError):
        return  # an unreadable checkpoint is refused by the load itself, with its reason
    mine = config.model_dump(mode="json")
    differ = sorted(
        k
        for k in set(saved) | set(mine)
        if k not in RESUMABLE_CHANGES and saved.get(k) != mine.get(k)
    )
    if differ:
        shown = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {mine.get(k)!r}" for k in differ)
        raise RunDirError(
            f"--resume continues the same run, but these options differ from "
            f"its checkpoint's ({shown}); only --epochs and what is measured may "
            f"change. Drop them, or start a new --out"
        )
    if refitted and saved.get("epochs") != config.epochs:
        raise RunDirError(
            f"--resume: the run in {out} ended with its refit, which replaced the validated "
            f"model: there is no validated run left to extend to --epochs {config.epochs}. "
            "Train a new --out instead"
        )


def _start_tracking(args, config: TrainConfig, data: PreparedData, out: str) -> MlflowRun | None:
    """The run's MLflow run when --mlflow is given (MLflow checked before anything runs)."""
    if args.mlflow is None:
        return None
    require_mlflow()
    uri = args.mlflow or default_tracking_uri(out)
    experiment = args.mlflow_experiment or os.path.basename(data.path)
    params = {**config.model_dump(mode="json"), "data": data.path, "workers": args.workers}
    run = MlflowRun.start(uri, experiment, os.path.basename(out), params)
    progress_logger().info(f"mlflow: run {run.run_id} in experiment {experiment} at {uri}")
    return run


def _train(
    args, config: TrainConfig, data: PreparedData, work: str, tracking: MlflowRun | None
) -> dict:
    if args.workers == 0:
        return train_in_process(
            config,
            data,
            work,
            args.checkpoint_every,
            log=_log_or_stop,
            resume=args.resume,
            tracking=tracking,
        )
    from trainer.distributed.ray_train import train_with_ray

    return train_with_ray(
        config,
        data,
        work,
        workers=args.workers,
        gpu=args.gpu,
        max_failures=args.max_failures,
        checkpoint_every=args.checkpoint_every,
        address=args.ray_address,
        storage_path=args.storage_path,
        resume=args.resume,
        item_exchange=args.item_exchange,
        tracking=tracking,
    )


_STOP_REQUESTED: list[str] = []
"""The signal that asked this run to stop. The KeyboardInterrupt its handler raises can land
inside a library that swallows it (the compiler's worker pool, say): the next progress line
then raises it again, so a stop is never lost."""


def _interrupt(signum, frame):
    _STOP_REQUESTED.append(signal.Signals(signum).name)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _log_or_stop(line: str) -> None:
    """The in-process run's progress line; a stop asked for earlier ends the run here."""
    progress_logger().info(line)
    if _STOP_REQUESTED:
        raise KeyboardInterrupt(_STOP_REQUESTED[0])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.threads < 0:
            raise ValueError(
                f"--threads {args.threads}: give a count ≥ 1, or 0 for torch's default"
            )
        if args.threads:
            torch.set_num_threads(args.threads)
        given = given_options(args)
        config = config_from_args(args, given)
        if args.workers < 0:
            raise ValueError("--workers must be ≥ 0")
        data = PreparedData.load(args.data) if args.data else PreparedData.load(default_data_dir())
        out = os.path.abspath(
            args.out
            or os.path.join("runs", f"{config.sampler.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        )
        notes: list[str] = []  # said after the header, which says what is trained first
        config = fit_to_data(config, data.num_items, given, notes.append)
        check_against_data(config, data.num_users, data.num_items, data.has_ratings)  # before OUT
        if args.workers > 0:
            from trainer.distributed.ray_train import check_ray_request

            check_ray_request(config, data, args.workers, args.gpu)
        rundir = RunDir(
            out, overwrite=args.overwrite, resume=args.resume, storage_path=args.storage_path
        )
        if args.resume:  # before run.json is touched
            check_resume_config(out, config, args.storage_path)
        print(describe_run(config, data, out, args.workers), flush=True)
        for line in notes:
            progress_logger().info(line)
        tracking = _start_tracking(args, config, data, out)
        try:
            with rundir.running():
                # A stopped job (DELETE /jobs sends SIGTERM) ends as Ctrl-C does; SIGINT is set
                # too, as a shell that starts the run in the background leaves it ignored.
                _STOP_REQUESTED.clear()  # a stop of an earlier run in this process
                for signum in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, _interrupt)
                metrics = _train(args, config, data, rundir.work, tracking)
        except KeyboardInterrupt:
            if tracking:
                tracking.fail("KILLED")
            print(
                f"run: stopped; {out} keeps its last checkpoint (--resume continues it)",
                file=sys.stderr,
            )
            return 130
        except BaseException:
            if tracking:
                tracking.fail()
            raise
        if tracking:
            tracking.finish(metrics, out)
    except Exception as exc:  # usage errors: one clear line; bugs keep their traceback
        if not is_usage_error(exc):
            raise
        print(f"run: error: {error_line(exc)}", file=sys.stderr)
        return 2
    test = metrics["test"]
    if all(v is None for v in test.values()):
        print("test: none, the dataset has no test split", flush=True)
    else:
        print("test " + " ".join(f"{k} {v:.4f}" for k, v in sorted(test.items())), flush=True)
    print(f"wrote {os.path.join(out, 'metrics.json')} and {os.path.join(out, 'checkpoint')}")
    print(
        f"query it: adasir recommend --model {os.path.relpath(out)} --user USER -k 10 "
        f"(or serve it: adasir serve, docs/service.md)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
