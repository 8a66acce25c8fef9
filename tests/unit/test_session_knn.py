"""Session-kNN: the index of training sessions, V-SKNN similarity and scores."""

from __future__ import annotations

import numpy as np
import pytest

from models_onnx.session_knn import neighbour_sessions, session_index, session_tracks

# five training sessions over tracks 0..7 (session ids need not be contiguous), one play a minute
ITEMS = np.array([0, 1, 2, 1, 2, 3, 0, 1, 5, 6, 7, 7, 2, 4])
SESSIONS = np.array([10, 10, 10, 11, 11, 11, 12, 12, 12, 13, 13, 13, 14, 14])
TS = np.arange(len(ITEMS), dtype=np.int64) * 60_000


def _index():
    return session_index(ITEMS, SESSIONS, TS, 8)


def test_index_holds_each_sessions_distinct_tracks_and_each_tracks_sessions_most_recent_first() -> None:
    ix = _index()
    assert ix.n_sessions == 5 and ix.n_tracks == 8 and len(ix) == 13  # session 13 plays 7 twice
    tracks, lens = session_tracks(ix, np.array([3, 0]))
    assert lens.tolist() == [2, 3] and tracks.tolist() == [6, 7, 0, 1, 2]
    assert ix.item_sessions[ix.item_ptr[1] : ix.item_ptr[2]].tolist() == [2, 1, 0]  # track 1: sessions 12, 11, 10
    assert ix.item_sessions[ix.item_ptr[4] : ix.item_ptr[5]].tolist() == [4]


def test_similarity_is_the_decayed_overlap_over_the_geometric_mean_of_lengths() -> None:
    ix = _index()
    cs, sim = neighbour_sessions(ix, np.array([1, 2]))  # weights 1/2 (track 1), 1 (track 2)
    got = dict(zip(cs.tolist(), sim.tolist(), strict=True))
    assert got[0] == pytest.approx(1.5 / np.sqrt(2 * 3))  # session 10 holds 1 and 2
    assert got[1] == pytest.approx(1.5 / np.sqrt(2 * 3))
    assert got[2] == pytest.approx(0.5 / np.sqrt(2 * 3))  # only 1
    assert got[4] == pytest.approx(1.0 / np.sqrt(2 * 2))  # only 2
    assert 3 not in got
    # k keeps the most similar; sample looks only at each track's most recent sessions
    assert sorted(neighbour_sessions(ix, np.array([1, 2]), k=2)[0].tolist()) == [0, 1]
    assert sorted(neighbour_sessions(ix, np.array([2]), sample=1)[0].tolist()) == [4]
    assert len(neighbour_sessions(ix, np.zeros(0, np.int64))[0]) == 0


class _Fold:  # what SessionKNN reads of a fold
    class train:  # noqa: N801
        session, ts_ms = SESSIONS, TS

    class test:  # noqa: N801
        pos = np.array([0, 1, 2])

    class vocab:  # noqa: N801
        counts = np.bincount(ITEMS, minlength=8)

    train_items, test_items = ITEMS, np.array([1, 2, 5])


def test_the_baseline_sums_the_similarity_of_the_neighbours_holding_each_track() -> None:
    from models_onnx.baselines import SessionKNN

    s = dict(zip(*(a.tolist() for a in neighbour_sessions(_index(), np.array([1, 2]))), strict=True))
    m = SessionKNN()
    m.fit(_Fold)  # type: ignore[arg-type]
    out = m.scores(_Fold, np.array([2]))[0]  # type: ignore[arg-type]  # the session so far: tracks 1, 2
    want = {0: s[0] + s[2], 1: s[0] + s[1] + s[2], 2: s[0] + s[1] + s[4], 3: s[1], 4: s[4], 5: s[2], 6: 0.0, 7: 0.0}
    for track, score in want.items():
        assert out[track] == pytest.approx(score, abs=1e-3)  # plus a popularity tie-break below 1e-3
    assert int(np.argmax(out)) == 2
