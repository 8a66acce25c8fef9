"""Per-user session state and the pure rule that applies one event to it.

No I/O here: the worker, the offline evaluation and the tests all call ``apply_event`` with plain values,
so the online state and the offline numbers come from the same code.

State, per user (format v1, see ``streams.state_codec`` and docs/state.md):

* ``pos``   float32 [dim]  decayed sum of what the session played through or liked (float16 precision)
* ``neg``   float32 [dim]  decayed sum of what the session skipped
* ``taste`` float32 [dim]  long-term taste: a slow average of positives across sessions
* ``recent`` track indices, most recent last, with outcome codes (played, skipped, liked)
* counters of the current session, its id and bounds, the stream position of the last applied event, and the ids of the
  most recent events, which make ``apply_event`` idempotent under redelivery.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from streams.records import MAX_BATCH_EVENTS, Event, Like, Play, Skip

PLAYED: Final = 0
SKIPPED: Final = 1
LIKED: Final = 2
OUTCOME_NAMES: Final = ("played", "skipped", "liked")

# A play counts as a positive signal in proportion to how much of the track was heard; a play of under
# this many milliseconds without a duration is treated as a skip-like weak signal.
SKIP_PROXY_MS: Final = 30_000


@dataclass(frozen=True)
class Dynamics:
    """How strongly each kind of event moves the session and long-term vectors."""

    decay: float = 0.6  # per event, for pos and neg
    play_weight: float = 1.0
    like_weight: float = 3.0
    skip_weight: float = 1.0
    taste_rate: float = 0.05  # per positive event, for the long-term vector
    gap_ms: int = 30 * 60 * 1000
    recent_max: int = 32
    dedup_max: int = 16


@dataclass(frozen=True)
class SessionState:
    """The state of one user. Immutable: ``apply_event`` returns a new one."""

    pos: np.ndarray
    neg: np.ndarray
    taste: np.ndarray
    recent: tuple[int, ...] = ()
    outcomes: tuple[int, ...] = ()
    session_id: str = ""
    session_start_ms: int = 0
    last_ts_ms: int = 0
    plays: int = 0
    skips: int = 0
    likes: int = 0
    events: int = 0  # events applied in the current session (position in session)
    last_outcome: int = -1
    seen_ids: tuple[int, ...] = ()  # 64-bit digests of the last applied event ids (``id_digest``)
    partition: int = -1  # Kafka partition of the last applied event, -1 if none
    position: int = -1  # stream position (``stream_position``) of the last applied event, -1 if none
    version: int = 0  # number of events ever applied; bumps on every change

    @property
    def dim(self) -> int:
        return int(self.pos.shape[0])

    @staticmethod
    def empty(dim: int) -> SessionState:
        z = np.zeros(dim, dtype=np.float32)
        return SessionState(pos=z, neg=z.copy(), taste=z.copy())


def id_digest(event_id: str) -> int:
    """A 64-bit digest of an event id: what the state keeps to recognise the id again (8 bytes, not 64)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


def _half(v: np.ndarray) -> np.ndarray:
    """``v`` at float16 precision, as float32: state vectors are kept (and stored) at half precision, so the
    state in memory, in Redis and in an offline replay is the same, bit for bit, in half the bytes."""
    return v.astype(np.float16).astype(np.float32)


def stream_position(offset: int, index: int = 0) -> int:
    """The position of an event in its partition: the message's Kafka offset and the event's index in the
    message (0 unless the message is a batch). Positions grow with offsets, and with indices inside a batch."""
    return offset * MAX_BATCH_EVENTS + index


def is_duplicate(state: SessionState, event_id: str, partition: int | None = None, position: int | None = None) -> bool:
    """True if this event was already applied: by its id, or by its position in the user's partition."""
    if position is not None and partition == state.partition and 0 <= position <= state.position:
        return True
    return id_digest(event_id) in state.seen_ids


def outcome_of(event: Event) -> int:
    """Map an event to PLAYED, SKIPPED or LIKED."""
    if isinstance(event, Like):
        return LIKED
    if isinstance(event, Skip):
        return SKIPPED
    return PLAYED


def _play_strength(event: Play) -> float:
    if event.duration_ms:
        return float(min(1.0, event.played_ms / event.duration_ms))
    return float(min(1.0, event.played_ms / SKIP_PROXY_MS))


