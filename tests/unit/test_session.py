import numpy as np

from streams.records import Like, Play, Skip
from streams.session import (
    LIKED,
    SKIPPED,
    Dynamics,
    SessionState,
    apply_event,
    context_features,
    is_duplicate,
    query_vector,
    session_ended,
    session_start_view,
)
from streams.state_codec import decode_state, encode_state

T0 = 1_700_000_000_000
DIM = 4
ITEMS = np.eye(DIM, dtype=np.float32)


def play(i, ts=T0, eid=None, played=180_000):
    return Play(event_id=eid or f"p{i}-{ts}", user_id="u", track_id=f"t{i}", ts_ms=ts, played_ms=played)


def skip(i, ts=T0, eid=None):
    return Skip(event_id=eid or f"s{i}-{ts}", user_id="u", track_id=f"t{i}", ts_ms=ts, played_ms=3_000)


def like(i, ts=T0, eid=None):
    return Like(event_id=eid or f"l{i}-{ts}", user_id="u", track_id=f"t{i}", ts_ms=ts)


def run(events, state=None, **kw):
    s = state or SessionState.empty(DIM)
    for e in events:
        i = int(e.track_id[1:])
        s = apply_event(s, e, i, ITEMS[i], **kw)
    return s


def test_play_moves_pos_and_taste_skip_moves_neg():
    s = run([play(0), skip(1, T0 + 1000)])
    assert s.pos[0] > 0 and s.neg[1] > 0 and s.neg[0] == 0
    assert s.taste[0] > 0 and s.taste[1] == 0
    assert s.recent == (0, 1) and s.outcomes[-1] == SKIPPED
    assert (s.plays, s.skips, s.likes, s.events) == (1, 1, 0, 2)


def test_like_weighs_more_than_play():
    assert run([like(2)]).pos[2] > run([play(2)]).pos[2]
    assert run([like(2)]).outcomes == (LIKED,)


def test_same_event_twice_is_applied_once():
    events = [play(0), skip(1, T0 + 1), like(2, T0 + 2)]
    once = run(events)
    twice = run(events + events)
    assert encode_state(once) == encode_state(twice)


def test_redelivery_by_offset_is_ignored_even_with_new_ids():
    s = apply_event(SessionState.empty(DIM), play(0), 0, ITEMS[0], partition=3, position=10)
    assert is_duplicate(s, "other-id", partition=3, position=10)
    assert not is_duplicate(s, "other-id", partition=3, position=11)
    assert not is_duplicate(s, "other-id", partition=2, position=5)


def test_gap_starts_a_new_session_but_keeps_taste():
    s = run([play(0), skip(1, T0 + 1000)])
    later = run([play(2, T0 + 2 * 3_600_000)], state=s)
    assert later.events == 1 and later.skips == 0 and later.recent == (2,)
    assert later.neg.sum() == 0 and later.taste[0] > 0
    assert later.session_start_ms == T0 + 2 * 3_600_000


def test_session_start_view_is_what_the_next_session_starts_from():
    s = run([play(0), skip(1, T0 + 1000), like(2, T0 + 2000)])
    view = session_start_view(s)
    assert not view.pos.any() and not view.neg.any() and view.recent == () and view.events == 0
    assert np.array_equal(view.taste, s.taste) and view.version == s.version
    later = T0 + 2 * 3_600_000
    assert session_ended(s.last_ts_ms, later, Dynamics()) and not session_ended(s.last_ts_ms, T0 + 60_000, Dynamics())
    # the next session's first event gives the same session state from the view as from the stored state
    a, b = run([skip(3, later)], state=s), run([skip(3, later)], state=view)
    for field in ("pos", "neg", "taste"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert (a.recent, a.outcomes, a.plays, a.skips, a.likes, a.events, a.last_outcome) == (
        b.recent,
        b.outcomes,
        b.plays,
        b.skips,
        b.likes,
        b.events,
        b.last_outcome,
    )


def test_gap_is_configurable():
    s = run([play(0), play(1, T0 + 61_000)], dyn=Dynamics(gap_ms=60_000))
    assert s.events == 1


def test_query_points_away_from_skips():
    s = run([play(0), skip(1, T0 + 1)])
    q = query_vector(s)
    assert q @ ITEMS[0] > 0 > q @ ITEMS[1]


def test_context_features_shape_and_values():
    s = run([play(0), skip(1, T0 + 1)])
    c = context_features(s)
    assert c.shape == (8,) and c.dtype == np.float32
    assert c[0] == 0.5 and c[7] == 1.0


def test_state_codec_round_trip():
    s = run([play(0), skip(1, T0 + 1), like(2, T0 + 2)])
    back = decode_state(encode_state(s))
    assert encode_state(back) == encode_state(s)
    np.testing.assert_array_equal(back.pos, s.pos)
    assert back.seen_ids == s.seen_ids and back.recent == s.recent


def test_batched_context_and_queries_equal_the_per_user_ones():
    from streams.session import context_features, context_matrix, query_vector, query_vectors

    rng = np.random.default_rng(5)
    states = []
    for u in range(40):
        s = SessionState.empty(DIM)
        for k in range(int(rng.integers(0, 9))):
            i = int(rng.integers(len(ITEMS)))
            e = [play, skip, like][k % 3](i, ts=T0 + k * 1000, eid=f"{u}-{k}")
            s = apply_event(s, e, i, ITEMS[i])
        states.append(s)
    now = [1_763_900_000_000 + int(rng.integers(0, 10**8)) for _ in states]
    want = np.stack([context_features(s, t) for s, t in zip(states, now, strict=True)])
    np.testing.assert_array_equal(context_matrix(states, now), want)
    stacked = [np.stack([getattr(s, f) for s in states]) for f in ("pos", "neg", "taste")]
    np.testing.assert_allclose(query_vectors(*stacked), np.stack([query_vector(s) for s in states]), atol=1e-6)
    assert context_matrix([], []).shape == (0, want.shape[1])
