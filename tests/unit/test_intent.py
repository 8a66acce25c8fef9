"""Session intent: the genre belief follows plays and skips, the taste is its prior, and the ranking uses it."""

from __future__ import annotations

import numpy as np
import pytest

from serving.intent import IntentParams, SessionIntent
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from streams.records import Like, Play, Skip
from streams.session import SessionState, apply_event

T0 = 1_763_900_000_000
GENRES = ("a", "b", "c", "d")
PER_GENRE = 12


def _catalog() -> tuple[np.ndarray, list[str]]:
    """Four genres, each around its own axis of an 8-dimensional space (unit rows)."""
    rng = np.random.default_rng(3)
    rows, genre_of = [], []
    for g, name in enumerate(GENRES):
        for _ in range(PER_GENRE):
            v = np.zeros(8)
            v[g] = 1.0
            v += rng.normal(0, 0.15, size=8)
            rows.append(v / np.linalg.norm(v))
            genre_of.append(name)
    return np.asarray(rows, np.float32), genre_of


ITEMS, GENRE_OF = _catalog()


def _track(genre: str, j: int) -> int:
    return GENRES.index(genre) * PER_GENRE + j


def _session(steps: list[tuple[str, str]], taste: np.ndarray | None = None) -> SessionState:
    """A session of (kind, genre) steps, each on a fresh track of that genre."""
    state = SessionState.empty(ITEMS.shape[1])
    if taste is not None:
        state = SessionState(pos=state.pos, neg=state.neg, taste=taste.astype(np.float32))
    used: dict[str, int] = {}
    for i, (kind, genre) in enumerate(steps):
        t = _track(genre, used.get(genre, 0))
        used[genre] = used.get(genre, 0) + 1
        common = {"event_id": f"e{i}", "user_id": "u", "track_id": f"t{t}", "ts_ms": T0 + 60_000 * i}
        if kind == "play":
            event = Play(**common, played_ms=180_000, duration_ms=180_000)
        elif kind == "skip":
            event = Skip(**common, played_ms=3_000)
        else:
            event = Like(**common)
        state = apply_event(state, event, t, ITEMS[t])
    return state


def _taste(shares: dict[str, float]) -> np.ndarray:
    centroids = np.stack([ITEMS[np.asarray(GENRE_OF) == g].mean(axis=0) for g in GENRES])
    return sum(w * centroids[GENRES.index(g)] for g, w in shares.items())


@pytest.fixture(scope="module")
def intent() -> SessionIntent:
    return SessionIntent(ITEMS, GENRE_OF)


def test_the_prior_decomposes_the_taste_into_its_genres(intent):
    prior = intent.prior(np.stack([_taste({"a": 0.7, "c": 0.3}), np.zeros(8, np.float32)]))
    assert prior.shape == (2, 4) and np.allclose(prior.sum(axis=1), 1.0)
    a, b, c, d = prior[0]
    assert a > c > 5 * max(b, d)  # both genres of the taste, the larger first; the others near the floor
    assert abs(a / c - 0.7 / 0.3) < 0.5
    assert np.allclose(prior[1], 0.25)  # no taste: uniform


def test_a_play_takes_over_and_two_skips_are_a_switch(intent):
    taste = _taste({"a": 0.6, "b": 0.4})
    plays = [("play", "a")] * 5
    steps = {
        "run": plays,
        "one skip": plays + [("skip", "a")],
        "two skips": plays + [("skip", "a")] * 2,
        "play elsewhere": plays + [("skip", "a"), ("play", "b")],
        "untried genre": plays + [("skip", "a"), ("play", "c")],
    }
    belief = intent.belief([_session(s, taste) for s in steps.values()])
    top = [GENRES[i] for i in belief.argmax(axis=1)]
    # After a run the session holds its genre, with the taste's other genre (where a mood moves to) next. One skip
    # makes it an even call between the two, two skips are a switch, and a skip followed by a play elsewhere moves
    # the session there, also to a genre the taste does not hold.
    assert belief[0, 0] > 0.8 and belief[0, 1] > 5 * max(belief[0, 2], belief[0, 3])
    assert min(belief[1, 0], belief[1, 1]) > 0.4
    assert top[2:] == ["b", "b", "c"]
    assert belief[2, 1] > 0.7 and belief[3, 1] > 0.7
    assert belief[4, 2] > 10 * belief[1, 2]


def test_skipped_genres_stay_behind_and_untried_ones_come_next(intent):
    """When the session has contradicted every genre the taste knows, the genres it has not tried hold most of the
    belief."""
    taste = _taste({"a": 0.6, "b": 0.4})
    state = _session([("skip", "a"), ("skip", "a"), ("skip", "b"), ("skip", "b"), ("skip", "a"), ("skip", "b")], taste)
    belief = intent.belief([state])[0]
    prior = intent.prior(taste[None])[0]
    assert belief[2] + belief[3] > belief[0] + belief[1]
    assert min(belief[2] / prior[2], belief[3] / prior[3]) > 20
    assert belief[1] < 0.2  # the genre skipped last is the least likely of the taste's


