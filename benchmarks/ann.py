"""ANN retrieval at catalogue scale: recall@k of the HNSW ranker against exact scoring, build
time, and per-request latency with concurrent clients, beside exact scoring.

    python -m benchmarks.ann --items 1000000 --out benchmarks/reports/ann

Item and query vectors are unit-length mixtures of Gaussians (the shape a cosine model's
tables take: items in clusters, users near some of them), d = 32. Each request is one
user's top k with its seen items masked (`--seen` of them: random items, or with `--seen-near`
drawn from the user's exact top 100, where masked items crowd the top as a trained model's
do), as `Model._rank_users` asks it (trainer/core/ann.py); exact scoring is the project's
blockwise top-k. Concurrent clients
are threads of this process calling the ranker (faiss and torch release the GIL while they
compute), each timing its own requests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from benchmarks.report_utils import command_line, write_report
from pools.interactions import InteractionIndex
from trainer.core.ann import AnnRanker, build_index, load_or_build
from trainer.core.topk import VectorScorer, top_k


def vectors(n: int, d: int, clusters: int, g: torch.Generator) -> torch.Tensor:
    centres = F.normalize(torch.randn(clusters, d, generator=g), dim=1)
    pick = torch.randint(clusters, (n,), generator=g)
    return F.normalize(centres[pick] + 0.35 * torch.randn(n, d, generator=g), dim=1)


def latencies(call, requests: int, clients: int) -> list[float]:
    """Milliseconds of each of `requests` calls made by `clients` threads at once."""

    def client(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            call()
            out.append((time.perf_counter() - t0) * 1000)
        return out

    with ThreadPoolExecutor(clients) as pool:
        parts = pool.map(client, [requests // clients] * clients)
    return sorted(ms for part in parts for ms in part)


def _ranker(items: torch.Tensor, cache: str | None) -> tuple[AnnRanker, str]:
    """The ranker, with its graph built here or read from `cache` (the seconds its build
    took are kept beside it, so a report from a cached graph still says them)."""
    if cache and os.path.isfile(cache) and os.path.isfile(cache + ".build_s"):
        with open(cache + ".build_s") as fh:
            built = float(fh.read())
        note = f"index build {built:.0f} s (an earlier run; read from {os.path.basename(cache)})"
        return AnnRanker(load_or_build(items, cache), items), note
    t0 = time.perf_counter()
    index = build_index(items)
    build_s = time.perf_counter() - t0
    if cache:
        import faiss

        faiss.write_index(index, cache)
        with open(cache + ".build_s", "w") as fh:
            fh.write(f"{build_s:.1f}")
    return AnnRanker(
        index, items
    ), f"index build {build_s:.0f} s (once per checkpoint, then cached beside it)"


def _seen_items(items, queries, count: int, near: bool, g: torch.Generator) -> torch.Tensor:
    """[Q, count] masked items per user: uniform over the catalogue, or (near) distinct
    items of the user's exact top 100."""
    if not near:
        return torch.randint(items.shape[0], (queries.shape[0], count), generator=g)
    if count > 100:
        raise SystemExit("--seen-near draws from the top 100: --seen must be at most 100")
    top = top_k(VectorScorer(queries, items), torch.arange(queries.shape[0]), 100, []).indices
    pick = torch.rand(top.shape, generator=g).argsort(dim=1)[:, :count]
    return top.gather(1, pick)


def p(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=800)
    ap.add_argument("--seen", type=int, default=20, help="items masked per user")
    ap.add_argument(
        "--seen-near",
        action="store_true",
        help="draw them from each user's exact top 100 rather than from all items",
    )
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--index-cache",
        help="keep the HNSW graph in this file and reuse it when the same vectors come again",
    )
    args = ap.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    items = vectors(args.items, args.dim, 2000, g)
    queries = vectors(args.queries, args.dim, 2000, g)
    seen_items = _seen_items(items, queries, args.seen, args.seen_near, g)
    seen = InteractionIndex(
        torch.arange(args.queries).repeat_interleave(args.seen),
        seen_items.reshape(-1),
        args.queries,
        args.items,
    )
    ranker, build_note = _ranker(items, args.index_cache)
    exact = top_k(VectorScorer(queries, items), torch.arange(args.queries), args.k, [seen])
    approx_i = torch.cat(
        [
            ranker.rank(queries[i : i + 1], args.k, [seen_items[i]], None)[1]
            for i in range(args.queries)
        ]
    )
    recall = sum(
        len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx_i, exact.indices)
    ) / (args.k * args.queries)
    rng = torch.Generator().manual_seed(1)

    def one(use_ann: bool):
        i = int(torch.randint(args.queries, (1,), generator=rng))
        if use_ann:
            return lambda: ranker.rank(queries[i : i + 1], args.k, [seen_items[i]], None)
        return lambda: top_k(VectorScorer(queries, items), torch.tensor([i]), args.k, [seen])

    rows = []
    for name, use_ann in (("HNSW (M 32)", True), ("exact, blockwise", False)):
        n = args.requests if use_ann else max(args.clients * 4, args.requests // 8)
        ms = latencies(lambda u=use_ann: one(u)(), n, args.clients)
        rows.append(
            f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {p(ms, 0.99):.1f} | "
            f"{len(ms) / (sum(ms) / 1000 / args.clients):.0f} |"
        )
    body = [
        f"{args.items:,} items, d = {args.dim}, k = {args.k}, {args.queries} users with "
        f"{args.seen} seen items each ({'from their exact top 100' if args.seen_near else 'random'})"
        f"; {args.clients} concurrent clients (threads) on this machine.",
        "",
        f"recall@{args.k} of HNSW against exact: **{recall:.4f}**; {build_note}.",
        "",
        "| ranking | requests | p50 ms | p99 ms | requests/s |",
        "|---|---|---|---|---|",
        *rows,
    ]
    write_report(args.out, "ann", "ANN retrieval against exact scoring", command_line(), body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
