"""Explanations are faithful: removing the cited event from the session lowers the cited track's score."""

from __future__ import annotations

import numpy as np
import pytest

from serving.catalog import Catalog
from serving.diversity import Preferences
from serving.explain import (
    AVOIDS_SKIPPED,
    EDITORIAL_PIN,
    EXPLORATION,
    LONG_TERM_TASTE,
    REASON_CODES,
    SIMILAR_TO_LIKED,
    SIMILAR_TO_PLAYED,
    TEMPLATES,
    WINDOW,
    Explainer,
    _window,
    half_round,
    play_strengths,
    remove_events,
    render,
    with_text,
)
from serving.intent import SessionIntent
from serving.rescore import Rescorer, to_record
from serving.retrieval import ExactRetriever
from serving.rules import Rule, compile_rules
from serving.scorer import OnnxScorer
from serving.separation import artist_codes
from streams.records import Like, Play, Reason, Skip, decode_recommendations, encode_record
from streams.session import Dynamics, SessionState, apply_event, context_features

T0 = 1_763_900_000_000
DYN = Dynamics()


def _session(rng: np.random.Generator, user: str, n_tracks: int, length: int):
    """A random session: plays (partly heard), skips and likes of distinct tracks, a minute apart."""
    tracks = rng.choice(n_tracks, size=length, replace=False)
    events = []
    for j, t in enumerate(tracks):
        kind = rng.choice(["play", "play", "skip", "like"])
        common = {"event_id": f"{user}-{j}", "user_id": user, "track_id": f"#{t}", "ts_ms": T0 + 60_000 * j}
        if kind == "play":
            events.append(Play(**common, played_ms=int(rng.integers(20_000, 200_000)), duration_ms=200_000))
        elif kind == "skip":
            events.append(Skip(**common, played_ms=int(rng.integers(1_000, 20_000))))
        else:
            events.append(Like(**common))
    return events, [int(t) for t in tracks]


def _replay(events, tracks, items, taste0=None):
    state = SessionState.empty(items.shape[1])
    if taste0 is not None:
        state = SessionState(pos=state.pos, neg=state.neg, taste=taste0)
    for e, t in zip(events, tracks, strict=True):
        state = apply_event(state, e, t, items[t], DYN)
    return state


@pytest.fixture(scope="module")
def model(quick_bundle):
    catalog = Catalog.load(quick_bundle)
    scorer = OnnxScorer.load(quick_bundle, device="cpu")
    return catalog, scorer


def test_removal_is_exact_against_a_replay_without_the_event():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(500, 32)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    states, sessions, taste0s = [], [], []
    for u in range(60):
        events, tracks = _session(rng, f"u{u}", len(items), int(rng.integers(4, 16)))
        taste0 = (0.3 * items[rng.integers(500)] * (u % 3 > 0)).astype(np.float32)  # earlier sessions, or none
        states.append(_replay(events, tracks, items, taste0))
        sessions.append((events, tracks))
        taste0s.append(taste0)
    ks = np.tile(np.arange(-1, -5, -1), (len(states), 1))  # the 4 latest events of each session
    now = [T0 + 3_600_000] * len(states)
    got = remove_events(states, ks, items, DYN, now)
    for b, ((events, tracks), taste0) in enumerate(zip(sessions, taste0s, strict=True)):
        for r, k in enumerate(len(events) + ks[b]):
            want = _replay(events[:k] + events[k + 1 :], tracks[:k] + tracks[k + 1 :], items, taste0)
            # The session rule rounds its vectors to float16 at every event; removal works on the rounded sums.
            np.testing.assert_allclose(got.pos[b, r], want.pos, rtol=4e-3, atol=4e-3)
            np.testing.assert_allclose(got.neg[b, r], want.neg, rtol=4e-3, atol=4e-3)
            np.testing.assert_allclose(got.taste[b, r], want.taste, rtol=4e-3, atol=4e-3)
            np.testing.assert_allclose(got.context[b, r], context_features(want, now[b]), atol=1e-6)


