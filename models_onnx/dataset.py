"""Training examples: generated events replayed through the production session rule.

Every event dict is decoded with ``streams.records.decode_event`` and applied with
``streams.session.apply_event``, exactly as the worker does, so the model is trained on the states it
will be served. Before each event that continues a session, the state *before* it is recorded with the
event's track as the target: positive if played or liked, negative if skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from streams.records import decode_event
from streams.session import (
    CONTEXT_FEATURES,
    SKIPPED,
    Dynamics,
    SessionState,
    apply_event,
    context_features,
    outcome_of,
)


@dataclass(frozen=True)
class Examples:
    """Replayed states and their next-track targets; row ``i`` of every array is one example."""

    pos: np.ndarray  # float32 [E, D]
    neg: np.ndarray  # float32 [E, D]
    taste: np.ndarray  # float32 [E, D]
    context: np.ndarray  # float32 [E, 8]
    target: np.ndarray  # int64 [E] track index of the next event
    outcome: np.ndarray  # int64 [E] PLAYED, SKIPPED or LIKED of the next event
    user: np.ndarray  # int64 [E] position of the user in first-seen order
    last_skip: np.ndarray  # int64 [E] track index of the session's latest skip before the target, or -1

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def take(self, rows: np.ndarray) -> Examples:
        """The examples at ``rows``."""
        return Examples(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))


def replay(
    events: Iterable[Mapping[str, Any]],
    index: Mapping[str, int],
    items: np.ndarray,
    dyn: Dynamics | None = None,
) -> Examples:
    """Replay ``events`` (each user's in time order) and collect one example per in-session transition.

    ``index`` maps track ids to rows of ``items`` float32 [N, D]. Events for unknown tracks are skipped.
    """
    dyn = dyn or Dynamics()
    dim = int(items.shape[1])
    states: dict[str, SessionState] = {}
    users: dict[str, int] = {}
    pos, neg, taste, ctx, target, outcome, user, last_skip = [], [], [], [], [], [], [], []
    for raw in events:
        event = decode_event(msgspec.json.encode(raw))
        ti = index.get(event.track_id)
        if ti is None:
            continue
        state = states.get(event.user_id)
        if state is None:
            state = SessionState.empty(dim)
            users[event.user_id] = len(users)
        elif _continues(state, event.session_id, event.ts_ms, dyn):
            pos.append(state.pos)
            neg.append(state.neg)
            taste.append(state.taste)
            ctx.append(context_features(state, event.ts_ms))
            target.append(ti)
            outcome.append(outcome_of(event))
            user.append(users[event.user_id])
            last_skip.append(_last_skip(state))
        states[event.user_id] = apply_event(state, event, ti, items[ti], dyn)
    if not target:
        z = np.zeros((0, dim), np.float32)
        return Examples(z, z, z, np.zeros((0, len(CONTEXT_FEATURES)), np.float32), *(np.zeros(0, np.int64),) * 4)
    return Examples(
        pos=np.stack(pos),
        neg=np.stack(neg),
        taste=np.stack(taste),
        context=np.stack(ctx),
        target=np.asarray(target, np.int64),
        outcome=np.asarray(outcome, np.int64),
        user=np.asarray(user, np.int64),
        last_skip=np.asarray(last_skip, np.int64),
    )


def _last_skip(state: SessionState) -> int:
    for track, outcome in zip(reversed(state.recent), reversed(state.outcomes), strict=True):
        if outcome == SKIPPED:
            return track
    return -1


def _continues(state: SessionState, session_id: str | None, ts_ms: int, dyn: Dynamics) -> bool:
    if state.events == 0 or ts_ms - state.last_ts_ms > dyn.gap_ms:
        return False
    return session_id is None or session_id == state.session_id


def labels(outcome: np.ndarray) -> np.ndarray:
    """1.0 for played or liked, 0.0 for skipped: float32 [E]."""
    return (outcome != SKIPPED).astype(np.float32)
