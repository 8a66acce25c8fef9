"""The worker's batch step, independent of Faust: raw messages in, state written, recommendations out.

``Processor.process`` decodes and validates a micro-batch, turns bad input into dead letters, applies the
good events to each user's session state in per-user order (idempotently), writes the states, rescores
every user whose state changed with one model call, and writes their recommendations. Publishing to Kafka
is left to the caller (the Faust agent), which also measures event -> recommendations latency.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from serving.bias import SessionBias
from serving.catalog import Catalog
from serving.diversity import NEUTRAL, Preferences
from serving.prefs_store import PreferencesStore
from serving.rescore import Ranking, Rescorer, to_record
from serving.rules import ActiveRules
from serving.rules_store import RulesCache
from streams.errors import InvalidEvent, RetryableError
from streams.metrics import Metrics
from streams.records import (
    DEAD_LETTER_VALUE_MAX,
    FUTURE_TIMESTAMP,
    UNKNOWN_TRACK,
    DeadLetter,
    Event,
    Recommendations,
    decode_message,
    event_type,
)
from streams.session import Dynamics, SessionState, stream_position
from streams.session_batch import fold_events
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


Pending = list[tuple[Event, int, Incoming, int]]  # event, track index, its message, its stream position


class Processor:
    """Applies micro-batches of raw events. Collaborators are injected; it holds no per-user state itself.

    ``rescore_timeout_s``: the slot for ranking ``slot_users`` users (default ``model_batch``); a micro-batch of U
    users gets ceil(U / slot_users) slots, and ranking slower than that is abandoned for the cheap ranking (and
    counted as a rescoring budget miss), so recommendations still arrive within the budget. ``cas_attempts``: how
    often a user's state is re-read and re-applied when another worker changed it meanwhile (during a rebalance).
    """

    def __init__(
        self,
        catalog: Catalog,
        rescorer: Rescorer,
        store: Store,
        metrics: Metrics,
        provider: str,
        dynamics: Dynamics | None = None,
        clock: Callable[[], int] = now_ms,
        rescore_timeout_s: float | None = None,
        cas_attempts: int = 5,
        model_batch: int = 64,
        slot_users: int | None = None,
        max_clock_skew_ms: int = 86_400_000,
        preferences: PreferencesStore | None = None,
        rules: RulesCache | None = None,
        bias: SessionBias | None = None,
    ) -> None:
        self._catalog = catalog
        self._rescorer = rescorer
        self._store = store
        self._metrics = metrics
        self._provider = provider
        self._dyn = dynamics or Dynamics()
        self._clock = clock
        self._timeout = rescore_timeout_s
        self._model_batch = model_batch
        # users one rescoring slot covers (default: one model call's)
        self._slot_users = slot_users if slot_users is not None else model_batch
        self._cas_attempts = cas_attempts
        self._max_skew_ms = max_clock_skew_ms
        self._preferences = preferences  # per-user exploration/diversity knob, read once per batch
        self._rules = rules  # editorial rules, refreshed every few seconds, not per batch
        self._bias = bias  # cold-start prior and prompt steers, applied to what the ranking sees
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segue-model")
        self._model_call: asyncio.Future[list[Ranking]] | None = None

    async def process(self, batch: Sequence[Incoming]) -> BatchOutcome:
        """Apply one micro-batch; raise ``RetryableError`` (nothing half-done is visible) if a store fails."""
        out = BatchOutcome()
        per_user = self._validate(batch, out)
        # events, not messages: a message may carry a batch of events
        self._metrics.batch_size.observe(sum(len(p) for p in per_user.values()) + len(out.dead_letters))
        if not per_user:
            return out
        final = await self._apply_all(per_user, out)
        out.recommendations, ranked = await self._rank(final, per_user)
        await self._store.put_recommendations(out.recommendations, ranked)
        return out

    def _validate(self, batch: Sequence[Incoming], out: BatchOutcome) -> dict[str, Pending]:
        per_user: dict[str, Pending] = {}
        for msg in batch:
            for index, (payload, decoded) in enumerate(decode_message(msg.value)):
                try:
                    if isinstance(decoded, InvalidEvent):
                        raise decoded
                    event = decoded
                    track = self._catalog.lookup(event.track_id)
                    if track is None:
                        raise InvalidEvent(UNKNOWN_TRACK, f"track {event.track_id!r} is not in the catalog")
                    if event.ts_ms > msg.timestamp_ms + self._max_skew_ms:
                        raise InvalidEvent(
                            FUTURE_TIMESTAMP,
                            f"ts_ms {event.ts_ms} is more than {self._max_skew_ms} ms after the broker time "
                            f"{msg.timestamp_ms}: fix the client clock",
                        )
                except InvalidEvent as exc:
                    kind = event_type(decoded) if not isinstance(decoded, InvalidEvent) else "invalid"
                    out.dead_letters.append(self._dead_letter(msg, exc, kind, payload, index))
                    continue
                per_user.setdefault(event.user_id, []).append((event, track, msg, stream_position(msg.offset, index)))
        return per_user

    async def _apply_all(self, per_user: dict[str, Pending], out: BatchOutcome) -> dict[str, SessionState]:
        """Apply every user's events and write the changed states (compare-and-set); return all states."""
        final: dict[str, SessionState] = {}
        pending = list(per_user)
        for _ in range(self._cas_attempts):
            before = await self._store.get_states(pending)
            updates: dict[str, SessionState] = {}
            expected: dict[str, int | None] = {}
            outcomes: dict[str, list[tuple[str, int | None]]] = {}
            empty = SessionState.empty(self._catalog.dim)
            starts = [state if state is not None else empty for state in before]
            folded, applied = fold_events(
                starts,
                [[(e, i, m.partition, p) for e, i, m, p in per_user[user]] for user in pending],
                self._catalog.embeddings,
                self._dyn,
            )  # every user's events at once, exactly as apply_event one by one
            for user, state, current, flags in zip(pending, before, folded, applied, strict=True):
                outcomes[user] = [
                    (event_type(event), msg.timestamp_ms if ok else None)
                    for (event, _, msg, _), ok in zip(per_user[user], flags, strict=True)
                ]
                if state is None or current is not state:
                    updates[user], expected[user] = current, (state.version if state is not None else None)
                else:
                    final[user] = current
            refused = await self._store.put_states(updates, expected)
            counts: Counter[tuple[str, str]] = Counter()  # counted per batch: a labelled inc per event costs more
            for user in pending:
                if user in refused:
                    continue
                if user in updates:
                    final[user] = updates[user]
                for kind, ts_ms in outcomes[user]:
                    if ts_ms is None:
                        out.duplicates += 1
                        counts[kind, "duplicate"] += 1
                    else:
                        out.applied_ms.append(ts_ms)
                        counts[kind, "applied"] += 1
            for (kind, outcome), n in counts.items():
                self._metrics.events.labels(kind, outcome).inc(n)
            pending = [u for u in pending if u in refused]
            if not pending:
                return final
        raise RetryableError(f"the state of {len(pending)} users kept changing under this worker (a rebalance?)")

    async def _rank(
        self, final: dict[str, SessionState], per_user: dict[str, Pending]
    ) -> tuple[list[Recommendations], list[Ranking]]:
        """Rank every user of the batch (also those whose events were all redelivered: their earlier
        recommendations may never have been published)."""
        users = list(final)
        states = [final[u] for u in users]
        if self._bias is not None:
            devices = [getattr(per_user[u][-1][0].context, "device", None) for u in users]
            states = await self._bias.apply(users, states, devices, [s.last_ts_ms for s in states], self._clock())
        prefs = await self._preferences_of(users)
        rules = await self._rules.current(self._clock()) if self._rules is not None else None
        started = time.perf_counter()
        rankings = None
        if self._model_call is None or self._model_call.done():  # at most one model call in flight
            abandoned = threading.Event()
            self._model_call = asyncio.get_running_loop().run_in_executor(
                self._model_thread,
                partial(
                    self._rank_in_chunks,
                    prefs=prefs,
                    rules=rules,
                    users=users,
                    sources=[final[u] for u in users],
                    abandoned=abandoned,
                ),
                states,
                [s.last_ts_ms for s in states],
            )
            slots = -(-len(states) // self._slot_users)
            timeout = self._timeout * slots if self._timeout is not None else None
            try:
                rankings = await asyncio.wait_for(asyncio.shield(self._model_call), timeout=timeout)
            except TimeoutError:
                abandoned.set()  # its result is not used: stop after the chunk in progress, freeing the CPU
        if rankings is None:  # the model overran its slot (now or in an earlier batch): the cheap ranking
            self._metrics.budget_misses.labels("rescore").inc()
            rankings = self._rescorer.rank_fallback(states, rules)
        self._metrics.rescore.labels(self._provider).observe(time.perf_counter() - started)
        generated = self._clock()
        recs = []
        kinds: Counter[str] = Counter()
        for user, state, ranking in zip(users, states, rankings, strict=True):
            last_event, _, last_msg, _ = per_user[user][-1]
            kinds["fallback" if ranking.fallback else "model"] += 1
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
        for kind, n in kinds.items():
            self._metrics.recommendations.labels(kind).inc(n)
        return recs, rankings

    def _rank_in_chunks(
        self,
        states: list[SessionState],
        now_ms: list[int],
        prefs: list[Preferences] | None,
        rules: ActiveRules | None,
        users: list[str],
        sources: list[SessionState] | None = None,
        abandoned: threading.Event | None = None,
    ) -> list[Ranking]:
        """``Rescorer.rank`` over ``model_batch`` users at a time (bounded tensors; the timeout scales with the
        number of users, one slot per ``slot_users``). Once ``abandoned`` is set (the batch
        overran its slot and was ranked the cheap way) the remaining chunks are not ranked: the result, then
        shorter than ``states``, is discarded."""
        out: list[Ranking] = []
        for i in range(0, len(states), self._model_batch):
            if abandoned is not None and abandoned.is_set():
                break
            j = i + self._model_batch
            part_prefs = prefs[i:j] if prefs is not None else None
            part_sources = sources[i:j] if sources is not None else None  # the states before the session bias
            out.extend(
                self._rescorer.rank(
                    states[i:j], now_ms[i:j], prefs=part_prefs, rules=rules, users=users[i:j], sources=part_sources
                )
            )
        return out

    async def _preferences_of(self, users: list[str]) -> list[Preferences] | None:
        """The batch's users' knobs in one round trip; ``None`` when nobody set one (the plain ranking)."""
        if self._preferences is None:
            return None
        stored = await self._preferences.get_many(users)
        if all(p is None for p in stored):
            return None
        return [p if p is not None else NEUTRAL for p in stored]

    def _dead_letter(self, msg: Incoming, exc: InvalidEvent, kind: str, raw: bytes, index: int) -> DeadLetter:
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
            index=index,
        )
