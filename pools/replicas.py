"""State that every data-parallel worker holds a copy of, and how the copies stay identical.

In one process there is one copy and nothing to do (`Replicas`). Under Ray Train the driver
passes a collective implementation (trainer/distributed/collective_replicas.py): the samplers call it for what they
keep replicated (IRGAN's generator item table) and for batch-level statistics that must be over
the global batch, not each worker's share (AdaSIR-W's and WARP's batch-mean normalisers).
pools/ stays free of torch.distributed: it only sees this interface.
"""

from __future__ import annotations

import torch


class Replicas:
    """One process: every operation is the identity."""

    world_size: int = 1

    def average_(self, tensor: torch.Tensor) -> torch.Tensor:
        """In place: the mean of `tensor` over the workers (every worker gets the same values)."""
        return tensor

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        """In place: rank 0's values on every worker (for replicated state at creation)."""
        return tensor

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """In place: the sum of `tensor` over the workers (sharded evaluation's metric sums)."""
        return tensor

    def spread(self, tensors: list[torch.Tensor]) -> float:
        """max |x_w − x_v| over workers w, v and every element of `tensors`: 0 for one copy."""
        return 0.0
