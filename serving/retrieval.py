"""Candidate retrieval: the top-K tracks for each query vector, skipping tracks a user must not get.

``ExactRetriever`` scores the whole catalog with one matrix product per batch of users. It is the
reference that faster (approximate) retrievers are tested against.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

import numpy as np


class Retriever(Protocol):
    """Finds candidate tracks for a batch of query vectors."""

    def search(self, queries: np.ndarray, exclude: Sequence[Collection[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries float32 [B, D] -> (indices int64 [B, k'], similarities float32 [B, k']), best first.

        k' = min(k, catalog size - largest exclusion); ``exclude[b]`` are indices never returned for b."""
        ...


class ExactRetriever:
    """Brute-force inner-product search over an in-memory embedding matrix float32 [N, D]."""

    def __init__(self, embeddings: np.ndarray) -> None:
        self._items = np.ascontiguousarray(embeddings, dtype=np.float32)

    def search(self, queries: np.ndarray, exclude: Sequence[Collection[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        n = self._items.shape[0]
        sims = np.asarray(queries, dtype=np.float32) @ self._items.T  # [B, N]
        worst = max((len(e) for e in exclude), default=0)
        k_eff = max(0, min(k, n - worst))
        for b, ex in enumerate(exclude):
            if ex:
                sims[b, np.fromiter(ex, dtype=np.int64, count=len(ex))] = -np.inf
        if k_eff == 0:
            return np.empty((len(sims), 0), np.int64), np.empty((len(sims), 0), np.float32)
        part = np.argpartition(-sims, k_eff - 1, axis=1)[:, :k_eff]  # [B, k] unordered
        part_sims = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_sims, axis=1, kind="stable")
        idx = np.take_along_axis(part, order, axis=1)
        return idx.astype(np.int64), np.take_along_axis(part_sims, order, axis=1)
