"""What a signature-2 bundle knows of every track (``serving.features.TrackStats``), from training plays.

* Co-occurrence neighbours: tracks played within ``window`` plays of each other in a training session,
  weighted 1/distance and normalised by sqrt(count_i * count_j) (the item-kNN baseline's score,
  ``models_onnx.baselines.ItemKNN``), the top ``m`` per track kept, best first;
* popularity: log1p(training plays) / log1p(max);
* skip rate: the training skip rate smoothed toward the overall rate (``PRIOR_WEIGHT`` pseudo-plays).
"""

from __future__ import annotations

import numpy as np

from models_onnx.realdata import Fold
from models_onnx.skips import PRIOR_WEIGHT
from serving.features import TrackStats


def neighbour_table(
    items: np.ndarray, sessions: np.ndarray, counts: np.ndarray, window: int = 5, m: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """(idx int32 [N, m] with -1 padding, val float32 [N, m]) for plays ``items`` int64 [E] (vocabulary
    index, all >= 0) in time order with their ``sessions`` int64 [E]; ``counts`` int [N] plays per track."""
    n = len(counts)
    a_parts, b_parts, d_parts = [], [], []
    for d in range(1, window + 1):
        same = sessions[:-d] == sessions[d:]
        a, b = items[:-d][same], items[d:][same]
        keep = a != b
        a, b = a[keep], b[keep]
        dist = np.full(len(a), d, np.int64)
        a_parts += [a, b]
        b_parts += [b, a]
        d_parts += [dist, dist]
    a, b = np.concatenate(a_parts).astype(np.int64), np.concatenate(b_parts).astype(np.int64)
    # One plain sort of (pair, distance) packed in an int64 (no argsort, no inverse): equal pairs end up side
    # by side and their 1/distance weights are summed per run.
    bits = max(1, int(window).bit_length())
    packed = np.sort(((a * n + b) << bits) | np.concatenate(d_parts))
    key = packed >> bits
    w = 1.0 / (packed & ((1 << bits) - 1)).astype(np.float64)
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]])) if len(key) else np.zeros(0, np.int64)
    key = key[starts]
    val = np.add.reduceat(w, starts) if len(starts) else np.zeros(0)
    ra, rb = key // n, key % n
    cnt = np.maximum(counts.astype(np.float64), 1.0)
    val = val / np.sqrt(cnt[ra] * cnt[rb])
    # By track, best neighbour first, ties by index: the pairs are in (track, neighbour) order already, so a
    # stable sort on (track, descending value) packed in an int64 keeps the index order among equal values.
    v32 = val.astype(np.float32)
    desc = np.uint32(0xFFFFFFFF) - v32.view(np.uint32)  # positive float32 bits: larger value, smaller key
    order = np.argsort((ra << 32) | desc.astype(np.int64), kind="stable")
    ra, rb, val = ra[order], rb[order], v32[order]
    starts = np.searchsorted(ra, np.arange(n))
    rank = np.arange(len(ra)) - starts[ra]
    keep = rank < m
    idx = np.full((n, m), -1, np.int32)
    out = np.zeros((n, m), np.float32)
    idx[ra[keep], rank[keep]] = rb[keep]
    out[ra[keep], rank[keep]] = val[keep]
    return idx, out


def skip_rates(fold: Fold, exclude: np.ndarray | None = None) -> np.ndarray:
    """float64 [N]: each track's training skip rate, smoothed toward the overall rate; without the training
    rows ``exclude`` (int64 indices) when given."""
    n = len(fold.vocab)
    prior = float(fold.train.skip.mean())
    w = np.ones(len(fold.train))
    if exclude is not None:
        w[exclude] = 0.0
    skips = np.bincount(fold.train_items, weights=w * fold.train.skip, minlength=n)
    counts = np.bincount(fold.train_items, weights=w, minlength=n)
    return (skips + PRIOR_WEIGHT * prior) / (counts + PRIOR_WEIGHT)


def track_stats(fold: Fold, window: int = 5, m: int = 50, exclude: np.ndarray | None = None) -> TrackStats:
    """The ``TrackStats`` of ``fold``'s training plays; without the rows where ``exclude`` (bool [E]) when
    given: what the bundle would know if those plays (say, some listeners' plays) had never been seen."""
    if exclude is None:
        counts, items, sessions, skips = fold.vocab.counts, fold.train_items, fold.train.session, fold.train.skip
    else:
        keep = ~exclude
        items, sessions, skips = fold.train_items[keep], fold.train.session[keep], fold.train.skip[keep]
        counts = np.bincount(items, minlength=len(fold.vocab)).astype(np.int64)
    idx, val = neighbour_table(items, sessions, counts, window, m)
    logc = np.log1p(counts.astype(np.float64))
    return TrackStats(
        neighbour_idx=idx,
        neighbour_val=val,
        popularity=(logc / max(float(logc.max()), 1e-9)).astype(np.float32),
        skip_rate=skip_rates(fold, None if exclude is None else np.flatnonzero(exclude)).astype(np.float32),
        skip_prior=float(skips.mean()),
    )
