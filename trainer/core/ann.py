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

`SearchBatcher` coalesces one-query searches that arrive together (concurrent requests) into
one faiss call, which spreads them over the cores and queues them in arrival order; threads
each searching alone took turns unfairly (benchmarks/pages/serving.md, "ANN").
"""

from __future__ import annotations

import hashlib
import math
import os
import queue
import threading
from concurrent.futures import Future

import numpy as np
import torch

HNSW_M = 32
"""Neighbours per node: more is better recall and a bigger, slower-to-build graph."""

EF_CONSTRUCTION = 80
EF_SEARCH_MIN = 256
"""Candidates HNSW keeps while searching (at least 4× the items asked for): more is better
recall for more time a query (benchmarks/pages/serving.md has the trade-off measured)."""
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


def ann_cache_name(items: torch.Tensor) -> str:
    """The cache file name of the graph over `items`: a digest of the vectors, so a graph
    built from other tables is never taken for theirs."""
    data = items.detach().cpu().contiguous().float().numpy().tobytes()
    return f"ann-hnsw-{hashlib.sha256(data).hexdigest()[:20]}.faiss"


def load_or_build(items: torch.Tensor, cache: str | None, write: bool = True):
    """The index cached at `cache` if it is there and fits, else a new one (written there,
    when `write` and the directory allow: a temp file, then a rename)."""
    import faiss

    if cache and os.path.isfile(cache):
        try:
            index = faiss.read_index(cache)
            if index.ntotal == items.shape[0] and index.d == items.shape[1] + 1:
                return index
        except RuntimeError:
            pass  # unreadable: rebuilt below
    index = build_index(items)
    if cache and write:
        tmp = f"{cache}.tmp{os.getpid()}"
        try:
            faiss.write_index(index, tmp)
            os.replace(tmp, cache)
        except (OSError, RuntimeError):
            if os.path.exists(tmp):
                os.remove(tmp)
    return index


def _search(index, q: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
    """The graph's `fetch` nearest items of each query row. The search width goes with the
    call, not onto the shared index: concurrent requests ask for different widths."""
    import faiss

    params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]  # SWIG: no stub
        efSearch=max(EF_SEARCH_MIN, 4 * fetch)
    )
    return index.search(q, fetch, params=params)


def _survivors(found: np.ndarray, seen: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    """The graph's candidates for one row [fetch] (−1: none) less seen and disallowed items."""
    cand = found[found >= 0]
    if cand.size * seen.size <= 1 << 16:  # a request's few dozen: one comparison matrix
        keep = ~(cand[:, None] == seen[None, :]).any(axis=1)
    else:
        keep = ~np.isin(cand, seen)
    if allowed is not None:
        keep &= allowed[cand]
    return cand[keep]


class SearchBatcher:
    """One thread that searches the one-row queries waiting for it as a single batch.

    A caller's rows go in with the number of items it wants (`fetch`); a batch asks every
    row for its largest fetch, and each caller gets its own first `fetch` columns back (a
    wider search of the same query finds at least as good items). The thread ends after
    `idle_s` without work and starts again with the next search, so an evicted model leaves
    no thread behind.
    """

    def __init__(self, index, max_rows: int = 64, idle_s: float = 1.0):
        self.index, self.max_rows, self.idle_s = index, max_rows, idle_s
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False
        self._thread: threading.Thread | None = None

    def search(self, q: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """q [1, d + 1] → (distances, item indices) [1, fetch], as `index.search` gives."""
        done: Future = Future()
        self._jobs.put((q, fetch, done))
        with self._lock:
            if not self._running:
                self._running = True
                self._thread = threading.Thread(target=self._serve, name="ann-search", daemon=True)
                self._thread.start()
        return done.result()

    def _serve(self) -> None:
        while True:
            try:
                batch = [self._jobs.get(timeout=self.idle_s)]
            except queue.Empty:
                with self._lock:  # a search put after the timeout finds the thread gone
                    if self._jobs.empty():
                        self._running = False
                        return
                continue
            while len(batch) < self.max_rows:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            self._answer(batch)

    def _answer(self, batch: list) -> None:
        try:
            fetch = max(job[1] for job in batch)
            dist, found = _search(self.index, np.vstack([job[0] for job in batch]), fetch)
        except Exception as exc:  # the callers see it, and the thread goes on
            if len(batch) > 1:  # one bad row must not fail the others: each searched alone
                for job in batch:
                    self._answer([job])
            else:
                batch[0][2].set_exception(exc)
            return
        for row, (_, want, done) in enumerate(batch):
            done.set_result((dist[row : row + 1, :want], found[row : row + 1, :want]))


class AnnRanker:
    """Top k of query vectors over item vectors through an HNSW index, filters exact."""

    def __init__(self, index, items: torch.Tensor):
        self.index, self.items = index, items
        self._item_array = items.detach().numpy()  # the same memory, cheaper per small call
        self.batcher = SearchBatcher(index)

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
        if allowed is not None and int(allowed.sum()) <= EXACT_BELOW:
            return self._rank_subset(queries, k, seen_rows, torch.nonzero(allowed).squeeze(1))
        banned = 0 if allowed is None else n_items - int(allowed.sum())
        fetch = min(n_items, k + max((len(s) for s in seen_rows), default=0) + banned + 16)
        q = np.zeros((b, queries.shape[1] + 1), np.float32)
        q[:, :-1] = queries.detach().numpy()
        _, found = self.search(q, fetch)
        out_s = np.full((b, k), -np.inf, np.float32)
        out_i = np.zeros((b, k), np.int64)
        ok = None if allowed is None else allowed.numpy()
        for row in range(b):
            seen = seen_rows[row].numpy()
            cand = _survivors(found[row], seen, ok)
            if cand.size < min(k, n_items - seen.size - banned):  # the graph missed: exact
                subset = torch.arange(n_items) if allowed is None else torch.nonzero(allowed)[:, 0]
                s, i = self._rank_subset(
                    queries[row : row + 1], k, seen_rows[row : row + 1], subset
                )
                out_s[row], out_i[row] = s[0].numpy(), i[0].numpy()
                continue
            scores = self._item_array[cand] @ q[row, :-1]
            best = np.argsort(-scores, kind="stable")[:k]  # tens of candidates: a full sort
            out_s[row, : best.size], out_i[row, : best.size] = scores[best], cand[best]
        return torch.from_numpy(out_s), torch.from_numpy(out_i)

    def search(self, q: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """The graph's `fetch` nearest items of each query row [B, d + 1]: one row goes
        through the batcher, with whatever other requests are searching now."""
        if q.shape[0] == 1:
            return self.batcher.search(q, fetch)
        return _search(self.index, q, fetch)

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