def opens_session(events: int, last_ts_ms: int, session_id: str, event: Event, dyn: Dynamics) -> bool:
    """True if ``event`` starts a new session for a state with ``events`` applied in its current session, its last
    event at ``last_ts_ms`` and id ``session_id``: the first event, a gap over ``dyn.gap_ms``, or another named
    session."""
    if events == 0 or (event.ts_ms - last_ts_ms) > dyn.gap_ms:
        return True
    return event.session_id is not None and session_id != "" and event.session_id != session_id


def session_ended(last_ms: int, now_ms: int, dyn: Dynamics) -> bool:
    """True if a session whose last event (or list) is at ``last_ms`` is over at ``now_ms`` (the gap rule)."""
    return now_ms - last_ms > dyn.gap_ms


def session_start_view(state: SessionState) -> SessionState:
    """The state as the first ranking of its next session sees it: the session vectors, recent tracks and
    counters cleared (what ``apply_event`` does when an event opens a session), the long-term taste kept. For
    ranking only; never stored."""
    zero = np.zeros_like(state.pos)
    return replace(
        state,
        pos=zero,
        neg=zero.copy(),
        recent=(),
        outcomes=(),
        plays=0,
        skips=0,
        likes=0,
        events=0,
        last_outcome=-1,
        session_id="",
    )


def event_weights(event: Event, outcome: int, dyn: Dynamics) -> tuple[float, float]:
    """(weight, taste rate) of an event: a skip adds ``skip_weight`` x item to ``neg`` and leaves the taste; a
    play or like adds its weight x item to ``pos`` and moves the taste by the rate."""
    if outcome == SKIPPED:
        return dyn.skip_weight, 0.0
    weight = dyn.like_weight if outcome == LIKED else dyn.play_weight * _play_strength(event)  # type: ignore[arg-type]
    return weight, dyn.taste_rate * (2.0 if outcome == LIKED else weight)


def apply_event(
    state: SessionState,
    event: Event,
    track_index: int,
    item: np.ndarray,
    dyn: Dynamics = Dynamics(),
    partition: int | None = None,
    position: int | None = None,
) -> SessionState:
    """Apply one validated event for a known track (``item`` is its embedding) and return the new state.

    Idempotent: an event whose id (or stream position, see ``stream_position``) was already applied returns
    ``state`` unchanged.
    Events older than the current session's last event still count but never move the session bounds.
    """
    if position is not None and partition == state.partition and 0 <= position <= state.position:
        return state
    digest = id_digest(event.event_id)
    if digest in state.seen_ids:
        return state

    new_session = opens_session(state.events, state.last_ts_ms, state.session_id, event, dyn)
    if new_session:
        pos = np.zeros_like(state.pos)
        neg = np.zeros_like(state.neg)
        plays = skips = likes = events = 0
        recent_outcomes: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())
        session_id = event.session_id or f"{event.user_id}:{event.ts_ms}"
        start = event.ts_ms
    else:
        pos, neg = state.pos, state.neg
        plays, skips, likes, events = state.plays, state.skips, state.likes, state.events
        recent_outcomes = (state.recent, state.outcomes)
        session_id = state.session_id
        start = state.session_start_ms

    outcome = outcome_of(event)
    item = item.astype(np.float32, copy=False)
    taste = state.taste
    weight, rate = event_weights(event, outcome, dyn)
    if outcome == SKIPPED:
        neg = _half(dyn.decay * neg + weight * item)
        pos = _half(dyn.decay * pos)
        skips += 1
    else:
        pos = _half(dyn.decay * pos + weight * item)
        neg = _half(dyn.decay * neg)
        taste = _half((1.0 - rate) * taste + rate * item)
        if outcome == LIKED:
            likes += 1
        else:
            plays += 1

    recent = (recent_outcomes[0] + (track_index,))[-dyn.recent_max :]
    outcomes = (recent_outcomes[1] + (outcome,))[-dyn.recent_max :]
    seen = (state.seen_ids + (digest,))[-dyn.dedup_max :]
    return SessionState(  # every field, directly: faster than dataclasses.replace on the hot path
        pos=pos,
        neg=neg,
        taste=taste,
        recent=recent,
        outcomes=outcomes,
        session_id=session_id,
        session_start_ms=start,
        last_ts_ms=max(state.last_ts_ms, event.ts_ms) if not new_session else event.ts_ms,
        plays=plays,
        skips=skips,
        likes=likes,
        events=events + 1,
        last_outcome=outcome,
        seen_ids=seen,
        partition=partition if partition is not None else state.partition,
        position=position if position is not None else state.position,
        version=state.version + 1,
    )


