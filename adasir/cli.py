"""`adasir prepare | train | tune | serve | recommend`: the project's entry points as one
command (`pip install -e .` puts it on PATH; `python -m adasir` is the same). It sits above
every layer: training's commands come from `trainer`, `serve` and `recommend` (which prints
the service's answers) from `service`. `python trainer/run.py ...` keeps working, which is
what `ray job submit` runs."""

from __future__ import annotations

import sys
from collections.abc import Callable

USAGE = """usage: adasir COMMAND [options]

commands:
  prepare     read a dataset (or --synthetic), filter, split, write Parquet   (trainer/prepare.py)
  train       train a model in-process or on Ray; write OUT/checkpoint         (trainer/run.py)
  tune        run a Ray Tune search from a YAML file                           (trainer/tune.py)
  serve       start the HTTP service (uvicorn service.app:app)
  recommend   top-k for users from a checkpoint, without the service

`adasir COMMAND --help` lists a command's options."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    run: Callable[[list[str]], int]
    if command == "prepare":
        from trainer.data.prepare import main as run
    elif command == "train":
        from trainer.cli.train import main as run
    elif command == "tune":
        from trainer.distributed.tune import main as run
    elif command == "serve":
        from service.cli import main as run
    elif command == "recommend":
        from service.recommend_cli import main as run
    else:
        print(f"adasir: error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return run(rest)
    except Exception as exc:  # usage errors: one line; bugs keep their traceback
        from trainer.errors import error_line, is_usage_error

        if not is_usage_error(exc):
            raise
        print(f"adasir {command}: error: {error_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
