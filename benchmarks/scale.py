"""Scale: the item-gradient exchange, peak memory and sharded checkpoints as the catalogue grows.

W Gloo processes on this machine run what a Ray worker runs (shard-local data, the engine, the
exchange, its part of a sharded checkpoint), minus Ray, for a fixed number of steps per
configuration: the old path (dense all-reduce of the item table) beside the new one (`auto`:
touched rows when fewer bytes). Reported per worker: bytes put into collectives per step,
the touched-rows bound B/W·(1+n)·(4d + 8), seconds per step, peak RSS, and the sharded
checkpoint's write and restore (own shard only) times.

    python -m benchmarks.scale --items 10000,100000,1000000 --users 20000 --out benchmarks/reports/scale
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.multiprocessing as mp

from service.devserver import free_port
from trainer.core.config import TrainConfig
from trainer.core.engine import Engine
from trainer.data.dataset import PreparedData, count_train, dataset_size
from trainer.data.prepare import PrepareOptions, prepare
from trainer.distributed.exchange import GradientExchange
from trainer.distributed.sharding import plan_shards
from trainer.outputs.checkpoint import (
    load_checkpoint,
    save_checkpoint,
    shard_table,
    write_user_shard,
)


def _worker(rank, world, port, data_path, mode, steps, result_dir):
    import torch.distributed as dist

    from trainer.distributed.collective_replicas import CollectiveReplicas

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    cfg = TrainConfig(
        preset="paper",
        batch_size=4096,
        lr=0.01,
        optimizer="sparse-adam",
        l2=0.0,
        sampler={"name": "uniform"},
    )
    n_users, n_items = dataset_size(data_path)
    degree, item_counts = count_train(data_path, n_users, n_items)
    plan = plan_shards(None, n_users, world, cfg.batch_size, degree=degree)
    data = PreparedData.load(data_path, users=plan.shards[rank], item_counts=item_counts)
    local = cfg.model_copy(update={"batch_size": plan.batch_per_worker})
    exchange = GradientExchange(world, mode)
    engine = Engine(
        local,
        data,
        plan.shards[rank],
        steps_per_epoch=steps,
        exchange=exchange,
        replicas=CollectiveReplicas(world),
    )
    dist.barrier()
    t0 = time.perf_counter()
    engine.train_epoch()
    step_s = (time.perf_counter() - t0) / steps
    ckpt = os.path.join(result_dir, f"ckpt-{mode}", "checkpoint")
    dist.barrier()
    t0 = time.perf_counter()
    if rank == 0:
        state = {k: v for k, v in engine.model.state_dict().items() if k != "user_emb"}
        save_checkpoint(
            ckpt,
            model_name="mf",
            dim=32,
            state=state,
            item_counts=item_counts,
            data=data,
            config=cfg.model_dump(),
            metrics={},
            epoch=1,
            user_shards=shard_table(plan.shards),
        )
    dist.barrier()  # rank 0's directory exists before the others add their files
    write_user_shard(ckpt, rank, world, plan.shards[rank], engine.model.user_emb)
    dist.barrier()
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.restore(load_checkpoint(ckpt, users=plan.shards[rank]))
    restore_s = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    old_write_s, old_restore_s = _old_checkpoint(
        engine,
        data,
        cfg,
        plan,
        rank,
        item_counts,
        os.path.join(result_dir, f"old-{mode}", "checkpoint"),
    )
    with open(os.path.join(result_dir, f"{mode}-{rank}.json"), "w") as fh:
        json.dump(
            {
                **exchange.per_step(),
                "step_s": step_s,
                "peak_rss_mb": peak_mb,
                "checkpoint_write_s": write_s,
                "restore_own_shard_s": restore_s,
                "old_gather_write_s": old_write_s,
                "old_restore_s": old_restore_s,
                "batch_per_worker": plan.batch_per_worker,
            },
            fh,
        )
    dist.barrier()
    dist.destroy_process_group()


def _old_checkpoint(engine, data, cfg, plan, rank, item_counts, path) -> tuple[float, float]:
    """The path this project had before sharded checkpoints, timed for comparison: every rank
    sends its user rows to rank 0 (all_gather_object), which writes the whole table; a restart
    reads the whole table and takes its rows. (Run after peak RSS was read: it is not counted.)"""
    import torch.distributed as dist

    t0 = time.perf_counter()
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (plan.shards[rank], engine.model.user_emb.detach().cpu()))
    if rank == 0:
        state = {k: v for k, v in engine.model.state_dict().items()}
        full = torch.zeros(data.num_users, 32)
        for ids, rows in gathered:
            full[torch.as_tensor(ids)] = rows
        state["user_emb"] = full
        save_checkpoint(
            path,
            model_name="mf",
            dim=32,
            state=state,
            item_counts=item_counts,
            data=data,
            config=cfg.model_dump(),
            metrics={},
            epoch=1,
        )
    del gathered
    dist.barrier()
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.restore(load_checkpoint(path))
    return write_s, time.perf_counter() - t0


def measure(data_path: str, world: int, mode: str, steps: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, free_port(), data_path, mode, steps, tmp), nprocs=world)
        return [json.load(open(os.path.join(tmp, f"{mode}-{r}.json"))) for r in range(world)]


def dataset(users: int, items: int, mean: int) -> str:
    """Pairs with Zipf(0.6) item popularity, `mean` per user, written as Parquet and prepared
    without a k-core filter. (`--synthetic` scores every user × item pair to plant a latent
    structure: quality needs that, the exchange and memory measured here do not.)"""
    path = os.path.abspath(os.path.join("runs", "data", f"scale-u{users}-i{items}-m{mean}"))
    if not os.path.isfile(os.path.join(path, "manifest.json")):
        rng = np.random.default_rng(0)
        popularity = np.arange(1, items + 1, dtype=np.float64) ** -0.6
        u = np.repeat(np.arange(users), mean)
        i = rng.permutation(items)[rng.choice(items, u.size, p=popularity / popularity.sum())]
        with tempfile.TemporaryDirectory() as tmp:
            raw = os.path.join(tmp, "pairs.parquet")
            pq.write_table(pa.table({"user": u, "item": i}), raw)
            prepare(path, PrepareOptions(kcore=1), input_path=raw, overwrite=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--items", default="10000,100000,1000000")
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--mean", type=int, default=20, help="train pairs per user (before splits)")
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for items in map(int, args.items.split(",")):
        path = dataset(args.users, items, args.mean)
        n_users, n_items = dataset_size(path)
        for mode in ("dense", "auto"):
            ranks = measure(path, args.world, mode, args.steps)
            worst = {
                k: max(r[k] for r in ranks)
                for k in (
                    "exchange_bytes_per_step",
                    "step_s",
                    "peak_rss_mb",
                    "checkpoint_write_s",
                    "restore_own_shard_s",
                    "old_gather_write_s",
                    "old_restore_s",
                )
            }
            bound = ranks[0]["batch_per_worker"] * 6 * (4 * 32 + 8)
            rows.append(
                {
                    "users": n_users,
                    "items": n_items,
                    "mode": mode,
                    "bound": bound,
                    "sparse_step_fraction": ranks[0]["sparse_step_fraction"],
                    **worst,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    with open(os.path.join(args.out, "scale.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    lines = [
        "# Scale: item exchange, memory and sharded checkpoints",
        "",
        "```bash",
        "python -m benchmarks.scale " + " ".join(sys.argv[1:]),
        "```",
        "",
        f"{args.world} Gloo processes on one 2-core machine (what a Ray worker runs, minus "
        f"Ray), MF d = 32, uniform BPR n = 5, batch 4096, lazy row-wise Adam, "
        f"{args.steps} steps per row; worst worker shown.",
        "",
        "| users | items | exchange | bytes/step/worker | touched-rows bound | sparse steps "
        "| s/step | peak RSS MB | sharded checkpoint write s | restore own shard s "
        "| old: gather to rank 0 + write s | old: restore whole table s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['users']:,} | {r['items']:,} | {r['mode']} | "
            f"{r['exchange_bytes_per_step']:,} | {r['bound']:,} | "
            f"{r['sparse_step_fraction']:.0%} | {r['step_s']:.3f} | {r['peak_rss_mb']:.0f} | "
            f"{r['checkpoint_write_s']:.2f} | {r['restore_own_shard_s']:.2f} | "
            f"{r['old_gather_write_s']:.2f} | {r['old_restore_s']:.2f} |"
        )
    with open(os.path.join(args.out, "scale.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
