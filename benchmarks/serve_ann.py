"""ANN over HTTP: POST /recommend on a 10⁶-item model served by uvicorn, ranked through HNSW.

    apt-get install -y wrk
    python -m benchmarks.serve_ann --root /tmp/ann-serve --index-cache /tmp/annc/hnsw-1m.faiss \\
        --concurrency 1,8 --max-seconds 15 --out benchmarks/results

The model is a cosine MF whose item vectors are benchmarks/ann.py's (unit-length clustered,
d = 32, the same seed, so that its HNSW graph, --index-cache, serves both) and whose users
are 20,000 of that script's kind of queries; its dataset gives every one of the 10⁶ items to
exactly one user (50 items a user, 20% of them test, the rest train and validation, all masked
as seen). The run is written once under --root and reused. One uvicorn process (1 torch
thread; ADASIR_ANN_MIN_ITEMS at its default, so the model is searched, not scored exactly)
answers requests for random users with k = 20 from wrk on the same 2 cores, after a warm-up
request that loads the model and its graph.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.ann import vectors
from benchmarks.report_utils import command_line, write_report
from benchmarks.serve_load import CONNECTIONS_TABLE, connection_rows, quiet_server, recommend_bodies
from trainer.api import Model
from trainer.core.ann import build_index
from trainer.core.config import TrainConfig
from trainer.data.dataset import PreparedData
from trainer.data.prepare import PrepareOptions, prepare
from trainer.outputs.checkpoint import save_checkpoint

USERS, PER_USER, DIM = 20_000, 50, 32


def build_run(root: str, items: int, index_cache: str | None) -> str:
    """The model's run directory under `root` (made once): dataset, checkpoint, HNSW graph."""
    run = os.path.join(root, "models", "ann-1m")
    if glob.glob(os.path.join(run, "checkpoint", "ann-hnsw-*.faiss")):
        return run
    data_dir = os.path.join(root, "data", "ann-1m")
    source = os.path.join(root, "interactions.parquet")
    os.makedirs(root, exist_ok=True)
    item = np.arange(items)  # item j belongs to user j % USERS (ids sort as indices)
    users = item % USERS
    pq.write_table(
        pa.table({"user": [f"u{u:06d}" for u in users], "item": [f"i{j:07d}" for j in item]}),
        source,
    )
    prepare(data_dir, PrepareOptions(kcore=0), input_path=source, overwrite=True)
    data = PreparedData.load(data_dir)
    g = torch.Generator().manual_seed(0)
    item_vectors = vectors(items, DIM, 2000, g)  # benchmarks/ann.py's, in its order
    user_vectors = vectors(USERS, DIM, 2000, g)
    config = TrainConfig(
        preset="paper", epochs=1, dim=DIM, loss="softmax", score="cosine"
    ).model_dump()
    ckpt = save_checkpoint(
        os.path.join(run, "checkpoint"),
        model_name="mf",
        dim=DIM,
        state={"user_emb": user_vectors, "item_emb": item_vectors},
        item_counts=data.item_counts(),
        data=data,
        config=config,
        metrics={"epochs": [], "test": {}},
        epoch=0,
    )
    graph = Model.load(ckpt)._ann_cache_path()
    if index_cache and os.path.isfile(index_cache):
        shutil.copyfile(index_cache, graph)  # the same vectors' graph
    else:
        import faiss

        faiss.write_index(build_index(item_vectors), graph)
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--root", required=True, help="where the model is written once")
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--index-cache", help="benchmarks/ann.py's graph of the same vectors")
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--max-seconds", type=float, default=15)
    ap.add_argument("--out", required=True, help="report folder (serve_ann.md)")
    args = ap.parse_args(argv)
    if args.items % USERS:
        ap.error(f"--items must be a multiple of {USERS}")
    run = build_run(os.path.abspath(args.root), args.items, args.index_cache)
    models = os.path.dirname(run)
    users = [f"u{u:06d}" for u in range(USERS)]
    bodies = recommend_bodies(users, args.k, model="ann-1m")
    with quiet_server(models) as base:
        warm = httpx.post(
            base + "/recommend",
            json={"model": "ann-1m", "user": users[0], "k": args.k},
            timeout=600,
        )
        warm.raise_for_status()  # loads the model and reads its graph
        rows = connection_rows(base, bodies, args.concurrency, args.max_seconds)
    body = [
        f"{args.items:,} items, d = {DIM}, {USERS:,} users with {PER_USER} items each "
        f"(about 40 of them seen: masked), k = {args.k}, HNSW (trainer/core/ann.py); one uvicorn process, "
        "1 torch thread, wrk on the same 2 cores.",
        "",
        *CONNECTIONS_TABLE,
        *rows,
    ]
    write_report(args.out, "serve_ann", "ANN over HTTP", command_line(), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
