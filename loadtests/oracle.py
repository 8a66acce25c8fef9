"""The offline oracle of the fault suite: what every user's state must be after a stream of events.

``expected_states`` recomputes each user's session state from the events alone with the same pure rule
the worker uses; ``compare`` holds what a run left in Redis against it and counts lost and double-applied
events (a state's ``version`` counts the events applied to it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from serving.catalog import Catalog
from streams.records import decode_event
from streams.session import Dynamics, SessionState, apply_event


def expected_states(catalog: Catalog, events: Iterable[Mapping[str, Any]], dyn: Dynamics | None = None) -> dict:
    """Each user's state after their events in the given (per-user) order, applied exactly once."""
    out: dict[str, SessionState] = {}
    for raw in events:
        e = decode_event(msgspec.json.encode(raw))
        i = catalog.index[e.track_id]
        state = out.get(e.user_id) or SessionState.empty(catalog.dim)
        out[e.user_id] = apply_event(state, e, i, catalog.embeddings[i], dyn or Dynamics())
    return out


@dataclass(frozen=True)
class Comparison:
    """Lost: expected applications missing. Double-applied: applications beyond the expected ones.
    Mismatched: users whose counts agree but whose vectors or recent tracks differ (order violations)."""

    users: int
    events: int
    lost: int
    double_applied: int
    mismatched: int

    @property
    def exact(self) -> bool:
        return self.lost == 0 and self.double_applied == 0 and self.mismatched == 0


def same_state(a: SessionState, b: SessionState) -> bool:
    """Equal up to float rounding, ignoring where in Kafka the events came from."""
    return (
        np.allclose(a.pos, b.pos, atol=1e-5)
        and np.allclose(a.neg, b.neg, atol=1e-5)
        and np.allclose(a.taste, b.taste, atol=1e-5)
        and (a.recent, a.outcomes, a.seen_ids, a.session_id) == (b.recent, b.outcomes, b.seen_ids, b.session_id)
        and (a.plays, a.skips, a.likes, a.events, a.version) == (b.plays, b.skips, b.likes, b.events, b.version)
    )


def compare(expected: Mapping[str, SessionState], actual: Mapping[str, SessionState | None]) -> Comparison:
    lost = double = mismatched = 0
    for user, want in expected.items():
        got = actual.get(user)
        have = got.version if got is not None else 0
        lost += max(0, want.version - have)
        double += max(0, have - want.version)
        if got is not None and have == want.version and not same_state(got, want):
            mismatched += 1
    return Comparison(len(expected), sum(s.version for s in expected.values()), lost, double, mismatched)
