"""The single operations of the training step, timed alone at the shapes
of gowalla-lightgcn's runs (milliseconds a call: the median of --repeats timed batches).

    python -m benchmarks.kernels --data runs/data/gowalla-lightgcn --threads 2 \\
        --out benchmarks/reports/gowalla-lightgcn

- the default's three products a step, [1,024 × 64] × [64 × 1,000] forward and two backward;
- candidate scores as [B, K, d] × [B, d, 1] against [B, 1, d] × [B, d, K];
- [2,048, 200, 32] candidate rows gathered into a fresh tensor against a reused buffer;
- popularity draws of [2,048, 200] by inverse CDF against the alias table;
- uniform negatives [4,096, 5] from each user's complement against a draw from all items
  with the train positives replaced (the data's own train pairs).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.report_utils import command_line, write_report
from pools.interactions import take
from pools.proposals import PopularityProposal
from pools.scratch import RowScratch
from trainer.data.dataset import PreparedData


def ms(fn, repeats: int, calls: int = 20) -> float:
    """Median over `repeats` batches of `calls` calls, ms a call (after one warm-up call)."""
    fn()
    batches = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        batches.append((time.perf_counter() - t0) / calls * 1e3)
    return statistics.median(batches)


def rows(data: PreparedData, repeats: int, g: torch.Generator) -> list[tuple[str, float]]:
    """(what, ms a call) for every operation the docstring lists."""
    q, v = torch.randn(1024, 64, generator=g), torch.randn(1000, 64, generator=g)
    grad = torch.randn(1024, 1000, generator=g)
    out = [
        ("default's forward product [1,024×64]×[64×1,000]", ms(lambda: q @ v.T, repeats)),
        ("its backward for the queries [1,024×1,000]×[1,000×64]", ms(lambda: grad @ v, repeats)),
        ("its backward for the items [1,000×1,024]×[1,024×64]", ms(lambda: grad.T @ q, repeats)),
    ]
    for b, k in ((2048, 200), (4096, 50)):
        out += _score_layouts(b, k, repeats, g)
    table = torch.randn(data.num_items, 32, generator=g)
    index = torch.randint(0, data.num_items, (2048, 200), generator=g)
    scratch = RowScratch()
    out.append(
        (
            "[2,048, 200, 32] rows gathered into a fresh tensor",
            ms(lambda: table.index_select(0, index.view(-1)), repeats),
        )
    )
    out.append(("the same into a reused buffer", ms(lambda: scratch.gather(table, index), repeats)))
    counts = torch.as_tensor(data.item_counts())
    popular = PopularityProposal(counts)
    mass = torch.log1p(counts.double())
    cdf = (mass.cumsum(0) / mass.sum()).float()
    out.append(
        (
            "popularity [2,048, 200] by inverse CDF",
            ms(
                lambda: torch.searchsorted(cdf, torch.rand(2048, 200, generator=g), right=True),
                repeats,
            ),
        )
    )
    out.append(
        (
            "popularity [2,048, 200] by the alias table",
            ms(lambda: popular.draw((2048, 200), g), repeats),
        )
    )
    positives = data.index("train", torch.device("cpu"), None)
    users = torch.randint(0, data.num_users, (4096,), generator=g)
    out.append(
        (
            "uniform [4,096, 5] from each user's complement",
            ms(lambda: positives.sample_complement(users, 5, g), repeats),
        )
    )

    def replaced():
        items = torch.randint(0, data.num_items, (4096, 5), generator=g)
        r, c = positives.contains(users, items).nonzero(as_tuple=True)
        fresh = positives.sample_complement(take(users, r), 1, g).squeeze(1)
        return items.index_put((r, c), fresh)

    out.append(
        ("uniform [4,096, 5] from all items, train positives replaced", ms(replaced, repeats))
    )
    return out


def _score_layouts(b: int, k: int, repeats: int, g: torch.Generator) -> list[tuple[str, float]]:
    cand, user = torch.randn(b, k, 32, generator=g), torch.randn(b, 32, generator=g)
    return [
        (f"[{b}, {k}, 32] × [{b}, 32, 1]", ms(lambda: torch.bmm(cand, user[:, :, None]), repeats)),
        (
            f"[{b}, 1, 32] × [{b}, 32, {k}]",
            ms(lambda: torch.bmm(user[:, None], cand.transpose(1, 2)), repeats),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    torch.set_num_threads(args.threads)
    data = PreparedData.load(args.data)
    measured = rows(data, args.repeats, torch.Generator().manual_seed(0))
    body = [
        f"{data.num_users} users, {data.num_items} items; torch threads {torch.get_num_threads()}; "
        f"median of {args.repeats} batches of 20 calls.",
        "",
        "| operation | ms a call |",
        "|---|---|",
        *(f"| {what} | {t:.3f} |" for what, t in measured),
    ]
    write_report(
        args.out, "kernels", "Single operations of the training step", command_line(), body
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
