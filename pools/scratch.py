"""A reused buffer for gathered rows (samplers scoring their candidates)."""

from __future__ import annotations

import torch


class RowScratch:
    """A reused buffer for rows gathered from a table outside autograd (a sampler scoring its
    candidates). A fresh [2,048, 200, 32] float tensor is 52 MB, above glibc's largest mmap
    threshold (32 MB): each one is mapped, page-faulted and zeroed by the kernel, which costs
    several times the gather itself (benchmarks/kernels.py). One owner, one thread: not shared."""

    def __init__(self):
        self._buffer: torch.Tensor | None = None

    def gather(self, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """table [N, d], index [...] → table rows [..., d], a view of the buffer (valid until
        the next gather)."""
        n, d = index.numel(), table.shape[1]
        buf = self._buffer
        if (
            buf is None
            or buf.numel() < n * d
            or buf.dtype != table.dtype
            or buf.device != table.device
        ):
            buf = self._buffer = torch.empty(n * d, dtype=table.dtype, device=table.device)
        out = buf[: n * d].view(n, d)
        torch.index_select(table.detach(), 0, index.reshape(-1), out=out)
        return out.view(*index.shape, d)
