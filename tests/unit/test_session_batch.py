"""The batched session rule (``fold_events``) gives exactly what ``apply_event`` gives, one event at a time."""

from __future__ import annotations

import numpy as np

from streams.records import Like, Play, Skip
from streams.session import Dynamics, SessionState, apply_event
from streams.session_batch import fold_events

T0 = 1_700_000_000_000
DIM = 16


def _events(rng: np.random.Generator, user: str, n: int, n_tracks: int) -> list[tuple]:
    """Random plays (some with durations, some short), skips and likes with gaps, session ids, repeated ids and
    out-of-order timestamps, as (event, track, partition, position)."""
    out, ts, pos = [], T0 + int(rng.integers(0, 10**6)), int(rng.integers(0, 50))
    for i in range(n):
        ts += int(rng.choice([1_000, 60_000, 3 * 3_600_000, -5_000], p=[0.5, 0.3, 0.1, 0.1]))
        track = int(rng.integers(0, n_tracks))
        eid = f"{user}-{i}" if rng.random() > 0.1 or i == 0 else f"{user}-{i - 1}"  # some ids repeat
        session = None if rng.random() < 0.7 else f"s{int(rng.integers(0, 2))}"
        kind = rng.choice(["play", "skip", "like"], p=[0.5, 0.3, 0.2])
        common = dict(event_id=eid, user_id=user, track_id=f"t{track}", ts_ms=ts, session_id=session)
        if kind == "play":
            duration = int(rng.integers(60_000, 300_000)) if rng.random() < 0.5 else None
            event = Play(**common, played_ms=int(rng.integers(1_000, 300_000)), duration_ms=duration)
        elif kind == "skip":
            event = Skip(**common, played_ms=int(rng.integers(0, 20_000)))
        else:
            event = Like(**common)
        pos += int(rng.choice([1, 1, 1, 0, -3]))  # mostly increasing stream positions, some redelivered
        partition = int(rng.integers(0, 2)) if rng.random() < 0.9 else None
        out.append((event, track, partition, pos if partition is not None else None))
    return out


def _same(a: SessionState, b: SessionState) -> bool:
    """Every field equal; the vectors bit for bit (signed zeros included)."""
    for name in SessionState.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            if x.dtype != y.dtype or x.tobytes() != y.tobytes():
                return False
        elif x != y:
            return False
    return True


def _by_one(state: SessionState, events: list[tuple], items: np.ndarray, dyn: Dynamics) -> SessionState:
    for event, track, partition, position in events:
        state = apply_event(state, event, track, items[track], dyn, partition, position)
    return state


def test_fold_equals_apply_event_bit_for_bit():
    rng = np.random.default_rng(11)
    items = rng.standard_normal((40, DIM)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    items[3, :4] = 0.0  # exact zeros, and values below float16's normal range, in some items
    items[5, 0] = 1e-6
    dyn = Dynamics(recent_max=6, dedup_max=4)  # small windows, so that they fill
    states, pending = [], []
    for u in range(60):
        start = SessionState.empty(DIM)
        if u % 3:  # an earlier history for most users
            start = _by_one(start, _events(rng, f"h{u}", int(rng.integers(1, 12)), 40), items, dyn)
        states.append(start)
        pending.append(_events(rng, f"u{u}", int(rng.integers(0, 25)), 40))
    folded, applied = fold_events(states, pending, items, dyn)
    for u in range(60):
        expected = _by_one(states[u], pending[u], items, dyn)
        assert _same(folded[u], expected), u
        one_by_one, flags = states[u], []
        for event, track, partition, position in pending[u]:
            after = apply_event(one_by_one, event, track, items[track], dyn, partition, position)
            flags.append(after is not one_by_one)
            one_by_one = after
        assert applied[u] == flags
        if not any(flags):
            assert folded[u] is states[u]  # nothing applied: the same object back
    assert sum(map(sum, applied)) > 200 and sum(len(a) - sum(a) for a in applied) > 10  # both paths exercised


def test_empty_batch():
    assert fold_events([], [], np.zeros((3, DIM), np.float32)) == ([], [])
