"""Signature v2: candidate features, the co-occurrence table, neighbour candidates, and v2 bundles in serving."""

from __future__ import annotations

import numpy as np
import pytest

from models_onnx.signature import CANDIDATE_FEATURES, N_CANDIDATE_FEATURES, input_shapes, metadata, output_names
from serving.candidates import CandidateSource
from serving.features import FeatureBuilder, ListenerHistory, TrackStats, as_unknown, listener_history
from serving.retrieval import ExactRetriever
from streams.records import Play, Skip
from streams.session import SessionState, apply_event, query_vector

DIM = 8
F = {n: i for i, n in enumerate(CANDIDATE_FEATURES)}


def _items(n: int = 40) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _state(items: np.ndarray, plays: list[tuple[int, bool]]) -> SessionState:
    s = SessionState.empty(DIM)
    for i, (t, skipped) in enumerate(plays):
        cls = Skip if skipped else Play
        ev = cls(event_id=f"e{i}", user_id="u", track_id=f"t{t}", ts_ms=1_000_000 + 60_000 * i, played_ms=90_000)
        s = apply_event(s, ev, t, items[t])
    return s


def _stats(n: int = 40) -> TrackStats:
    idx = np.full((n, 3), -1, np.int32)
    val = np.zeros((n, 3), np.float32)
    idx[1, :2], val[1, :2] = [20, 21], [0.5, 0.1]  # neighbours of track 1
    idx[2, :1], val[2, :1] = [21], [0.4]  # of track 2
    pop = np.linspace(1.0, 0.0, n).astype(np.float32)
    return TrackStats(idx, val, pop, np.full(n, 0.3, np.float32), 0.25)


def test_signature_v2_adds_candidate_features_and_a_keep_output() -> None:
    shapes = input_shapes(16, 2)
    assert shapes["cand_features"] == ("batch", "k", N_CANDIDATE_FEATURES)
    assert "cand_features" not in input_shapes(16, 1)
    assert output_names(1) == ("scores",) and output_names(2) == ("scores", "keep")
    assert metadata("v", 16, 2)["segue.candidate_features"].split(",") == list(CANDIDATE_FEATURES)


def test_features_by_hand() -> None:
    items = _items()
    st = _state(items, [(2, False), (5, True), (1, False)])  # last track 1; 5 skipped
    builder = FeatureBuilder(_stats())
    cand = np.array([[1, 5, 20, 21, 30, -1]])
    hist = ListenerHistory(np.array([30, 21]), np.array([3, 1]), plays=10, skips=4, last_skip=True)
    f = builder.build([st], cand, [hist])[0]
    assert f.shape == (6, N_CANDIDATE_FEATURES) and f.dtype == np.float32
    assert f[0, F["session_played"]] == 1 and f[0, F["session_recency"]] == 1.0
    assert f[1, F["session_skipped"]] == 1 and f[1, F["session_recency"]] == pytest.approx(0.5)
    assert f[2, F["cooc_last"]] == pytest.approx(np.log1p(5.0))  # 10 * 0.5 with the last track
    assert f[3, F["cooc_last"]] == pytest.approx(np.log1p(1.0))
    assert f[2, F["cooc_last_rel"]] == pytest.approx(1.0) and 0 < f[3, F["cooc_last_rel"]] < 1
    # track 21 co-occurs with 1 (last) and 2 (two back): the session score adds both, decayed
    assert f[3, F["cooc_session"]] > f[3, F["cooc_last"]]
    assert f[4, F["history_present"]] == 1 and f[4, F["history_recency"]] == pytest.approx(1.0)
    assert f[4, F["history_count"]] == pytest.approx(np.log1p(3) / 4) and f[0, F["history_present"]] == 0
    assert np.all(f[:, F["history_known"]] == 1) and np.all(f[:, F["history_last_skip"]] == 1)
    assert f[0, F["user_skip_rate"]] == pytest.approx((4 + 10 * 0.25) / 20)
    # an unknown track (-1): none of its own evidence, the user's kept
    assert f[5, F["popularity"]] == 0 and f[5, F["track_skip_rate"]] == pytest.approx(0.25)
    assert f[5, F["user_skip_rate"]] == f[0, F["user_skip_rate"]]
    np.testing.assert_array_equal(as_unknown(f[5], 0.25), f[5])
    # no history (online today): its features are absent and the prior stands in for the listener
    g = builder.build([st], cand[:, :5], None)[0]
    assert np.all(g[:, F["history_known"]] == 0) and np.all(g[:, F["user_skip_rate"]] == pytest.approx(0.25))
    np.testing.assert_array_equal(g[:, F["cooc_last"]], f[:5, F["cooc_last"]])


