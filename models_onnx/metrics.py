"""Offline metrics: ranking quality of the next track, skip prediction, and cluster-bootstrap intervals.

Ranks are 1-based and float (ties share the mean of their positions); ``np.inf`` means the true next
track could not be ranked at all (outside the training catalog): a miss for every ranking metric.
All functions are pure numpy; per-position values are averaged with the same weights in the bootstrap.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def hit(ranks: np.ndarray, k: int) -> np.ndarray:
    """float [P]: 1 where the true track is in the top ``k``."""
    return (ranks <= k).astype(np.float64)


def reciprocal_rank(ranks: np.ndarray, k: int) -> np.ndarray:
    """float [P]: 1 / rank inside the top ``k``, else 0 (MRR@k per position)."""
    return np.where(ranks <= k, 1.0 / np.maximum(ranks, 1.0), 0.0)


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """float [P]: 1 / log2(rank + 1) inside the top ``k``, else 0 (one relevant item, so IDCG = 1)."""
    return np.where(ranks <= k, 1.0 / np.log2(np.maximum(ranks, 1.0) + 1.0), 0.0)


def rank_of(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """float [B]: the mean-tie 1-based rank of column ``target[b]`` in row ``scores[b]`` [B, N]; inf if < 0."""
    rows = np.arange(scores.shape[0])
    t = np.maximum(target, 0)
    own = scores[rows, t][:, None]
    greater = (scores > own).sum(axis=1)
    ties = (scores == own).sum(axis=1) - 1
    return np.where(target >= 0, 1.0 + greater + ties / 2.0, np.inf)


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """AUC: P(score of a positive > score of a negative), ties half; ``weights`` [R, P] gives R values.

    Without weights returns a 0-d array. NaN where a class has no weight.
    """
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels).astype(bool)
    w = np.ones((1, len(scores))) if weights is None else np.atleast_2d(weights).astype(np.float64)
    order = np.argsort(scores, kind="stable")
    s, y, w = scores[order], labels[order], w[:, order]
    _, first, counts = np.unique(s, return_index=True, return_counts=True)
    group = np.repeat(np.arange(len(first)), counts)
    wn = np.where(~y, w, 0.0)
    wp = np.where(y, w, 0.0)
    # per tie group: negative weight strictly below, and negative weight within the group
    neg_group = np.add.reduceat(wn, first, axis=1) if len(s) else np.zeros((w.shape[0], 0))
    below = np.cumsum(neg_group, axis=1) - neg_group
    credit = below[:, group] + 0.5 * neg_group[:, group]
    num = (wp * credit).sum(axis=1)
    den = wp.sum(axis=1) * wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / den, np.nan)
    return out[0] if weights is None else out


def average_accuracy(correct: np.ndarray) -> float:
    """WSDM Cup 2019 average accuracy of one session's ordered predictions: mean over i of A(i)·L(i).

    ``correct`` bool [T]: L(i) is whether prediction i is right, A(i) the accuracy of predictions 1..i.
    """
    c = np.asarray(correct, np.float64)
    if len(c) == 0:
        return float("nan")
    acc = np.cumsum(c) / np.arange(1, len(c) + 1)
    return float((acc * c).sum() / len(c))


def session_average_accuracy(
    correct: np.ndarray, session: np.ndarray, pos: np.ndarray, length: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """WSDM average accuracy over the second half of each session: (session ids [S], AA [S]).

    Rows are predictions; a row counts when ``pos >= length // 2`` (``length``: the session's plays).
    Within a session the rows are taken in ``pos`` order.
    """
    second = pos >= length // 2
    sess, p, c = session[second], pos[second], np.asarray(correct)[second]
    order = np.lexsort((p, sess))
    sess, c = sess[order], c[order]
    ids, starts = np.unique(sess, return_index=True)
    aa = np.array([average_accuracy(part) for part in np.split(c, starts[1:])]) if len(ids) else np.zeros(0)
    return ids, aa


class Bootstrap:
    """Cluster bootstrap over users: ``reps`` replicates of multinomial user counts, fixed by ``seed``.

    The same replicates serve every method, so differences between methods are paired.
    """

    def __init__(self, cluster: np.ndarray, reps: int = 1000, seed: int = 0) -> None:
        self.clusters, self.inverse = np.unique(cluster, return_inverse=True)
        n = len(self.clusters)
        rng = np.random.default_rng([seed, 17])
        self.counts = rng.multinomial(n, np.full(n, 1.0 / n), size=reps).astype(np.float64)  # [R, C]

    def row_weights(self) -> np.ndarray:
        """float [R, P]: each position weighted by how often its user was drawn."""
        return self.counts[:, self.inverse]

    def mean(
        self, values: np.ndarray, mask: np.ndarray | None = None, cluster: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        """(point estimate, replicate values [R]) of the mean of ``values`` over rows (where ``mask``).

        ``cluster`` gives the rows' users when ``values`` are not the positions the bootstrap was built on
        (e.g. one value per session); users unknown to the bootstrap are ignored.
        """
        m = np.ones(len(values), bool) if mask is None else mask.copy()
        inv = self.inverse
        if cluster is not None:
            inv = np.clip(np.searchsorted(self.clusters, cluster), 0, len(self.clusters) - 1)
            m &= self.clusters[inv] == cluster
        v = np.where(m, values, 0.0)
        sums = np.bincount(inv, weights=v, minlength=len(self.clusters))
        cnts = np.bincount(inv, weights=m.astype(np.float64), minlength=len(self.clusters))
        with np.errstate(invalid="ignore", divide="ignore"):
            reps = (self.counts @ sums) / (self.counts @ cnts)
        return float(sums.sum() / max(cnts.sum(), 1e-12)), reps

    def statistic(self, fn: Callable[[np.ndarray | None], np.ndarray], chunk: int = 100) -> tuple[float, np.ndarray]:
        """(point, replicates [R]) of ``fn(weights)``, where ``fn(None)`` is the unweighted value."""
        w = self.row_weights()
        reps = np.concatenate([np.atleast_1d(fn(w[s : s + chunk])) for s in range(0, len(w), chunk)])
        return float(fn(None)), reps


def ci(reps: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaNs ignored)."""
    a = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(reps, [a, 1.0 - a])
    return float(lo), float(hi)