CONTEXT_FEATURES: Final = (
    "session_skip_rate",
    "log_plays",
    "log_skips",
    "log_likes",
    "log_position",
    "hour_sin",
    "hour_cos",
    "last_was_skip",
)


def context_features(state: SessionState, now_ms: int | None = None) -> np.ndarray:
    """The model's context input for one user: float32 [len(CONTEXT_FEATURES)] (signature v1)."""
    heard = state.plays + state.skips
    skip_rate = state.skips / heard if heard else 0.0
    ts = now_ms if now_ms is not None else state.last_ts_ms
    hour = (ts / 3_600_000.0) % 24.0
    angle = 2.0 * math.pi * hour / 24.0
    return np.array(
        [
            skip_rate,
            math.log1p(state.plays) / 4.0,
            math.log1p(state.skips) / 4.0,
            math.log1p(state.likes) / 4.0,
            math.log1p(state.events) / 4.0,
            math.sin(angle),
            math.cos(angle),
            1.0 if state.last_outcome == SKIPPED else 0.0,
        ],
        dtype=np.float32,
    )


def state_rows(states: Sequence[SessionState], field: str) -> np.ndarray:
    """One of the states' vectors (``"pos"``, ``"neg"`` or ``"taste"``) as the rows of float32 [B, D]: the same
    array as ``np.stack``, built with one concatenation (``np.stack`` costs ~3x as much for a batch of 64)."""
    if not states:
        return np.zeros((0, 0), np.float32)
    rows = [getattr(s, field) for s in states]
    return np.concatenate(rows).reshape(len(rows), -1).astype(np.float32, copy=False)


def context_matrix(states: Sequence[SessionState], now_ms: Sequence[int]) -> np.ndarray:
    """``context_features`` of many users at once: float32 [B, len(CONTEXT_FEATURES)], the same values."""
    if not states:
        return np.zeros((0, len(CONTEXT_FEATURES)), dtype=np.float32)
    c = np.array(
        [(s.plays, s.skips, s.likes, s.events, 1.0 if s.last_outcome == SKIPPED else 0.0) for s in states],
        dtype=np.float64,
    )  # [B, 5]
    skips, last_skip = c[:, 1], c[:, 4]
    heard = c[:, 0] + skips
    skip_rate = np.divide(skips, heard, out=np.zeros_like(skips), where=heard > 0)
    angle = 2.0 * math.pi * ((np.asarray(now_ms, dtype=np.float64) / 3_600_000.0) % 24.0) / 24.0
    logs = np.log1p(c[:, :4]) / 4.0  # plays, skips, likes, events
    return np.column_stack([skip_rate, logs, np.sin(angle), np.cos(angle), last_skip]).astype(np.float32)


def query_vectors(
    pos: np.ndarray, neg: np.ndarray, taste: np.ndarray, neg_weight: float = 1.0, taste_weight: float = 1.0
) -> np.ndarray:
    """``query_vector`` for many users at once: pos, neg, taste float32 [B, D] -> float32 [B, D]."""
    n = np.linalg.norm(taste, axis=1, keepdims=True)
    unit_taste = np.divide(taste, n, out=np.zeros_like(taste), where=n > 0)
    return (pos - neg_weight * neg + taste_weight * unit_taste).astype(np.float32)


def query_vector(state: SessionState, neg_weight: float = 1.0, taste_weight: float = 1.0) -> np.ndarray:
    """The retrieval query for one user, float32 [dim]: the session's net evidence plus the long-term taste.

    ``pos - neg_weight * neg + taste_weight * unit(taste)``. ``pos`` and ``neg`` keep their magnitudes (decayed
    sums of unit item vectors), so a skip cancels what the plays before it pulled toward, in the same units,
    and after a run of skips the session's positives have faded and the long-term taste (worth one fresh play)
    leads retrieval elsewhere. Normalising ``pos`` and ``neg`` first would keep the session pointing at a
    direction it has just been skipping away from (measured in docs/closed-loop.md).
    """
    q = state.pos - neg_weight * state.neg + taste_weight * _unit(state.taste)
    return q.astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v