def test_a_state_changed_before_ranking_keeps_the_change_through_the_removal():
    """A stage that adds to the vectors before ranking (a prior, a steer): removing an event must change the
    ranked state exactly as the replay without it changes the unranked one."""
    rng = np.random.default_rng(3)
    items = rng.normal(size=(300, 32)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    sessions = [_session(rng, f"u{u}", len(items), int(rng.integers(3, 10))) for u in range(20)]
    plain = [_replay(ev, tr, items) for ev, tr in sessions]
    bias = (0.5 * items[rng.integers(300, size=len(plain))]).astype(np.float32)
    ranked = [SessionState(pos=s.pos + b, neg=s.neg, taste=s.taste + b) for s, b in zip(plain, bias, strict=True)]
    ranked = [_copy_counters(r, s) for r, s in zip(ranked, plain, strict=True)]
    ks = np.tile(np.arange(-1, -3, -1), (len(ranked), 1))
    got = remove_events(ranked, ks, items, DYN, [T0] * len(ranked), sources=plain)
    for i, (events, tracks) in enumerate(sessions):
        for r, k in enumerate(len(events) + ks[i]):
            want = _replay(events[:k] + events[k + 1 :], tracks[:k] + tracks[k + 1 :], items)
            np.testing.assert_allclose(got.pos[i, r], want.pos + bias[i], atol=2e-3)  # float16 states: ~1 ulp
            np.testing.assert_allclose(got.taste[i, r], want.taste + bias[i], atol=2e-3)


def _copy_counters(vectors: SessionState, state: SessionState) -> SessionState:
    from dataclasses import replace

    return replace(state, pos=vectors.pos, neg=vectors.neg, taste=vectors.taste)


def test_half_round_is_float16_rounding_bit_for_bit():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(size=100_000), 1e-5 * rng.normal(size=20_000), 1e-7 * rng.normal(size=10_000)])
    x = np.concatenate([x, [0.0, -0.0, 2.0**-14, 6.1e-5, 65504.0]]).astype(np.float32)
    assert np.array_equal(half_round(x), x.astype(np.float16).astype(np.float32))


def test_play_strengths_recover_how_much_was_heard():
    rng = np.random.default_rng(1)
    items = rng.normal(size=(100, 32)).astype(np.float32)
    events, tracks = _session(rng, "u", len(items), 10)
    state = _replay(events, tracks, items)
    _, outcomes, emb = _window([state], items, WINDOW)
    weights = play_strengths(state.pos[None], outcomes, emb, DYN)[0, -len(events) :]
    for e, w in zip(events, weights, strict=True):
        want = {"Play": e.played_ms / 200_000 if isinstance(e, Play) else 0, "Like": 3.0, "Skip": 0.0}
        assert abs(w - want[type(e).__name__]) < 1e-2  # pos holds float16 sums: recovery to ~3 digits


def _score(scorer, state, track, items, now):
    return float(
        scorer.score(
            state.pos[None],
            state.neg[None],
            state.taste[None],
            context_features(state, now)[None],
            items[[track]][None],
        )[0, 0]
    )


