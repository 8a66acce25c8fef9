"""Session-kNN blended into the served list: the merge, the lists, the bundle's index, the rescorer's use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models_onnx.bundle import read_manifest, read_session_index, write_bundle
from models_onnx.session_knn import neighbour_sessions, session_index, session_tracks
from serving.explain import KIND_SESSIONS, REASON_CODES, SIMILAR_SESSIONS, Explainer, Explanations
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.session_blend import SessionNeighbours, alternate, load_neighbours
from streams.errors import ModelError
from streams.session import PLAYED, SessionState

# five training sessions over tracks 0..7, one play a minute (as tests/unit/test_session_knn.py)
ITEMS = np.array([0, 1, 2, 1, 2, 3, 0, 1, 5, 6, 7, 7, 2, 4])
SESSIONS = np.array([10, 10, 10, 11, 11, 11, 12, 12, 12, 13, 13, 13, 14, 14])
TS = np.arange(len(ITEMS), dtype=np.int64) * 60_000


def test_alternate_takes_places_in_turn_and_skips_what_is_listed() -> None:
    tracks, second = alternate(np.array([5, 1, 2, 3]), np.array([1, 9, 5, 8]), 6)
    assert tracks.tolist() == [5, 1, 2, 9, 3, 8] and second.tolist() == [False, True, False, True, False, True]
    tracks, second = alternate(np.array([4, 6]), np.array([], dtype=np.int64), 5)  # one list runs out
    assert tracks.tolist() == [4, 6] and not second.any()
    assert alternate(np.array([1, 2, 3]), np.array([7, 8]), 2)[0].tolist() == [1, 7]


def test_lists_rank_by_the_baselines_scores() -> None:
    index = session_index(ITEMS, SESSIONS, TS, 8)
    knn = SessionNeighbours(index, n=5)
    state = SessionState.empty(4)
    lists = knn.lists([_with_recent(state, (1, 2)), state])
    assert lists[1].tolist() == []  # no session yet: nothing to vote with
    # V-SKNN's scores (the baseline's own summation) for the session (1, 2): the best five, ties by index
    scores = _baseline_scores(np.array([1, 2]))
    expected = sorted(np.flatnonzero(scores > 0).tolist(), key=lambda t: (-scores[t], t))[:5]
    assert lists[0].tolist() == expected


def test_the_bundle_carries_the_index_and_checks_it(tmp_path: Path) -> None:
    index = session_index(ITEMS, SESSIONS, TS, 8)
    items = np.eye(8, 4, dtype=np.float32)
    items[4:] = np.eye(4, dtype=np.float32)
    tracks = [{"track_id": f"t{i}", "artist_id": "", "genre": "", "popularity": 0.5, "features": {}} for i in range(8)]
    plain = write_bundle(tmp_path / "plain", b"onnx", items, tracks, "v-1", {})
    assert read_session_index(plain, read_manifest(plain)) is None and load_neighbours(plain) is None
    out = write_bundle(tmp_path / "b", b"onnx", items, tracks, "v-1", {}, sessions=index)
    manifest = read_manifest(out)
    assert manifest["session_index"] == {"file": "sessions.npz", "format_version": 1, "sessions": 5, "pairs": 13}
    back = read_session_index(out, manifest)
    assert back is not None
    for name in ("session_ptr", "session_items", "item_ptr", "item_sessions"):
        assert getattr(back, name).tolist() == getattr(index, name).tolist()
    knn = load_neighbours(out)
    assert knn is not None and len(knn.index) == 13
    with pytest.raises(ModelError, match="covers 8 tracks"):
        write_bundle(tmp_path / "c", b"onnx", items[:4], tracks[:4], "v-1", {}, sessions=index)
    manifest["session_index"]["pairs"] = 12
    with pytest.raises(ModelError, match="does not match"):
        read_session_index(out, manifest)


class _Dot:
    """A model that scores a candidate by its dot product with the session's positive vector."""

    provider, model_version = "test", "t"

    def score(self, pos, neg, taste, context, candidates):
        return np.einsum("bkd,bd->bk", candidates, pos).astype(np.float32)


def test_the_rescorer_alternates_session_knn_tracks_with_the_models() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(8, 4)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = session_index(ITEMS, SESSIONS, TS, 8)
    model = _Dot()
    explainer = Explainer(model, emb)
    plain = Rescorer(emb, ExactRetriever(emb), model, n_candidates=8, n_recs=6, explainer=explainer)
    blended = Rescorer(
        emb, ExactRetriever(emb), model, n_candidates=8, n_recs=6, explainer=explainer,
        neighbours=SessionNeighbours(index, n=4),
    )  # fmt: skip
    state = _with_recent(SessionState.empty(4), (1, 2), pos=emb[1] + emb[2])
    a, b = plain.rank([state], [0])[0], blended.rank([state], [0])[0]
    knn = SessionNeighbours(index, n=4).lists([state])[0]
    head, from_knn = alternate(a.indices[:4], knn, 4)
    assert b.indices[:4].tolist() == head.tolist()
    rest = [t for t in a.indices.tolist() if t not in set(head.tolist())]
    assert b.indices[4:].tolist() == rest[:2] and len(b.indices) == 6
    assert isinstance(b.reasons, Explanations)
    codes = [REASON_CODES[c] for c in b.reasons.codes.tolist()]
    assert [c == SIMILAR_SESSIONS for c in codes[:4]] == from_knn.tolist()
    assert (b.reasons.cited[:4][from_knn] == -1).all()
    # a track the model scored keeps the model's score; the list's own order is no longer by score
    scored = dict(zip(a.indices.tolist(), a.scores.tolist(), strict=True))
    for t, s in zip(b.indices.tolist(), b.scores.tolist(), strict=True):
        if t in scored:
            assert s == pytest.approx(scored[t])
    assert KIND_SESSIONS == 3


def _with_recent(state: SessionState, recent: tuple[int, ...], pos: np.ndarray | None = None) -> SessionState:
    from dataclasses import replace

    pos = state.pos if pos is None else pos.astype(np.float32)
    n = len(recent)
    return replace(state, recent=recent, outcomes=(PLAYED,) * n, pos=pos, events=n, plays=n, last_outcome=PLAYED)


def _baseline_scores(current: np.ndarray) -> np.ndarray:
    """V-SKNN's scores as the baseline sums them (``models_onnx.baselines.SessionKNN.scores``, no prior)."""
    index = session_index(ITEMS, SESSIONS, TS, 8)
    cs, sim = neighbour_sessions(index, current, 100, 500)
    idx, lens = session_tracks(index, cs)
    out = np.zeros(8)
    np.add.at(out, idx, np.repeat(sim, lens))
    return out
