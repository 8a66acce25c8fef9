"""The session rule over a whole micro-batch: every user's events folded at once, bit for bit ``apply_event``.

``streams.session.apply_event`` is the definition (one event, one user, plain values); this module is its
batched form for the worker. The events of a batch are applied in *waves*: wave ``k`` holds the ``k``-th
pending event of every user that has one, so each user's events keep their order, and each wave's vector
arithmetic ([users, dim] float32, rounded to float16 precision after every step as the rule does) is one
numpy pass instead of one per event. The per-event bookkeeping (duplicates, session bounds, counters, the
recent tracks and event ids) stays scalar, and a user's new ``SessionState`` is built once, after the last
wave. ``tests/unit/test_session_batch.py`` checks the result against ``apply_event`` event by event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from streams.records import Event
from streams.session import (
    LIKED,
    SKIPPED,
    Dynamics,
    SessionState,
    event_weights,
    id_digest,
    opens_session,
    outcome_of,
    state_rows,
)

# One pending event of a user: the validated event, its track index, its partition and stream position.
Pending = tuple[Event, int, int | None, int | None]


class _Fold:
    """The scalar part of one user's state while a batch is folded (the vectors live in the wave arrays)."""

    __slots__ = (
        "recent",
        "outcomes",
        "session_id",
        "start",
        "last_ts",
        "plays",
        "skips",
        "likes",
        "events",
        "last_outcome",
        "seen",
        "partition",
        "position",
        "version",
        "applied",
    )

    def __init__(self, s: SessionState) -> None:
        self.recent, self.outcomes, self.seen = list(s.recent), list(s.outcomes), list(s.seen_ids)
        self.session_id, self.start, self.last_ts = s.session_id, s.session_start_ms, s.last_ts_ms
        self.plays, self.skips, self.likes, self.events = s.plays, s.skips, s.likes, s.events
        self.last_outcome, self.partition, self.position, self.version = (
            s.last_outcome,
            s.partition,
            s.position,
            s.version,
        )
        self.applied = 0


class _Step(NamedTuple):
    """What one applied event does to the vectors: row, item, outcome, weights, and whether it opens a session.
    (A tuple: one is made per event, and a frozen dataclass costs several times as much to build.)"""

    row: int
    track: int
    outcome: int
    weight: float  # pos weight (plays, likes) or skip weight
    rate: float  # taste rate (0 for skips)
    new_session: bool


def _half(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float16).astype(np.float32)


def _step(
    row: int, f: _Fold, event: Event, track: int, partition: int | None, position: int | None, dyn: Dynamics
) -> _Step | None:
    """Advance the scalar state by one event (``apply_event``'s bookkeeping); ``None`` for a duplicate."""
    if position is not None and partition == f.partition and 0 <= position <= f.position:
        return None
    digest = id_digest(event.event_id)
    if digest in f.seen:
        return None
    new_session = opens_session(f.events, f.last_ts, f.session_id, event, dyn)
    if new_session:
        f.plays = f.skips = f.likes = f.events = 0
        f.recent, f.outcomes = [], []
        f.session_id = event.session_id or f"{event.user_id}:{event.ts_ms}"
        f.start = event.ts_ms
        f.last_ts = event.ts_ms
    else:
        f.last_ts = max(f.last_ts, event.ts_ms)
    outcome = outcome_of(event)
    weight, rate = event_weights(event, outcome, dyn)
    if outcome == SKIPPED:
        f.skips += 1
    elif outcome == LIKED:
        f.likes += 1
    else:
        f.plays += 1
    f.recent.append(track)
    f.outcomes.append(outcome)
    del f.recent[: -dyn.recent_max], f.outcomes[: -dyn.recent_max]
    f.seen.append(digest)
    del f.seen[: -dyn.dedup_max]
    f.events += 1
    f.last_outcome = outcome
    if partition is not None:
        f.partition = partition
    if position is not None:
        f.position = position
    f.version += 1
    f.applied += 1
    return _Step(row, track, outcome, weight, rate, new_session)


def fold_events(
    states: Sequence[SessionState],
    pending: Sequence[Sequence[Pending]],
    items: np.ndarray,
    dyn: Dynamics | None = None,
) -> tuple[list[SessionState], list[list[bool]]]:
    """Apply ``pending[u]`` (in order) to ``states[u]`` for every user ``u``: the states ``apply_event`` would
    give, one by one, and per event whether it was applied (``False``: a duplicate, left out).

    A user none of whose events applies gets ``states[u]`` back itself (the same object). ``items``: the
    catalog's embeddings float32 [N, D]."""
    dyn = dyn or Dynamics()
    n = len(states)
    empty = np.zeros((0, items.shape[1]), np.float32)
    pos, neg, taste = (state_rows(states, f) if n else empty.copy() for f in ("pos", "neg", "taste"))
    folds = [_Fold(s) for s in states]
    applied: list[list[bool]] = [[] for _ in range(n)]
    decay = np.float32(dyn.decay)
    longest = max((len(p) for p in pending), default=0)
    for k in range(longest):
        steps: list[_Step] = []
        for u in range(n):
            if k < len(pending[u]):
                event, track, partition, position = pending[u][k]
                step = _step(u, folds[u], event, track, partition, position, dyn)
                applied[u].append(step is not None)
                if step is not None:
                    steps.append(step)
        if steps:
            _wave(steps, pos, neg, taste, items, decay)
    out = [_finish(states[u], folds[u], pos[u], neg[u], taste[u]) if folds[u].applied else states[u] for u in range(n)]
    return out, applied


def _wave(
    steps: list[_Step], pos: np.ndarray, neg: np.ndarray, taste: np.ndarray, items: np.ndarray, decay: np.float32
) -> None:
    """One event per user of ``steps``, applied in place to rows of pos, neg, taste float32 [U, D]."""
    row, track, outcome, weight_, rate_, new_session = zip(*steps, strict=True)  # columns of the wave
    rows = np.asarray(row, np.int64)
    item = items[np.asarray(track, np.int64)].astype(np.float32, copy=False)
    skip = (np.asarray(outcome) == SKIPPED)[:, None]
    fresh = np.asarray(new_session, bool)[:, None]
    # The rule's scalars are Python floats multiplied into float32 vectors, i.e. cast to float32 first.
    weight = np.asarray(weight_, np.float64).astype(np.float32)[:, None]
    rate = np.asarray(rate_, np.float64)
    keep = (1.0 - rate).astype(np.float32)[:, None]
    rate32 = rate.astype(np.float32)[:, None]
    p = np.where(fresh, np.float32(0.0), pos[rows])
    q = np.where(fresh, np.float32(0.0), neg[rows])
    t = taste[rows]
    wi = weight * item
    pos[rows] = np.where(skip, _half(decay * p), _half(decay * p + wi))
    neg[rows] = np.where(skip, _half(decay * q + wi), _half(decay * q))
    taste[rows] = np.where(skip, t, _half(keep * t + rate32 * item))


def _finish(before: SessionState, f: _Fold, pos: np.ndarray, neg: np.ndarray, taste: np.ndarray) -> SessionState:
    return SessionState(
        pos=pos.copy(),
        neg=neg.copy(),
        taste=taste.copy(),
        recent=tuple(f.recent),
        outcomes=tuple(f.outcomes),
        session_id=f.session_id,
        session_start_ms=f.start,
        last_ts_ms=f.last_ts,
        plays=f.plays,
        skips=f.skips,
        likes=f.likes,
        events=f.events,
        last_outcome=f.last_outcome,
        seen_ids=tuple(f.seen),
        partition=f.partition,
        position=f.position,
        version=f.version,
    )
