"""trainer/core/ann.py's SearchBatcher: concurrent one-row searches share faiss calls and each
caller gets what a search of its own row would have found."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest
import torch

from trainer.core.ann import SearchBatcher, _search, build_index


@pytest.fixture(scope="module")
def index():
    g = torch.Generator().manual_seed(0)
    return build_index(torch.nn.functional.normalize(torch.randn(3000, 8, generator=g), dim=1))


def _queries(n: int) -> np.ndarray:
    q = np.random.default_rng(1).standard_normal((n, 9)).astype(np.float32)
    q[:, -1] = 0
    return q


def test_concurrent_searches_are_batched_and_each_gets_its_own_row(index):
    """16 threads search at once, asking for different widths: the batcher's calls hold
    several rows, and every answer equals that row's search alone at the same width."""
    batcher = SearchBatcher(index)
    sizes: list[int] = []
    answer = batcher._answer
    batcher._answer = lambda batch: (sizes.append(len(batch)), time.sleep(0.002), answer(batch))
    queries, got = _queries(16), {}
    start = threading.Barrier(16)

    def client(row: int) -> None:
        start.wait()
        for _ in range(5):
            got[row] = batcher.search(queries[row : row + 1], 10 + row)

    threads = [threading.Thread(target=client, args=(r,)) for r in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(sizes) == 80 and max(sizes) > 1
    for row, (dist, found) in got.items():
        assert found.shape == (1, 10 + row)
        alone = _search(index, queries[row : row + 1], 10 + row)[1][0]
        # a batch searches each row at its widest width: at least as good, mostly the same
        assert len(set(found[0]) & set(alone)) >= 0.9 * (10 + row)
        assert np.all(np.diff(dist[0]) >= 0)


def test_a_failed_search_reaches_its_callers_and_an_idle_thread_ends(index):
    batcher = SearchBatcher(index, idle_s=0.05)
    with pytest.raises(AssertionError):  # faiss refuses a row of the wrong width
        batcher.search(np.zeros((1, 3), np.float32), 5)
    assert batcher.search(_queries(1), 5)[1].shape == (1, 5)  # the thread went on
    # In a batch, a bad row fails only its own caller; the others are answered.
    bad, good = Future(), Future()
    batcher._answer([(np.zeros((1, 3), np.float32), 5, bad), (_queries(1), 5, good)])
    assert isinstance(bad.exception(timeout=5), AssertionError)
    assert good.result(timeout=5)[1].shape == (1, 5)
    batcher._thread.join(timeout=5)
    assert not batcher._thread.is_alive() and not batcher._running  # idle: the thread ended
    assert batcher.search(_queries(1), 5)[1].shape == (1, 5)  # and starts again when asked
