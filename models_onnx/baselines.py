"""Next-track baselines over the full training catalog: popularity, the user's own tracks, item-kNN, V-SKNN.

Every method is fitted on ``fold.train`` only and then, for test rows ``rows`` (int64 [B], increasing;
row ``r`` of ``fold.test`` is the play to predict), returns dense scores float32 [B, N] over the
vocabulary. A method may only look at ``fold.test`` rows strictly before ``r`` (the listener's history
and the current session so far). Ties are broken by global popularity scaled below any real signal, so
every method ranks the whole catalog.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from models_onnx.realdata import Fold
from models_onnx.session_knn import neighbour_sessions, session_index, session_tracks


class NextTrack(Protocol):
    """A next-track method: ``fit`` once per fold, then ``scores`` for batches of test rows."""

    name: str

    def fit(self, fold: Fold) -> None: ...

    def scores(self, fold: Fold, rows: np.ndarray) -> np.ndarray: ...


def popularity_prior(fold: Fold) -> np.ndarray:
    """float32 [N] in [0, 1): training play counts, rescaled to break ties without outweighing 1 unit."""
    c = fold.vocab.counts.astype(np.float64)
    return (0.999 * c / (c.max() + 1.0)).astype(np.float32)


class Popularity:
    """Global popularity: the most played training tracks first."""

    name = "popularity"

    def fit(self, fold: Fold) -> None:
        self._prior = popularity_prior(fold)

    def scores(self, fold: Fold, rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self._prior, (len(rows), len(self._prior)))


class UserHistory:
    """The listener's own tracks: by play count (``recency=False``) or by last play (``recency=True``).

    History = the user's plays before the row (training period and test plays so far); popularity after.
    """

    def __init__(self, recency: bool) -> None:
        self.recency = recency
        self.name = "user most-recent" if recency else "user most-played"

    def fit(self, fold: Fold) -> None:
        self._prior = popularity_prior(fold)
        starts, _ = fold.test.user_bounds()
        self._start_of = np.repeat(starts, np.diff(np.append(starts, len(fold.test))))
        self._user, self._upto, self._acc = -1, 0, np.zeros(0, np.float32)

    def _advance(self, fold: Fold, r: int) -> None:
        start = int(self._start_of[r])
        if self._user != fold.test.user[r] or r < self._upto:
            self._user, self._upto = int(fold.test.user[r]), start
            self._acc = np.zeros(len(self._prior), np.float32)
        items = fold.test_items[self._upto : r]
        ok = items >= 0
        if self.recency:
            self._acc[items[ok]] = (np.arange(self._upto, r)[ok] - start + 1).astype(np.float32)
        else:
            np.add.at(self._acc, items[ok], 1.0)
        self._upto = r

    def scores(self, fold: Fold, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), len(self._prior)), np.float32)
        for b, r in enumerate(rows):
            self._advance(fold, int(r))
            np.add(self._acc, self._prior, out=out[b])
        return out


def _session_items(fold: Fold, r: int, max_len: int) -> np.ndarray:
    """Known vocabulary items of the current session before row ``r``, oldest first (at most ``max_len``)."""
    start = r - int(fold.test.pos[r])
    items = fold.test_items[max(start, r - max_len) : r]
    return items[items >= 0]


def _csr(keys_a: np.ndarray, keys_b: np.ndarray, vals: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """(indptr [n+1], cols, vals) of the sparse matrix with summed duplicate (a, b) entries."""
    key, inv = np.unique(keys_a * n + keys_b, return_inverse=True)
    summed = np.bincount(inv, weights=vals)
    a, b = key // n, key % n
    indptr = np.concatenate([[0], np.cumsum(np.bincount(a, minlength=n))])
    return indptr, b, summed


class ItemKNN:
    """Co-occurrence with the last track: tracks played within ``window`` plays of it in training sessions.

    score(j | last i) = sum of 1/distance over co-occurrences / sqrt(count_i * count_j) (cosine-like).
    """

    name = "item-kNN"

    def __init__(self, window: int = 5) -> None:
        self.window = window

    def fit(self, fold: Fold) -> None:
        self._prior = popularity_prior(fold)
        n = len(self._prior)
        items, sess = fold.train_items, fold.train.session
        a_parts, b_parts, w_parts = [], [], []
        for d in range(1, self.window + 1):
            same = sess[:-d] == sess[d:]
            a, b = items[:-d][same], items[d:][same]
            w = np.full(len(a), 1.0 / d)
            a_parts += [a, b]
            b_parts += [b, a]
            w_parts += [w, w]
        a, b, w = np.concatenate(a_parts), np.concatenate(b_parts), np.concatenate(w_parts)
        self._indptr, self._cols, vals = _csr(a, b, w, n)
        cnt = np.maximum(fold.vocab.counts.astype(np.float64), 1.0)
        rows = np.repeat(np.arange(n), np.diff(self._indptr))
        self._vals = (vals / np.sqrt(cnt[rows] * cnt[self._cols])).astype(np.float32)

    def scores(self, fold: Fold, rows: np.ndarray) -> np.ndarray:
        out = np.tile(self._prior * 1e-3, (len(rows), 1))
        for b, r in enumerate(rows):
            sess = _session_items(fold, int(r), 50)
            if len(sess):
                i = int(sess[-1])
                lo, hi = self._indptr[i], self._indptr[i + 1]
                out[b, self._cols[lo:hi]] += self._vals[lo:hi]
        return out


class SessionKNN:
    """V-SKNN: the ``k`` training sessions most similar to the current one vote for their tracks.

    The current session (last ``max_len`` known plays) is a vector with linearly decaying weights (most
    recent 1); a neighbour's similarity is the weighted overlap / sqrt(len(current) * len(neighbour)).
    Candidates are the ``sample`` most recent (by last play) training sessions holding each current track
    (``models_onnx.session_knn``).
    """

    name = "session-kNN (V-SKNN)"

    def __init__(self, k: int = 100, sample: int = 500, max_len: int = 10) -> None:
        self.k, self.sample, self.max_len = k, sample, max_len

    def fit(self, fold: Fold) -> None:
        self._prior = popularity_prior(fold)
        self._index = session_index(fold.train_items, fold.train.session, fold.train.ts_ms, len(self._prior))

    def scores(self, fold: Fold, rows: np.ndarray) -> np.ndarray:
        out = np.tile(self._prior * 1e-3, (len(rows), 1))
        for b, r in enumerate(rows):
            cur = _session_items(fold, int(r), self.max_len)
            cs, sim = neighbour_sessions(self._index, cur, self.k, self.sample)
            if not len(cs):
                continue
            idx, lens = session_tracks(self._index, cs)
            np.add.at(out[b], idx, np.repeat(sim, lens).astype(np.float32))
        return out
