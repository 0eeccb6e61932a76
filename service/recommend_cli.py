"""`adasir recommend`: top-k from a run's checkpoint without the service, one JSON line per
answer in the shapes POST /recommend and /similar give (service/recommender.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from service.recommender import history_answer, user_answers


def main(argv: list[str]) -> int:
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
    ap.add_argument(
        "--exclude-seen",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="leave out the user's train/valid items (or the history's); "
        "--include-seen is --no-exclude-seen",
    )
    ap.add_argument(
        "--include-seen", dest="exclude_seen", action="store_false", help=argparse.SUPPRESS
    )
    ap.add_argument(
        "--filter-items",
        "--exclude",
        dest="filter_items",
        help="items never to return, comma-separated",
    )
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
    filters: dict[str, Any] = {
        "filter_items": _ids(args.filter_items),
        "candidates": _ids(args.candidates),
    }
    if args.all:
        stats = model.export(args.out, args.k, exclude_seen=args.exclude_seen, **filters)
        print(
            f"wrote {stats['rows']:,} rows for {stats['users']:,} users to {args.out} in "
            f"{stats['seconds']:.2f} s",
            file=sys.stderr,
        )
    if args.user:
        for result in user_answers(
            model,
            args.user,
            args.k,
            exclude_seen=args.exclude_seen,
            fallback=args.fallback,
            **filters,
        ):
            print(json.dumps(result))
    if args.items:
        print(
            json.dumps(
                history_answer(
                    model,
                    _ids(args.items) or [],
                    args.k,
                    exclude_seen=args.exclude_seen,
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
        exclude_seen=args.exclude_seen,
        filter_items=_ids(args.filter_items),
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
