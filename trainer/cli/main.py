"""`adasir prepare | train | tune | serve | recommend`: the project's entry points as one
command (`pip install -e .` puts it on PATH). `python trainer/run.py ...` keeps working, which
is what `ray job submit` runs."""

from __future__ import annotations

import argparse
import json
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
    """`adasir serve` is the service's own launcher (service/cli.py), found by name as uvicorn
    finds `service.app:app`: the trainer package imports nothing of the service."""
    import importlib

    return importlib.import_module("service.cli").main(argv)


def recommend(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="adasir recommend",
        description="Top-k items from a run's checkpoint, without the "
        "service: for known users, for an item history (fold-in), or "
        "items similar to items. One JSON line per answer.",
    )
    ap.add_argument("--model", required=True, help="a run directory (or its checkpoint/)")
    ap.add_argument("--user", action="append", default=[], help="external user id (repeatable)")
    ap.add_argument("--items", help="a new user's item history, comma-separated (fold-in)")
    ap.add_argument(
        "--similar",
        action="append",
        default=[],
        metavar="ITEM",
        help="items most similar to ITEM (repeatable)",
    )
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--include-seen", action="store_true", help="do not mask train/valid items")
    ap.add_argument("--exclude", help="items never to return, comma-separated")
    ap.add_argument("--candidates", help="the only items that may be returned, comma-separated")
    ap.add_argument("--fallback", choices=["none", "popularity"], default="none")
    ap.add_argument(
        "--all",
        action="store_true",
        help="every user's top k to --out (Parquet: user, rank, item, score)",
    )
    ap.add_argument("--out", help="with --all: the Parquet file to write")
    ap.add_argument(
        "--ray",
        action="store_true",
        help="with --all: rank on Ray Data actors; --out is then a directory of Parquet files",
    )
    ap.add_argument("--workers", type=int, default=2, help="with --ray: ranking actors")
    ap.add_argument("--ray-address", help="with --ray: the cluster (default: RAY_ADDRESS or local)")
    args = ap.parse_args(argv)
    if not (args.user or args.items or args.similar or args.all):
        ap.error("give --user, --items, --similar or --all")
    if args.all and not args.out:
        ap.error("--all writes to a file: give --out recs.parquet")
    if args.ray and not args.all:
        ap.error("--ray applies to --all")
    if args.k < 1:
        raise ValueError("-k must be ≥ 1")
    if args.all and args.ray:
        return _export_on_ray(args)
    from trainer.api import Model

    model = Model.load(args.model)
    filters = {"filter_items": _ids(args.exclude), "candidates": _ids(args.candidates)}
    if args.all:
        stats = model.export(args.out, args.k, exclude_seen=not args.include_seen, **filters)
        print(
            f"wrote {stats['rows']:,} rows for {stats['users']:,} users to {args.out} in "
            f"{stats['seconds']:.2f} s",
            file=sys.stderr,
        )
    if args.user:
        for result in model.answer(
            args.user, args.k, exclude_seen=not args.include_seen, fallback=args.fallback, **filters
        ):
            print(json.dumps(result))
    if args.items:
        print(
            json.dumps(
                model.answer_history(
                    _ids(args.items),
                    args.k,
                    exclude_seen=not args.include_seen,
                    fallback=args.fallback,
                    **filters,
                )
            )
        )
    for item, recs in zip(
        args.similar, model.similar_items(args.similar, args.k, **filters) if args.similar else []
    ):
        print(json.dumps({"item": item, "items": [{"item": i, "score": s} for i, s in recs]}))
    return 0


def _export_on_ray(args) -> int:
    """`--all --ray`: the export on Ray Data; the driver reads no user table."""
    from trainer.distributed.export import export_top_k_ray
    from trainer.distributed.ray_train import connect

    connect(args.ray_address, args.workers)
    stats = export_top_k_ray(
        args.model,
        args.out,
        args.k,
        exclude_seen=not args.include_seen,
        filter_items=_ids(args.exclude),
        candidates=_ids(args.candidates),
        workers=args.workers,
        cpus_per_worker=0.5,
    )
    print(
        f"wrote {stats['rows']:,} rows for {stats['users']:,} users to {args.out} "
        f"({stats['files']} Parquet files) in {stats['seconds']:.2f} s",
        file=sys.stderr,
    )
    return 0


def _ids(text: str | None) -> list[str] | None:
    return None if text is None else [part for part in text.split(",") if part]


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
        from trainer.errors import error_line, is_usage_error

        if not is_usage_error(exc):
            raise
        print(f"adasir {command}: error: {error_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