def test_no_events_is_the_prior(intent):
    taste = _taste({"b": 1.0})
    state = SessionState(pos=np.zeros(8, np.float32), neg=np.zeros(8, np.float32), taste=taste.astype(np.float32))
    assert np.allclose(intent.belief([state]), intent.prior(taste[None]))
    assert intent.belief([]).shape == (0, 4)


def test_candidates_come_from_the_most_likely_genre_nearest_first(intent):
    belief = np.array([[0.1, 0.7, 0.1, 0.1], [0.0, 0.0, 0.0, 1.0]])
    queries = np.stack([ITEMS[_track("b", 0)], ITEMS[_track("d", 5)]])
    exclude = np.array([[_track("b", 0), _track("b", 1)], [-1, -1]])
    got = intent.candidates(belief, queries, exclude, m=PER_GENRE)
    genres = np.asarray(GENRE_OF)
    assert (genres[got[0][got[0] >= 0]] == "b").all() and (genres[got[1]] == "d").all()
    assert list(got[0][-2:]) == [-1, -1]  # two of b's twelve excluded: padded
    assert got[1][0] == _track("d", 5)  # the query's own track is nearest
    sims = ITEMS[got[1]] @ queries[1]
    assert np.all(np.diff(sims) <= 1e-6)


def test_extend_adds_the_genre_and_its_log_belief(intent):
    taste = _taste({"a": 0.6, "b": 0.4})
    states = [_session([("play", "a")] * 3 + [("skip", "a")] * 2, taste)]
    q = np.stack([s.pos - s.neg for s in states]).astype(np.float32)
    idx = np.array([[_track("a", 5), _track("a", 6), _track("c", 0)]])
    sims = np.zeros((1, 3), np.float32)
    out_idx, out_sims, bias = intent.extend(states, q, idx, sims)
    assert (
        out_idx.shape == (1, 3 + min(intent.params.candidates, len(ITEMS)))
        and out_sims.shape == bias.shape == out_idx.shape
    )
    belief = intent.belief(states)[0]
    extra = out_idx[0, 3:][np.isfinite(bias[0, 3:])]
    assert (np.asarray(GENRE_OF)[extra] == GENRES[int(belief.argmax())]).all()
    assert not set(extra) & set(states[0].recent)
    genre_code = np.asarray([GENRES.index(g) for g in GENRE_OF])
    assert np.allclose(bias[0, :3], 3.0 * np.log(belief[genre_code[idx[0]]]), atol=1e-5)
    assert np.isneginf(bias[0, 3 + PER_GENRE :]).all()  # more columns than the genre has tracks: never ranked


class _DotScorer:
    """A stand-in session model: the candidate's dot product with the net session vector."""

    provider, model_version = "test", "test"

    def score(self, pos, neg, taste, context, cands):
        return np.einsum("bkd,bd->bk", cands, pos - neg).astype(np.float32)


def test_the_rescorer_orders_by_intent_and_keeps_the_model_scores_for_explanations():
    params = IntentParams(candidates=8)
    intent = SessionIntent(ITEMS, GENRE_OF, params)
    plain = Rescorer(ITEMS, ExactRetriever(ITEMS), _DotScorer(), n_candidates=10, n_recs=5)
    with_intent = Rescorer(ITEMS, ExactRetriever(ITEMS), _DotScorer(), n_candidates=10, n_recs=5, intent=intent)
    state = _session([("like", "a")] * 4 + [("skip", "a")] * 2, _taste({"a": 0.5, "b": 0.5}))
    genres = np.asarray(GENRE_OF)
    before = plain.rank([state], [state.last_ts_ms])[0]
    after = with_intent.rank([state], [state.last_ts_ms])[0]
    assert (genres[before.indices] == "a").sum() >= 3  # the session vectors still point at the skipped genre
    assert (genres[after.indices] == "b").all()  # the intent moved on to the taste's other genre
    assert np.all(np.diff(after.scores) <= 0)  # the served scores are the ranking's
    model = np.einsum("kd,d->k", ITEMS[after.indices], state.pos - state.neg)
    assert not np.allclose(after.scores, model, atol=1e-4)
    # The explainer sees the model's own scores: it is handed them through ``_select``'s ``model``.
    seen = []

    class _Spy:
        def explain(self, states, now_ms, picks, base, boost, kinds, sources=None):
            seen.append(base[0])
            raise RuntimeError("only looking")

    with_intent._explainer = _Spy()  # noqa: SLF001 - the explainer's inputs are what this test checks
    with_intent.rank([state], [state.last_ts_ms])
    assert np.allclose(seen[0], model, atol=1e-4)


def test_one_like_in_another_genre_moves_the_session_one_play_does_not():
    intent = SessionIntent(ITEMS, GENRE_OF)
    run = [("play", "a")] * 5
    liked = intent.belief([_session([*run, ("like", "c")])])[0]
    played = intent.belief([_session([*run, ("play", "c")])])[0]
    assert liked.argmax() == GENRES.index("c")  # an explicit like: the session follows it at once
    assert played.argmax() == GENRES.index("a")  # one play elsewhere after a run is not yet a switch
