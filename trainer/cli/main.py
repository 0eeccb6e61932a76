"""`adasir prepare | train | tune | serve | recommend`: the project's entry points as one
command (`pip install -e .` puts it on PATH). `python trainer/run.py ...` keeps working, which
is what `ray job submit` runs."""

from __future__ import annotations

import argparse
import json
import os
import sys

USAGE = """usage: adasir COMMAND [options]

commands:
  prepare     read a dataset (or --synthetic), filter, split, write Parquet   (trainer/prepare.py)
  train       train a model in-process or on Ray; write OUT/checkpoint         (trainer/run.py)
  tune        run a Ray Tune search from a YAML file                           (trainer/tune.py)
  serve       start the HTTP service (uvicorn service.app:app)
  recommend   top-k for users from a checkpoint, without the service

`adasir COMMAND --help` lists a command's options."""


def serve(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="adasir serve", description="Start the HTTP service; "
                                 "it is configured by ADASIR_* variables (README, Service).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = ap.parse_args(argv)
    import uvicorn

    uvicorn.run("service.app:app", host=args.host, port=args.port, workers=args.workers)
    return 0


def recommend(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="adasir recommend",
                                 description="Top-k items for users, from a run's checkpoint.")
    ap.add_argument("--model", required=True, help="a run directory (or its checkpoint/)")
    ap.add_argument("--user", action="append", required=True, help="external user id (repeatable)")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--include-seen", action="store_true", help="do not mask train/valid items")
    ap.add_argument("--fallback", choices=["none", "popularity"], default="none")
    args = ap.parse_args(argv)
    from trainer.api import Model

    path = args.model
    if os.path.isfile(os.path.join(path, "checkpoint", "model.pt")):
        path = os.path.join(path, "checkpoint")
    if args.k < 1:
        raise ValueError("-k must be ≥ 1")
    model = Model.load(path)
    for result in model.answer(args.user, args.k, exclude_seen=not args.include_seen,
                               fallback=args.fallback):
        print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "prepare":
        from trainer.data.prepare import main as run
    elif command == "train":
        from trainer.cli.train import main as run
    elif command == "tune":
        from trainer.distributed.tune import main as run
    elif command in ("serve", "recommend"):
        run = serve if command == "serve" else recommend
    else:
        print(f"adasir: error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return run(rest)
    except Exception as exc:  # usage errors: one line; bugs keep their traceback
        from trainer.errors import is_usage_error, one_line

        if not is_usage_error(exc):
            raise
        print(f"adasir {command}: error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