def test_listener_history_counts_every_play_and_what_followed_the_last_track() -> None:
    items = np.array([3, 4, 5, 3, 4, -1, 7, 3])  # one user; the current session starts at row 6
    skips = np.array([0, 1, 0, 0, 0, 1, 0, 0], bool)
    h = listener_history(items, skips, 0, 8, n=10, session_start=6)
    # the session's own plays first (7, 3), then the plays before it; 3's count is over both
    assert h.tracks.tolist() == [3, 7, 4, 5] and h.counts.tolist() == [3, 1, 2, 1]
    assert listener_history(items, skips, 0, 8, n=2, session_start=6).tracks.tolist() == [3, 7]
    before = listener_history(items, skips, 0, 6, n=10, session_start=6)
    assert before.tracks.tolist() == [4, 3, 5] and before.counts.tolist() == [2, 2, 1]
    assert h.plays == 8 and h.skips == 2 and not h.last_skip and h.session_plays == 2
    h7 = listener_history(items, skips, 0, 6, n=10, session_start=6)
    assert h7.last_skip  # the previous play, a track outside the catalog, was skipped
    # session's last known track is 3 (row 7): 3 was followed by 4 (d=1, twice), 5 (d=2), and 3 (d=3) before
    h = listener_history(items, skips, 0, 8, n=10, session_start=7)
    follows = dict(zip(h.follows.tolist(), h.follow_weights.tolist(), strict=True))
    assert follows[4] == pytest.approx(2.0) and follows[5] == pytest.approx(0.5)


def test_neighbour_candidates_follow_repeats_and_precede_history() -> None:
    items = _items()
    builder = FeatureBuilder(_stats())
    st = _state(items, [(2, False), (1, False)])
    assert builder.session_neighbours(st, 5) == [20, 21]  # 21: 0.1 + 0.4 * 0.9 < 20: 0.5
    source = CandidateSource(items, ExactRetriever(items), repeats=True, history=2, neighbours=builder, n_neighbours=5)
    idx, _ = source.generate([st], query_vector(st)[None], 8, histories=[[21, 30, 31]])
    assert idx[0, :6].tolist() == [1, 2, 20, 21, 30, 31]
    assert len(set(idx[0].tolist())) == 8


def test_neighbour_table_is_the_item_knn_score() -> None:
    from models_onnx.track_stats import neighbour_table

    items = np.array([0, 1, 2, 0, 1])
    sessions = np.array([0, 0, 0, 1, 1])
    counts = np.bincount(items, minlength=4)
    idx, val = neighbour_table(items, sessions, counts, window=2, m=2)
    # 0-1: adjacent twice (1 + 1); 0-2: distance 2 once (0.5); normalised by sqrt(count * count)
    assert idx[0].tolist() == [1, 2] and val[0, 0] == pytest.approx(2 / 2) and val[0, 1] == pytest.approx(0.5 / 2**0.5)
    assert idx[3].tolist() == [-1, -1]


def test_v2_bundle_loads_in_the_scorer_with_parity_and_serves_through_the_rescorer(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from models_onnx.bundle import write_bundle
    from models_onnx.export import export_model, random_inputs
    from models_onnx.realscorer import FeatureScorer
    from serving.rescore import Rescorer
    from serving.scorer import OnnxScorer

    torch.manual_seed(0)
    n = 40
    model = FeatureScorer(DIM, N_CANDIDATE_FEATURES, hidden=16, keep_weight=0.5).eval()
    onnx_bytes = export_model(model, DIM, "test-v2", np.random.default_rng(1), signature=2)  # parity inside
    items = _items(n)
    tracks = [{"track_id": f"t{i}", "artist_id": "a", "genre": "", "popularity": 0.0, "features": {}} for i in range(n)]
    write_bundle(tmp_path / "b", onnx_bytes, items, tracks, "test-v2", {}, signature=2, stats=_stats(n))
    scorer = OnnxScorer.load(tmp_path / "b", device="cpu")
    assert scorer.signature == 2 and scorer.features is not None
    inputs = random_inputs(3, 7, DIM, np.random.default_rng(2), signature=2)
    scores, keep = scorer.score_all(*inputs)
    with torch.no_grad():
        want = model(*(torch.from_numpy(a) for a in inputs))
    np.testing.assert_allclose(scores, want[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(keep, want[1].numpy(), atol=1e-4)
    np.testing.assert_allclose(scorer.score(*inputs), scores)
    assert scorer.score(*inputs[:5]).shape == (3, 7)  # no evidence passed: zeros
    st = _state(items, [(2, False), (1, False)])
    rescorer = Rescorer(items, ExactRetriever(items), scorer, n_candidates=10, n_recs=5)
    (ranking,) = rescorer.rank([st], [2_000_000])
    assert not ranking.fallback and len(ranking.indices) == 5
    cand, _ = CandidateSource(items, ExactRetriever(items)).generate([st], query_vector(st)[None], 10)
    feats = scorer.features.build([st], cand)
    from streams.session import context_matrix

    direct = scorer.score(st.pos[None], st.neg[None], st.taste[None], context_matrix([st], [2_000_000]),
                          items[cand], feats)[0]  # fmt: skip
    np.testing.assert_allclose(ranking.scores, np.sort(direct)[::-1][:5], rtol=1e-5)


def test_history_candidates_are_the_same_from_a_listener_history_and_a_plain_list() -> None:
    items = _items()
    st = _state(items, [(2, False), (1, False)])
    source = CandidateSource(items, ExactRetriever(items), repeats=True, history=3)
    hist = ListenerHistory(np.array([1, 30, 2, 31, 32, 33]), np.ones(6, np.int64))
    assert source.fixed(st, hist) == source.fixed(st, [1, 30, 30, 2, 31, 1, 32, 33]) == [1, 2, 30, 31, 32]
