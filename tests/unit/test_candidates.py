"""Candidate generation: session repeats, listener history and retrieval, and the Rescorer that uses it."""

from __future__ import annotations

import numpy as np

from serving.candidates import CandidateSource, session_repeats
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from streams.records import Play, Skip
from streams.session import SessionState, apply_event, query_vector

DIM = 8


def _items(n: int = 60, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _state(items: np.ndarray, plays: list[tuple[int, bool]]) -> SessionState:
    """A session of (track, skipped) events one minute apart."""
    s = SessionState.empty(DIM)
    for i, (t, skipped) in enumerate(plays):
        cls = Skip if skipped else Play
        ev = cls(event_id=f"e{i}", user_id="u", track_id=f"t{t}", ts_ms=1_000_000 + 60_000 * i, played_ms=90_000)
        s = apply_event(s, ev, t, items[t])
    return s


def test_session_repeats_are_played_tracks_most_recent_first_and_last_outcome_counts() -> None:
    items = _items()
    s = _state(items, [(1, False), (2, True), (3, False), (1, False), (3, True)])
    assert session_repeats(s) == [1]  # 3 was skipped the last time, 2 was skipped
    assert session_repeats(_state(items, [(4, False), (5, False)])) == [5, 4]
    assert session_repeats(SessionState.empty(DIM)) == []


def test_default_source_is_plain_retrieval_without_the_session_tracks() -> None:
    items = _items()
    states = [_state(items, [(1, False), (2, True)]), _state(items, [(7, False)])]
    q = np.stack([query_vector(s) for s in states])
    retriever = ExactRetriever(items)
    got = CandidateSource(items, retriever).generate(states, q, 10)
    want = retriever.search(q, [set(s.recent) for s in states], 10)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_repeats_and_history_come_first_then_retrieval_without_duplicates() -> None:
    items = _items()
    states = [_state(items, [(1, False), (2, True), (3, False)]), _state(items, [(9, False)])]
    q = np.stack([query_vector(s) for s in states])
    source = CandidateSource(items, ExactRetriever(items), repeats=True, history=3)
    idx, sims = source.generate(states, q, 12, histories=[[3, 40, 41, 42, 43], None])
    assert idx.shape == (2, 12) and sims.shape == (2, 12)
    assert idx[0, :5].tolist() == [3, 1, 40, 41, 42]  # repeats, then 3 new history tracks (3 already taken)
    assert idx[1, 0] == 9
    for b in range(2):
        assert len(set(idx[b].tolist())) == 12
    assert 2 not in idx[0]  # skipped in the session: neither a repeat nor retrieved
    np.testing.assert_allclose(sims, np.einsum("bkd,bd->bk", items[idx], q), rtol=1e-5, atol=1e-6)


def test_skipped_session_tracks_follow_the_repeats_only_when_asked() -> None:
    items = _items()
    # 2 skipped then played: a repeat; 5 played then skipped: its last outcome counts
    state = _state(items, [(1, False), (2, True), (5, False), (3, True), (2, False), (5, True)])
    q = query_vector(state)[None]
    assert session_repeats(state) == [2, 1]
    assert session_repeats(state, skipped=True) == [2, 1, 5, 3]
    idx, _ = CandidateSource(items, ExactRetriever(items), repeats=True, skipped=True).generate([state], q, 8)
    assert idx[0, :4].tolist() == [2, 1, 5, 3] and len(set(idx[0].tolist())) == 8
    idx, _ = CandidateSource(items, ExactRetriever(items), repeats=True).generate([state], q, 8)
    assert 5 not in idx[0] and 3 not in idx[0]


def test_without_repeats_history_tracks_of_the_session_are_still_offered() -> None:
    items = _items()
    states = [_state(items, [(1, False)])]
    q = np.stack([query_vector(s) for s in states])
    idx, _ = CandidateSource(items, ExactRetriever(items), history=2).generate(states, q, 5, histories=[[1, 5]])
    assert idx[0, :2].tolist() == [1, 5]
    idx, _ = CandidateSource(items, ExactRetriever(items)).generate(states, q, 5, histories=[[1, 5]])
    assert 1 not in idx[0]  # history off: the plain rule


class _DotScorer:
    provider = "test"
    model_version = "dot"

    def score(self, session_pos, session_neg, taste, context, candidates):  # noqa: ANN001, ANN201
        return np.einsum("bkd,bd->bk", candidates, session_pos).astype(np.float32)


def test_rescorer_ranks_repeats_when_its_source_allows_them() -> None:
    items = _items()
    state = _state(items, [(4, False)])
    plain = Rescorer(items, ExactRetriever(items), _DotScorer(), n_candidates=10, n_recs=3)
    assert 4 not in plain.rank([state], [0])[0].indices
    source = CandidateSource(items, ExactRetriever(items), repeats=True)
    rescorer = Rescorer(items, ExactRetriever(items), _DotScorer(), n_candidates=10, n_recs=3, candidates=source)
    assert rescorer.rank([state], [0])[0].indices[0] == 4  # the just-played track is the best match of pos
