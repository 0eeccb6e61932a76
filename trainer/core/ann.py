"""Approximate top-k for large catalogues: an HNSW graph (faiss) over the item vectors.

Inner products are searched as Euclidean distances after the usual augmentation: each item
vector v gets one more coordinate sqrt(R² − ‖v‖²) (R the largest norm) and each query a 0,
so ‖q − v‖² = ‖q‖² + R² − 2 q·v orders items exactly as q·v does. Raw inner-product HNSW
loses recall on unnormalised vectors; with cosine models (unit vectors) the extra coordinate
is 0 and this is plain cosine search.

`AnnRanker.rank` keeps the filters exact: it asks the graph for k plus as many items as a
row may have masked, drops masked and disallowed items, re-scores the rest exactly, and
ranks a row exactly whenever too few survive (or when an allow-list is small enough to score
directly).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

HNSW_M = 32
"""Neighbours per node: more is better recall and a bigger, slower-to-build graph."""

EF_CONSTRUCTION = 80
EF_SEARCH_MIN = 256
"""Candidates HNSW keeps while searching (at least 4× the items asked for): more is better
recall for more time a query (benchmarks/README.md has the trade-off measured)."""
EXACT_BELOW = 50_000
"""Allow-lists of at most this many items are scored exactly instead of searched."""


def _augment(items: np.ndarray) -> np.ndarray:
    norms = np.einsum("ij,ij->i", items, items)
    extra = np.sqrt(np.maximum(norms.max() - norms, 0.0))[:, None]
    return np.ascontiguousarray(np.hstack([items, extra]), dtype=np.float32)


def build_index(items: torch.Tensor):
    """The HNSW graph over `items` [N, d] (augmented to d + 1)."""
    import faiss

    vectors = _augment(items.detach().cpu().numpy().astype(np.float32))
    index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.add(vectors)
    return index


def load_or_build(items: torch.Tensor, cache: str | None):
    """The index cached at `cache` if it is there and fits, else a new one (written there
    when the directory allows: a temp file, then a rename)."""
    import faiss

    if cache and os.path.isfile(cache):
        try:
            index = faiss.read_index(cache)
            if index.ntotal == items.shape[0] and index.d == items.shape[1] + 1:
                return index
        except RuntimeError:
            pass  # unreadable: rebuilt below
    index = build_index(items)
    if cache:
        tmp = f"{cache}.tmp{os.getpid()}"
        try:
            faiss.write_index(index, tmp)
            os.replace(tmp, cache)
        except (OSError, RuntimeError):
            if os.path.exists(tmp):
                os.remove(tmp)
    return index


class AnnRanker:
    """Top k of query vectors over item vectors through an HNSW index, filters exact."""

    def __init__(self, index, items: torch.Tensor):
        self.index, self.items = index, items

    def rank(
        self,
        queries: torch.Tensor,
        k: int,
        seen_rows: list[torch.Tensor],
        allowed: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries [B, d]; seen_rows[b]: item indices masked for row b → (scores, items)
        [B, k], −inf where nothing is left."""
        n_items = self.items.shape[0]
        b = queries.shape[0]
        out_s = torch.full((b, k), -math.inf)
        out_i = torch.zeros((b, k), dtype=torch.long)
        if allowed is not None and int(allowed.sum()) <= EXACT_BELOW:
            return self._rank_subset(queries, k, seen_rows, torch.nonzero(allowed).squeeze(1))
        banned = 0 if allowed is None else n_items - int(allowed.sum())
        fetch = min(n_items, k + max((len(s) for s in seen_rows), default=0) + banned + 16)
        q = np.hstack([queries.numpy(), np.zeros((b, 1), np.float32)]).astype(np.float32)
        _, found = self.search(q, fetch)
        for row in range(b):
            cand = torch.as_tensor(found[row][found[row] >= 0], dtype=torch.long)
            keep = ~torch.isin(cand, seen_rows[row])
            if allowed is not None:
                keep &= allowed[cand]
            cand = cand[keep]
            if cand.numel() < min(k, n_items - len(seen_rows[row]) - banned):
                s, i = self._rank_subset(
                    queries[row : row + 1],
                    k,
                    seen_rows[row : row + 1],
                    torch.arange(n_items) if allowed is None else torch.nonzero(allowed).squeeze(1),
                )
                out_s[row], out_i[row] = s[0], i[0]
                continue
            scores = self.items[cand] @ queries[row]
            top = scores.topk(min(k, cand.numel()))
            out_s[row, : top.values.numel()] = top.values
            out_i[row, : top.indices.numel()] = cand[top.indices]
        return out_s, out_i

    def search(self, q: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """The graph's `fetch` nearest items of each query row. The search width goes with
        the call, not onto the shared index: concurrent requests ask for different widths."""
        import faiss

        params = faiss.SearchParametersHNSW(efSearch=max(EF_SEARCH_MIN, 4 * fetch))
        return self.index.search(q, fetch, params=params)

    def _rank_subset(self, queries, k, seen_rows, subset: torch.Tensor):
        """Exact top k over the items in `subset`, each row's seen items masked."""
        scores = queries @ self.items[subset].T
        for row, seen in enumerate(seen_rows):
            scores[row, torch.isin(subset, seen)] = -math.inf
        top = scores.topk(min(k, subset.numel()), dim=1)
        s = torch.full((queries.shape[0], k), -math.inf)
        i = torch.zeros((queries.shape[0], k), dtype=torch.long)
        s[:, : top.values.shape[1]] = top.values
        i[:, : top.indices.shape[1]] = subset[top.indices]
        return s, i
