"""The one test suite every ``Store`` implementation must pass (used by unit and integration tests)."""

from __future__ import annotations

import numpy as np

from streams.records import Play, Recommendations, RecommendedTrack
from streams.session import SessionState, apply_event
from streams.state_codec import encode_state
from streams.stores import Store


def _state(i: int) -> SessionState:
    e = Play(event_id=f"e{i}", user_id=f"u{i}", track_id="t", ts_ms=1_700_000_000_000 + i, played_ms=100_000)
    return apply_event(SessionState.empty(8), e, i, np.full(8, i, np.float32))


async def check_store(store: Store, users: list[str]) -> None:
    assert await store.ping()
    assert await store.get_states(users) == [None] * len(users)
    states = {u: _state(i) for i, u in enumerate(users)}
    await store.put_states(states)
    got = await store.get_states(list(reversed(users)))
    assert [encode_state(s) for s in got] == [encode_state(states[u]) for u in reversed(users)]
    assert await store.get_states([]) == []

    assert await store.get_recommendations(users[0]) is None
    recs = Recommendations(
        user_id=users[0],
        items=[RecommendedTrack("t1", 1.5, 1)],
        model_version="m",
        provider="CPUExecutionProvider",
    )
    assert (await store.get_user(users[0]))[1] is None
    await store.put_recommendations([recs])
    assert await store.get_recommendations(users[0]) == recs
    state, got = await store.get_user(users[0])
    assert got == recs and state is not None and encode_state(state) == encode_state(states[users[0]])
    assert await store.get_user("nobody-at-all") == (None, None)

    newer = _state(99)
    await store.put_states({users[1]: newer})
    assert encode_state((await store.get_states([users[1]]))[0]) == encode_state(newer)

    assert await store.forget_user(users[0]) is True
    assert await store.get_states([users[0]]) == [None]
    assert await store.get_recommendations(users[0]) is None
    assert await store.forget_user(users[0]) is False


async def check_compare_and_set(store: Store, user: str) -> None:
    """Writes with ``expected`` versions refuse to overwrite a state that moved on."""
    first = _state(1)
    assert await store.put_states({user: first}, expected={user: None}) == set()
    assert await store.put_states({user: _state(2)}, expected={user: None}) == {user}
    stale = first.version - 1
    assert await store.put_states({user: _state(3)}, expected={user: stale}) == {user}
    assert encode_state((await store.get_states([user]))[0]) == encode_state(first)
    newer = _state(4)
    assert await store.put_states({user: newer}, expected={user: first.version}) == set()
    assert encode_state((await store.get_states([user]))[0]) == encode_state(newer)


async def check_offer(store: Store, user: str) -> None:
    """A list offered with the state version it was ranked from fills a gap, never overwrites a fresher one."""

    def recs(track: str) -> Recommendations:
        return Recommendations(
            user_id=user, items=[RecommendedTrack(track, 1.0, 1)], model_version="m", provider="CPUExecutionProvider"
        )

    assert await store.offer_recommendations([recs("none")], [1]) == {user}  # no state: nothing stored
    assert await store.get_recommendations(user) is None
    first = _state(1)
    await store.put_states({user: first})
    assert await store.offer_recommendations([recs("stale")], [first.version + 1]) == {user}
    assert await store.get_recommendations(user) is None
    assert await store.offer_recommendations([recs("filled")], [first.version]) == set()
    assert await store.get_recommendations(user) == recs("filled")
    # a list is there (the worker's, say): an offer does not replace it, a replacing offer does
    assert await store.offer_recommendations([recs("second")], [first.version]) == {user}
    assert await store.get_recommendations(user) == recs("filled")
    assert await store.offer_recommendations([recs("steered")], [first.version], replace=True) == set()
    assert await store.get_recommendations(user) == recs("steered")
    # the state moved on (a newer event): even a replacing offer from the older state is refused
    e = Play(event_id="e-next", user_id=user, track_id="t", ts_ms=1_700_000_000_500, played_ms=100_000)
    newer = apply_event(first, e, 2, np.full(8, 2, np.float32))
    assert newer.version > first.version
    await store.put_states({user: newer})
    assert await store.offer_recommendations([recs("old")], [first.version], replace=True) == {user}
    assert await store.get_recommendations(user) == recs("steered")
    assert encode_state((await store.get_states([user]))[0]) == encode_state(newer)
