"""Artist separation: recent artists' tracks go behind the rest, in order, and only within the window."""

from __future__ import annotations

import numpy as np

from serving.separation import artist_codes, demote_recent_artists
from streams.session import SessionState

ARTISTS = artist_codes(["a", "a", "b", "b", "c", "", "c"])  # tracks 0..6


def _state(recent: tuple[int, ...]) -> SessionState:
    return SessionState(
        pos=np.zeros(2, np.float32),
        neg=np.zeros(2, np.float32),
        taste=np.zeros(2, np.float32),
        recent=recent,
        outcomes=tuple(0 for _ in recent),
    )


def test_codes_per_artist_and_unknown():
    assert ARTISTS.tolist() == [0, 0, 1, 1, 2, -1, 2]


def test_recent_artists_go_behind_the_rest_in_order():
    idx = np.array([[1, 3, 4, 6, 5]])
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]], np.float32)
    out = demote_recent_artists([_state((0, 2))], idx, scores, ARTISTS, window=3)  # artists a and b heard
    order = idx[0][np.argsort(-out[0], kind="stable")]
    assert order.tolist() == [4, 6, 5, 1, 3]
    assert scores[0, 0] == 5.0  # input untouched


def test_window_unknown_artist_ineligible_and_all_held():
    idx = np.array([[1, 4, 5]])
    scores = np.array([[3.0, 2.0, -np.inf]], np.float32)
    # only the last track (artist c) is in a window of 1: track 4 is held back, track 1 (artist a) is not
    out = demote_recent_artists([_state((0, 4))], idx, scores, ARTISTS, window=1)
    assert out[0, 0] == 3.0 and out[0, 1] < 3.0 and out[0, 2] == -np.inf
    assert np.array_equal(demote_recent_artists([_state((5,))], idx, scores, ARTISTS), scores)  # unknown artist
    assert np.array_equal(
        demote_recent_artists([_state((0,))], np.array([[0, 1]]), scores[:, :2], ARTISTS), scores[:, :2]
    )  # everything held back: nothing to move ahead
    assert np.array_equal(demote_recent_artists([_state((0,))], idx, scores, ARTISTS, window=0), scores)


def _one_by_one(states, idx, scores, artists, window):
    """The rule stated per user, as a reference for the batched implementation."""
    out = np.array(scores, dtype=np.float32, copy=True)
    for b, state in enumerate(states):
        recent = {int(a) for a in artists[list(state.recent[-window:])] if a >= 0} if state.recent else set()
        held = np.isin(artists[idx[b]], list(recent)) & np.isfinite(out[b])
        if recent and held.any() and not held.all():
            finite = out[b][np.isfinite(out[b])]
            out[b, held] -= float(finite.max() - finite.min()) + 1.0
    return out


def test_batched_rule_equals_the_rule_per_user():
    rng = np.random.default_rng(3)
    artists = rng.integers(-1, 6, size=40)
    states = [_state(tuple(rng.integers(0, 40, size=rng.integers(0, 6)).tolist())) for _ in range(50)]
    idx = rng.integers(0, 40, size=(50, 12))
    scores = rng.standard_normal((50, 12)).astype(np.float32)
    scores[rng.random((50, 12)) < 0.1] = -np.inf
    for window in (1, 3, 5):
        expected = _one_by_one(states, idx, scores, artists, window)
        assert np.array_equal(demote_recent_artists(states, idx, scores, artists, window), expected)
