"""The evaluation's incremental listener history equals ``serving.features.listener_history`` row by row."""

from __future__ import annotations

import numpy as np

from models_onnx.realmodel import HistoryCache
from serving.features import HISTORY_WINDOW, listener_history


def test_incremental_history_is_the_recomputed_one() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    items = rng.integers(-1, 60, n)  # -1: outside the catalog
    items[1000:1400] = rng.integers(0, 5, 400)  # a session that replays a few tracks
    skips = rng.random(n) < 0.3
    starts = np.array([0, 1500])  # two users
    session_starts = np.array([0, 300, 900, 1000, 1500, 1510, 3600])
    cache = HistoryCache()
    rows = np.sort(np.concatenate([rng.choice(n, 600, replace=False), np.arange(1000, 1400)]))
    rows = np.concatenate([rows, [3700, 3650]])  # a step back recomputes
    for r in np.unique(rows).tolist() + [3700, 3650]:
        start = int(starts[starts <= r].max())
        s0 = int(session_starts[session_starts <= r].max())
        got = cache.get(items, skips, start, r, s0)
        want = listener_history(items, skips, start, r, HISTORY_WINDOW, s0)
        np.testing.assert_array_equal(got.tracks, want.tracks)
        np.testing.assert_array_equal(got.counts, want.counts)
        assert (got.plays, got.skips, got.last_skip, got.session_plays) == (
            want.plays, want.skips, want.last_skip, want.session_plays,
        )  # fmt: skip
        np.testing.assert_array_equal(got.follows, want.follows)
