"""The worker's batch step, independent of Faust: raw messages in, state written, recommendations out.

``Processor.process`` decodes and validates a micro-batch, turns bad input into dead letters, applies the
good events to each user's session state in per-user order (idempotently), writes the states, rescores
every user whose state changed with one model call, and writes their recommendations. Publishing to Kafka
is left to the caller (the Faust agent), which also measures event -> recommendations latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from serving.catalog import Catalog
from serving.rescore import Rescorer, to_record
from streams.errors import InvalidEvent
from streams.metrics import Metrics
from streams.records import (
    DEAD_LETTER_VALUE_MAX,
    UNKNOWN_TRACK,
    DeadLetter,
    Event,
    Recommendations,
    decode_event,
    event_type,
)
from streams.session import Dynamics, SessionState, apply_event
from streams.stores import Store


@dataclass(frozen=True)
class Incoming:
    """One consumed message: its payload and where it came from. ``timestamp_ms``: the broker timestamp."""

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass
class BatchOutcome:
    """What one batch produced. ``applied_ms``: broker timestamps of the events applied (for latency)."""

    recommendations: list[Recommendations] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    applied_ms: list[int] = field(default_factory=list)
    duplicates: int = 0


def now_ms() -> int:
    """Wall-clock milliseconds since the Unix epoch (the default clock)."""
    return time.time_ns() // 1_000_000


class Processor:
    """Applies micro-batches of raw events. Collaborators are injected; it holds no per-user state itself."""

    def __init__(
        self,
        catalog: Catalog,
        rescorer: Rescorer,
        store: Store,
        metrics: Metrics,
        provider: str,
        dynamics: Dynamics | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._catalog = catalog
        self._rescorer = rescorer
        self._store = store
        self._metrics = metrics
        self._provider = provider
        self._dyn = dynamics or Dynamics()
        self._clock = clock

    async def process(self, batch: Sequence[Incoming]) -> BatchOutcome:
        out = BatchOutcome()
        self._metrics.batch_size.observe(len(batch))
        per_user: dict[str, list[tuple[Event, int, Incoming]]] = {}
        for msg in batch:
            event: Event | None = None
            try:
                event = decode_event(msg.value)  # type: ignore[arg-type]
                index = self._catalog.lookup(event.track_id)
                if index is None:
                    raise InvalidEvent(UNKNOWN_TRACK, f"track {event.track_id!r} is not in the catalog")
            except InvalidEvent as exc:
                kind = event_type(event) if event is not None else "invalid"
                out.dead_letters.append(self._dead_letter(msg, exc, kind))
                continue
            per_user.setdefault(event.user_id, []).append((event, index, msg))
        if not per_user:
            return out

        users = list(per_user)
        before = await self._store.get_states(users)
        changed: dict[str, SessionState] = {}
        dim = self._catalog.dim
        items = self._catalog.embeddings
        for user, state in zip(users, before, strict=True):
            current = state if state is not None else SessionState.empty(dim)
            for event, index, msg in per_user[user]:
                after = apply_event(current, event, index, items[index], self._dyn, msg.partition, msg.offset)
                kind = event_type(event)
                if after is current:
                    out.duplicates += 1
                    self._metrics.events.labels(kind, "duplicate").inc()
                    continue
                current = after
                out.applied_ms.append(msg.timestamp_ms)
                self._metrics.events.labels(kind, "applied").inc()
            if state is None or current is not state:
                changed[user] = current
        if not changed:
            return out

        await self._store.put_states(changed)
        out.recommendations = self._rank(changed, per_user)
        await self._store.put_recommendations(out.recommendations)
        return out

    def _rank(
        self, changed: dict[str, SessionState], per_user: dict[str, list[tuple[Event, int, Incoming]]]
    ) -> list[Recommendations]:
        users = list(changed)
        states = [changed[u] for u in users]
        started = time.perf_counter()
        rankings = self._rescorer.rank(states, [s.last_ts_ms for s in states])
        self._metrics.rescore.labels(self._provider).observe(time.perf_counter() - started)
        generated = self._clock()
        recs = []
        for user, state, ranking in zip(users, states, rankings, strict=True):
            last_event, _, last_msg = per_user[user][-1]
            self._metrics.recommendations.labels("fallback" if ranking.fallback else "model").inc()
            recs.append(
                to_record(
                    user,
                    ranking,
                    self._catalog.track_ids,
                    self._catalog.model_version,
                    self._provider,
                    generated_ms=generated,
                    session_id=state.session_id,
                    event_id=last_event.event_id,
                    event_ms=last_msg.timestamp_ms,
                )
            )
        return recs

    def _dead_letter(self, msg: Incoming, exc: InvalidEvent, kind: str) -> DeadLetter:
        raw = msg.value or b""
        self._metrics.dead_letters.labels(exc.reason).inc()
        self._metrics.events.labels(kind, "dead_letter").inc()
        return DeadLetter(
            reason=exc.reason,
            detail=exc.detail[:500],
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key.decode("utf-8", "replace") if msg.key is not None else None,
            value=raw[:DEAD_LETTER_VALUE_MAX].decode("utf-8", "replace"),
            size=len(raw),
            failed_ms=self._clock(),
        )
