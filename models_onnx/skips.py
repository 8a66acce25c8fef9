"""Skip baselines: will the next played track be skipped (played < 30 s)? Each gives P(skip) per test row.

* ``user_skip_rate``: the listener's skip rate over all their plays before the row (smoothed);
* ``same_as_previous``: 1 if the previous play of the session was skipped, else 0;
* ``SkipLogReg``: logistic regression on simple features (``skip_features``), fitted on training rows.

Only plays before the row are used; track skip rates come from the training plays (leave-one-out on them).
"""

from __future__ import annotations

import math

import numpy as np

from models_onnx.realdata import Fold, Plays

PRIOR_WEIGHT = 10.0
FEATURES = (
    "prev_skip",
    "user_skip_rate",
    "track_skip_rate",
    "session_skip_rate",
    "log_position",
    "hour_sin",
    "hour_cos",
)


def _cumulative_before(plays: Plays, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum of ``values``, count) over the same user's rows strictly before each row, float [E] each."""
    starts, ends = plays.user_bounds()
    c = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    first = np.repeat(starts, ends - starts)
    rows = np.arange(len(plays))
    return c[rows] - c[first], (rows - first).astype(np.float64)


def user_rate(plays: Plays, prior: float) -> np.ndarray:
    """float [E]: smoothed skip rate of each row's user over their earlier plays."""
    s, n = _cumulative_before(plays, plays.skip.astype(np.float64))
    return (s + PRIOR_WEIGHT * prior) / (n + PRIOR_WEIGHT)


def session_rate(plays: Plays) -> np.ndarray:
    """float [E]: skip rate of the earlier plays of the row's session (0 at its first play)."""
    c = np.concatenate([[0.0], np.cumsum(plays.skip, dtype=np.float64)])
    rows = np.arange(len(plays))
    start = rows - plays.pos
    return np.where(plays.pos > 0, (c[rows] - c[start]) / np.maximum(plays.pos, 1), 0.0)


def user_skip_rate(fold: Fold, rows: np.ndarray) -> np.ndarray:
    prior = float(fold.train.skip.mean())
    return user_rate(fold.test, prior)[rows]


def same_as_previous(fold: Fold, rows: np.ndarray) -> np.ndarray:
    """Rows must continue a session (``pos > 0``)."""
    return fold.test.skip[rows - 1].astype(np.float64)


def skip_features(
    plays: Plays, items: np.ndarray, rows: np.ndarray, track_rate: np.ndarray, prior: float
) -> np.ndarray:
    """float64 [R, len(FEATURES)] for rows that continue a session; ``track_rate`` float [N] by item."""
    hour = (plays.ts_ms[rows] / 3_600_000.0) % 24.0
    angle = 2.0 * math.pi * hour / 24.0
    it = items[rows]
    return np.stack(
        [
            plays.skip[rows - 1].astype(np.float64),
            user_rate(plays, prior)[rows],
            np.where(it >= 0, track_rate[np.maximum(it, 0)], prior),
            session_rate(plays)[rows],
            np.log1p(plays.pos[rows]) / 4.0,
            np.sin(angle),
            np.cos(angle),
        ],
        axis=1,
    )


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-4, iters: int = 25) -> np.ndarray:
    """Weights float [F + 1] (last = bias) of an L2-regularised logistic regression, by Newton's method."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - y) / len(y) + l2 * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb / len(y) + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


class SkipLogReg:
    """Logistic regression on ``FEATURES``, fitted on the training plays that continue a session."""

    name = "logistic regression"

    def fit(self, fold: Fold) -> None:
        train = fold.train
        self._prior = float(train.skip.mean())
        n = len(fold.vocab)
        skips = np.bincount(fold.train_items, weights=train.skip.astype(np.float64), minlength=n)
        counts = np.bincount(fold.train_items, minlength=n).astype(np.float64)
        self._track_rate = (skips + PRIOR_WEIGHT * self._prior) / (counts + PRIOR_WEIGHT)
        rows = np.flatnonzero(train.pos > 0)
        it = fold.train_items[rows]
        y = train.skip[rows].astype(np.float64)
        loo = (skips[it] - y + PRIOR_WEIGHT * self._prior) / (counts[it] - 1.0 + PRIOR_WEIGHT)
        x = skip_features(train, fold.train_items, rows, self._track_rate, self._prior)
        x[:, 2] = loo
        self.weights = fit_logistic(x, y)

    def predict(self, fold: Fold, rows: np.ndarray) -> np.ndarray:
        x = skip_features(fold.test, fold.test_items, rows, self._track_rate, self._prior)
        z = np.hstack([x, np.ones((len(x), 1))]) @ self.weights
        return 1.0 / (1.0 + np.exp(-z))
