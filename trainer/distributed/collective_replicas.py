"""Replicated state kept identical across Ray Train workers with torch.distributed collectives
(the samplers and the item side call it: pools/replicas.py)."""

from __future__ import annotations

import torch

from pools.replicas import Replicas


class CollectiveReplicas(Replicas):
    """Replicated state kept identical with torch.distributed collectives (Gloo or NCCL).

    An all-reduce hands every rank the same bits, so tables that start equal and take averaged
    updates stay bit-identical; `spread` measures it (0.0 when they are)."""

    def __init__(self, world_size: int):
        self.world_size = world_size

    def average_(self, tensor):
        import torch.distributed as dist

        dist.all_reduce(tensor)
        return tensor.div_(self.world_size)

    def broadcast_(self, tensor):
        import torch.distributed as dist

        dist.broadcast(tensor, src=0)
        return tensor

    def sum_(self, tensor):
        import torch.distributed as dist

        dist.all_reduce(tensor)
        return tensor

    def spread(self, tensors) -> float:
        import torch.distributed as dist

        worst = torch.zeros((), dtype=torch.float64)
        for t in tensors:
            hi, lo = t.detach().clone(), t.detach().clone()
            dist.all_reduce(hi, op=dist.ReduceOp.MAX)
            dist.all_reduce(lo, op=dist.ReduceOp.MIN)
            worst = torch.maximum(worst, (hi - lo).abs().max().double().cpu())
        return float(worst)
