"""Item embeddings from session co-occurrence: a truncated SVD of the PPMI matrix (numpy only).

Two tracks that listeners keep (play or like) close together in the same session co-occur, weighted by
1 / distance within a window. The positive pointwise mutual information of those counts, factorised by a
randomised SVD, gives one vector per track. Tracks heard too rarely to have a reliable vector are shrunk
toward their artist's (else genre's) mean vector, so cold tracks still land in the right neighbourhood.
Every output row is L2-normalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def cooccurrence(sessions: Sequence[Sequence[int]], n_items: int, window: int = 4) -> np.ndarray:
    """Symmetric co-occurrence counts float64 [n_items, n_items] of item indices within each session."""
    lengths = [len(s) for s in sessions]
    if not lengths or sum(lengths) == 0:
        return np.zeros((n_items, n_items))
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in sessions])  # [T]
    sid = np.repeat(np.arange(len(sessions)), lengths)  # [T]
    flat = np.zeros(n_items * n_items)
    for d in range(1, window + 1):
        same = sid[:-d] == sid[d:]
        a, b = items[:-d][same], items[d:][same]
        flat += np.bincount(a * n_items + b, minlength=n_items * n_items) / d
    counts = flat.reshape(n_items, n_items)
    return counts + counts.T


def ppmi(counts: np.ndarray, alpha: float = 0.75) -> np.ndarray:
    """Positive PMI float64 [N, N] with context-distribution smoothing ``alpha``."""
    total = counts.sum()
    if total <= 0:
        return np.zeros_like(counts)
    row = counts.sum(axis=1)  # [N]
    ctx = row**alpha
    ctx = ctx / ctx.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(counts / total) - np.log(row / total)[:, None] - np.log(ctx)[None, :]
    pmi[~np.isfinite(pmi)] = 0.0
    return np.maximum(pmi, 0.0)


def randomized_svd(
    m: np.ndarray, rank: int, rng: np.random.Generator, oversample: int = 16, power_iters: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``rank`` left singular vectors [N, rank] and singular values [rank] of ``m`` [N, M]."""
    omega = rng.normal(size=(m.shape[1], rank + oversample))
    q, _ = np.linalg.qr(m @ omega)  # [N, r+p]
    for _ in range(power_iters):
        q, _ = np.linalg.qr(m.T @ q)
        q, _ = np.linalg.qr(m @ q)
    u_small, s, _ = np.linalg.svd(q.T @ m, full_matrices=False)
    u = q @ u_small[:, :rank]  # [N, rank]
    # Fix the sign of each component so the result does not depend on LAPACK's choice.
    signs = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(rank)])
    return u * signs, s[:rank]


def item_embeddings(
    sessions: Sequence[Sequence[int]],
    n_items: int,
    dim: int,
    groups: Sequence[np.ndarray],
    rng: np.random.Generator,
    window: int = 4,
    shrink: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Learn L2-normalised embeddings float32 [n_items, dim] and return them with per-item counts.

    ``groups`` are item-level group ids used as priors for rare items, most specific first
    (e.g. ``[artist_of, genre_of]``, each int [n_items]). An item seen ``n`` times keeps weight
    ``n / (n + shrink)`` on its own vector and gives the rest to its group's mean.
    """
    flat = np.concatenate([np.asarray(s, np.int64) for s in sessions] or [np.zeros(0, np.int64)])
    counts = np.bincount(flat, minlength=n_items).astype(np.float64)  # [N]
    u, s = randomized_svd(ppmi(cooccurrence(sessions, n_items, window)), dim, rng)
    own = _unit(u * np.sqrt(s))  # [N, D]; rows of unseen items are zero
    return shrink_toward_groups(own, counts, groups, rng, shrink), counts


def shrink_toward_groups(
    own: np.ndarray, counts: np.ndarray, groups: Sequence[np.ndarray], rng: np.random.Generator, shrink: float = 4.0
) -> np.ndarray:
    """Blend each item's own vector float [N, D] with its group's mean (most specific group first) and
    return L2-normalised float32 [N, D]. Weight on the own vector is ``counts / (counts + shrink)``; items
    in no group with a vector get a random direction."""
    n_items, dim = own.shape
    prior = np.zeros_like(own)
    missing = np.ones(n_items, dtype=bool)
    for g in groups:
        g = np.asarray(g, dtype=np.int64)
        sums = np.zeros((int(g.max()) + 1, dim))
        np.add.at(sums, g, own * counts[:, None])
        means = _unit(sums)[g]  # [N, D]
        ok = missing & (np.linalg.norm(means, axis=1) > 0)
        prior[ok] = means[ok]
        missing &= ~ok
    prior[missing] = _unit(rng.normal(size=(int(missing.sum()), dim)))
    w = (counts / (counts + shrink))[:, None]
    # A little item-specific noise keeps cold items of one artist from being exact duplicates.
    noise = 0.05 * rng.normal(size=own.shape) / np.sqrt(dim)
    return _unit(w * own + (1.0 - w) * prior + noise).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)
