"""Candidate retrieval: the top-K tracks for each query vector, skipping tracks a user must not get.

``ExactRetriever`` scores the whole catalog with one matrix product per batch of users. It is the
reference that faster (approximate) retrievers are tested against. ``IvfRetriever`` (faiss, an inverted file
over k-means cells of the catalog) scores only the tracks of the cells nearest each query, so its cost grows
with ``nprobe / nlist`` of the catalog rather than the whole of it. ``make_retriever`` picks one by setting.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Sequence
from typing import Protocol

import numpy as np

from streams.errors import ConfigError

log = logging.getLogger(__name__)

# ``auto`` uses the inverted file from this catalog size on (below it one matrix product is cheap).
IVF_FROM_TRACKS = 20_000


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


class IvfRetriever:
    """Approximate inner-product search: faiss ``IndexIVFFlat`` over ``nlist`` k-means cells of the catalog,
    ``nprobe`` cells searched per query. Exclusions are honoured exactly (the search asks for ``k`` plus the
    largest exclusion and drops excluded tracks); a query whose probed cells hold too few tracks is answered
    by the exact search. Built once from the embeddings (k-means, a second or two for 50,000 tracks).

    Measured (``python -m loadtests.retrieval_cost``, docs/benchmarks.md): 50,000 x 32 clustered tracks, top 200
    of 64 queries with 32 exclusions each, 512 cells / 16 probed: 98% of the exact top-k for 1/12 of its CPU.
    """

    def __init__(self, embeddings: np.ndarray, nlist: int | None = None, nprobe: int = 16, threads: int = 1) -> None:
        import faiss  # imported here: only catalogs that use the inverted file need it

        self._items = np.ascontiguousarray(embeddings, dtype=np.float32)
        n, d = self._items.shape
        # ~2 sqrt(N) cells (512 at 50,000 tracks), each with enough tracks to train k-means on the catalog.
        self.nlist = nlist or max(1, min(n // 40, 2 ** round(math.log2(max(2.0, 2.0 * math.sqrt(n))))))
        self.nprobe = min(nprobe, self.nlist)
        faiss.omp_set_num_threads(threads)
        self._index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, self.nlist, faiss.METRIC_INNER_PRODUCT)
        self._index.train(self._items)
        self._index.add(self._items)
        self._index.nprobe = self.nprobe
        self._exact = ExactRetriever(self._items)

    def search(self, queries: np.ndarray, exclude: Sequence[Collection[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        n = self._items.shape[0]
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        worst = max((len(e) for e in exclude), default=0)
        k_eff = max(0, min(k, n - worst))
        b_count = len(queries)
        if k_eff == 0 or b_count == 0:
            return np.empty((b_count, k_eff), np.int64), np.empty((b_count, k_eff), np.float32)
        sims, idx = self._index.search(queries, min(n, k_eff + worst))  # best first; -1 where cells ran out
        keep = idx >= 0
        if worst:  # the excluded tracks, padded with -2 (never an index), compared all at once
            banned = np.full((b_count, worst), -2, np.int64)
            for b, ex in enumerate(exclude):
                if ex:
                    banned[b, : len(ex)] = np.fromiter(ex, dtype=np.int64, count=len(ex))
            keep &= ~(idx[:, :, None] == banned[:, None, :]).any(axis=2)
        cols = np.argsort(~keep, axis=1, kind="stable")[:, :k_eff]  # the first k_eff kept, in rank order
        out_idx = np.take_along_axis(idx, cols, axis=1).astype(np.int64)
        out_sims = np.take_along_axis(sims, cols, axis=1)
        short = np.flatnonzero(keep.sum(axis=1) < k_eff).tolist()
        if short:  # too few tracks in the probed cells (or too many of them excluded): the exact answer
            e_idx, e_sims = self._exact.search(queries[short], [exclude[b] for b in short], k_eff)
            out_idx[short], out_sims[short] = e_idx, e_sims
        return out_idx, out_sims


def make_retriever(embeddings: np.ndarray, kind: str = "auto", nprobe: int = 16) -> Retriever:
    """``exact``, ``ivf``, or ``auto`` (the inverted file from ``IVF_FROM_TRACKS`` tracks on)."""
    if kind not in ("auto", "exact", "ivf"):
        raise ConfigError(f"unknown retriever {kind!r}: set SEGUE_SCORING__RETRIEVER to auto, exact or ivf")
    if kind == "ivf" or (kind == "auto" and len(embeddings) >= IVF_FROM_TRACKS):
        retriever = IvfRetriever(embeddings, nprobe=nprobe)
        log.info("retrieval: inverted file, %d cells, %d probed per query", retriever.nlist, retriever.nprobe)
        return retriever
    return ExactRetriever(embeddings)