@pytest.mark.parametrize("stages", [False, True], ids=["model-order", "session-stages"])
def test_the_cited_event_lowers_the_score_when_removed(model, stages):
    """For 300 users and every recommended track whose reason cites an event: replaying the session through
    ``apply_event`` without that event lowers the track's model score. Also when the order is not the model's
    alone (artist separation and the session intent, as the worker ranks): reasons still explain the model."""
    catalog, scorer = model
    items = catalog.embeddings
    extra = {"artists": artist_codes(catalog.artist_of), "intent": SessionIntent(items, catalog.genre_of)}
    rescorer = Rescorer(
        items,
        ExactRetriever(items),
        scorer,
        explainer=Explainer(scorer, items, DYN, events=4),
        **(extra if stages else {}),
    )
    rng = np.random.default_rng(42)
    sessions = [_session(rng, f"u{u}", len(catalog), int(rng.integers(1, 12))) for u in range(300)]
    sessions = [
        ([e.__class__(**{**_fields(e), "track_id": catalog.track_ids[t]}) for e, t in zip(ev, tr, strict=False)], tr)
        for ev, tr in sessions
    ]
    states = [_replay(ev, tr, items) for ev, tr in sessions]
    now = T0 + 3_600_000
    rankings = rescorer.rank(states, [now] * len(states))
    if stages:  # not vacuous: the stages reorder most lists
        plain = Rescorer(items, ExactRetriever(items), scorer).rank(states, [now] * len(states))
        moved = sum(not np.array_equal(a.indices, b.indices) for a, b in zip(rankings, plain, strict=True))
        assert moved > len(states) // 2, moved
    checked = {c: 0 for c in REASON_CODES}
    for (events, tracks), state, ranking in zip(sessions, states, rankings, strict=True):
        ex = ranking.reasons
        assert ex is not None and len(ex.codes) == len(ranking.indices) == 20
        for j, track in enumerate(ranking.indices):
            code = REASON_CODES[ex.codes[j]]
            checked[code] += 1
            if code == LONG_TERM_TASTE:
                zeroed = SessionState(pos=state.pos, neg=state.neg, taste=np.zeros_like(state.taste))
                zeroed = _with_counters(zeroed, state)
                assert _score(scorer, zeroed, track, items, now) < _score(scorer, state, track, items, now)
            if ex.cited[j] < 0:
                continue
            assert code in (SIMILAR_TO_LIKED, SIMILAR_TO_PLAYED, AVOIDS_SKIPPED)
            k = tracks.index(int(ex.cited[j]))
            assert state.outcomes[k] == {SIMILAR_TO_PLAYED: 0, AVOIDS_SKIPPED: 1, SIMILAR_TO_LIKED: 2}[code]
            without = _replay(events[:k] + events[k + 1 :], tracks[:k] + tracks[k + 1 :], items)
            before, after = _score(scorer, state, track, items, now), _score(scorer, without, track, items, now)
            assert after < before, (code, before, after, float(ex.contribution[j]))
            # float16 session vectors: the removal matches the replay to well under 1% (0.3% at the 99th percentile)
            assert abs((before - after) - float(ex.contribution[j])) < 1e-2 * max(1.0, abs(before - after))
    cited = checked[SIMILAR_TO_LIKED] + checked[SIMILAR_TO_PLAYED] + checked[AVOIDS_SKIPPED]
    assert cited > 0.5 * 300 * 20, checked  # most reasons cite an event: the test is not vacuous
    assert checked[SIMILAR_TO_LIKED] > 0 and checked[SIMILAR_TO_PLAYED] > 0, checked


def _fields(event):
    return {f: getattr(event, f) for f in event.__struct_fields__}


def _with_counters(vectors: SessionState, state: SessionState) -> SessionState:
    from dataclasses import replace

    return replace(state, pos=vectors.pos, neg=vectors.neg, taste=vectors.taste)


def test_pins_and_exploration_carry_their_codes_and_records_round_trip(model):
    catalog, scorer = model
    items = catalog.embeddings
    rescorer = Rescorer(items, ExactRetriever(items), scorer, explainer=Explainer(scorer, items, DYN))
    rng = np.random.default_rng(5)
    events, tracks = _session(rng, "p", len(catalog), 6)
    events = [
        e.__class__(**{**_fields(e), "track_id": catalog.track_ids[t]}) for e, t in zip(events, tracks, strict=False)
    ]
    state = _replay(events, tracks, items)
    pin_track = next(i for i in range(len(catalog)) if i not in tracks)
    rule = Rule(
        rule_id="r1",
        action="pin",
        target="track",
        value=catalog.track_ids[pin_track],
        position=2,
        expires_ms=T0 + 10**9,
        created_ms=T0,
        author="ed",
    )
    rules = compile_rules([rule], catalog.index, catalog.artist_of, T0)
    (ranking,) = rescorer.rank([state], [T0], prefs=[Preferences(exploration=0.2)], rules=rules, users=["p"])
    codes = [REASON_CODES[c] for c in ranking.reasons.codes]
    assert ranking.indices[1] == pin_track and codes[1] == EDITORIAL_PIN
    assert codes.count(EXPLORATION) == 4
    rec = to_record("p", ranking, catalog.track_ids, "m", "cpu", generated_ms=T0)
    back = decode_recommendations(encode_record(rec))
    assert back == rec and back.items[1].reason == Reason(EDITORIAL_PIN)
    assert b'"text"' not in encode_record(rec)  # sentences are rendered when read, not stored


def test_templates_cover_every_code_and_render_the_cited_track():
    assert set(TEMPLATES) == set(REASON_CODES)
    assert render(Reason(SIMILAR_TO_LIKED, "trk-1", 0.4), "Song A") == "Because you liked Song A."
    assert render(Reason(AVOIDS_SKIPPED, "trk-2", 0.1)) == "Steers away from the style of trk-2, which you skipped."
    assert with_text(Reason(LONG_TERM_TASTE, "", 0.2)).text == "A rediscovery from your long-term taste."
    assert with_text(None) is None
