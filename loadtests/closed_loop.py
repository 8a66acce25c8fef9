"""The closed loop: simulated listeners play what segue recommends, through the real stack.

    python -m loadtests.closed_loop [--listeners 200] [--positions 20] [--seed 1] [--out DIR] [--smoke]

Starts the embedded broker and Redis and a real worker process on the default bundle (or, with
``--bootstrap`` and ``--redis-url``, uses servers where a worker already runs). Every listener
(``loadtests.sim_listener``: a taste model of its own in the catalog's observable space) first has a
listening history of a few earlier sessions sent through the stack, so that segue knows its long-term
taste. Then one session: at each position the listener reads its current recommendations, plays the top one
it has not heard this session, skips or likes it by its hidden taste and drifting mood, sends the event
with the SDK and waits until the recommendations answer that event (``Recommendations.event_id``). Lists are
read through the API as apps read them (``GET /v1/users/{user}/recommendations``; the first read of a session
finds the previous session's list and gets it re-ranked for the new session), or from Redis where an external
worker runs without ``--api``.

The same listeners (same seeds, same mood trajectories) also hear two recommenders computed in-process:
``static`` (segue's retrieval and model on a state with the session vectors and counters zeroed: long-term
taste only) and ``random`` (uniformly random unheard tracks); and a reference, ``oracle``, which reads the hidden
mood and ranks by the listener's own utility (the floor the listeners allow, position by position). Output in
``--out``: ``results.json``, ``report.md``, ``skip_like_by_position.png`` and, for the exploration/diversity
settings, ``tradeoff.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from loadtests import loop_metrics as lm
from loadtests.sim_listener import (
    Mood,
    Reaction,
    SimParams,
    TasteListener,
    TrackSpace,
    organic_pick,
    react,
    to_event,
    utility,
)
from serving.catalog import Catalog
from serving.diversity import Preferences
from serving.intent import SessionIntent
from serving.prefs_store import RedisPreferencesStore
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from serving.separation import artist_codes
from streams.errors import SegueError, StackError
from streams.sdk import EventProducer
from streams.session import Dynamics, SessionState, apply_event, session_ended, session_start_view
from streams.settings import KafkaSettings, RedisSettings
from streams.stores import RedisStore

DEFAULT_OUT = Path(".segue/reports/closed-loop")
HISTORY_GAP_MS = 8 * 3_600_000  # between two history sessions (well over the 30-minute session gap)
TRACK_GAP_MS = 2_000  # between the end of one track and the next
READ_CONCURRENCY = 16  # recommendation reads in flight at once


def parse_settings(text: str) -> list[Preferences]:
    """``"0:0,0.1:0.3"`` -> knob settings (exploration:diversity, both in [0, 1]); ValueError with the format."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            e, d = (float(x) for x in part.split(":"))
        except ValueError:
            raise ValueError(f"a setting is EXPLORATION:DIVERSITY (e.g. 0.1:0.3), got {part!r}") from None
        out.append(Preferences(e, d))
    return out


def label(prefs: Preferences | None) -> str:
    return "-" if prefs is None else f"exploration {prefs.exploration:g}, diversity {prefs.diversity:g}"


def choose(shown: np.ndarray, mode: str, rng: np.random.Generator, browse_decay: float = 0.6) -> int:
    """Which of the shown (unheard) tracks the listener plays: the top one (``top``), or with ``browse`` rank r
    (0-based) with probability proportional to ``browse_decay ** r`` (people mostly take the first few)."""
    if mode == "top" or len(shown) == 1:
        return int(shown[0])
    w = browse_decay ** np.arange(len(shown))
    return int(shown[int(rng.choice(len(shown), p=w / w.sum()))])


# --- listeners ---------------------------------------------------------------------------------------


@dataclass
class Seat:
    """One listener's place in one recommender's run: its mood, what it heard, its own random streams."""

    listener: TasteListener
    mood: Mood
    mood_rng: np.random.Generator
    react_rng: np.random.Generator
    choice_rng: np.random.Generator
    ts_ms: int
    session_id: str
    heard: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    shown: list[np.ndarray] = field(default_factory=list)
    served: list[np.ndarray] = field(default_factory=list)  # the recommender's full ranking at each position
    foci: list[int] = field(default_factory=list)  # the hidden mood's focus genre at each position (diagnosis)


@dataclass(frozen=True)
class HistoryEvent:
    track: int
    reaction: Reaction
    ts_ms: int
    session_id: str


def history(
    space: TrackSpace,
    listener: TasteListener,
    seed: int,
    n_sessions: int,
    length: int,
    before_ms: int,
    p: SimParams,
) -> list[HistoryEvent]:
    """Earlier sessions the listener chose itself (``organic_pick``), ending hours before ``before_ms``."""
    rng = np.random.default_rng([seed, 9, listener.index])
    out: list[HistoryEvent] = []
    for s in range(n_sessions):
        ts = before_ms - (n_sessions - s) * HISTORY_GAP_MS
        mood = Mood.start(space, listener, rng, p)
        heard: set[int] = set()
        sid = f"h{s}-{listener.index}-{seed}"
        for _ in range(length):
            t = organic_pick(space, listener, mood, heard, rng, p)
            heard.add(t)
            r = react(space, listener, mood, t, rng, p)
            out.append(HistoryEvent(t, r, ts, sid))
            ts += r.played_ms + TRACK_GAP_MS
            mood.drift(space, listener, rng, p)
    return out


def known_genres(space: TrackSpace, events: Sequence[HistoryEvent], min_kept: int = 3) -> set[int]:
    """The genres a listener's history shows: at least ``min_kept`` tracks of it played or liked."""
    kept = np.bincount([space.genre[h.track] for h in events if h.reaction.kind != "skip"], minlength=space.n_genres)
    return {int(g) for g in np.flatnonzero(kept >= min_kept)}


def seats(
    space: TrackSpace, listeners: Sequence[TasteListener], seed: int, start_ms: int, p: SimParams, tag: str
) -> list[Seat]:
    """Fresh seats: the same seeds give the same moods and reactions whichever recommender is heard."""
    out = []
    for lst in listeners:
        mood_rng = np.random.default_rng([seed, 7, lst.index])
        out.append(
            Seat(
                listener=lst,
                mood=Mood.start(space, lst, mood_rng, p),
                mood_rng=mood_rng,
                react_rng=np.random.default_rng([seed, 8, lst.index]),
                choice_rng=np.random.default_rng([seed, 10, lst.index]),
                ts_ms=start_ms,
                session_id=f"live-{tag}-{lst.index}",
            )
        )
    return out


# --- recommenders -----------------------------------------------------------------------------------


class Recommender(Protocol):
    """What the loop needs from a recommender (all per listener, in seat order)."""

    name: str

    async def begin(self, histories: Sequence[Sequence[HistoryEvent]]) -> None: ...

    async def lists(self, seats: Sequence[Seat]) -> list[np.ndarray]:
        """The current ranking of each listener: track indices, best first."""
        ...

    async def observe(self, seats: Sequence[Seat], events: Sequence[dict[str, Any]]) -> None:
        """Take one event per listener and return once the next lists reflect them."""
        ...


def _event_of(h: HistoryEvent, user: str, space: TrackSpace) -> dict[str, Any]:
    return to_event(h.reaction, user, space.track_ids[h.track], h.ts_ms, h.session_id, uuid.uuid4().hex, "search")


class InProcessModel:
    """The serving model in this process: catalog, exact retrieval and the ONNX scorer of one bundle."""

    def __init__(self, bundle: Path, n_recs: int = 20, n_candidates: int = 200) -> None:
        self.catalog = Catalog.load(bundle)
        scorer = OnnxScorer.load(bundle, device="cpu")
        retriever = ExactRetriever(self.catalog.embeddings)
        # As the worker ranks (streams/worker.py build_runtime); without the session-dependent stages (artist
        # separation, session intent) for the recommender that must not see the session, and without one of
        # them for the in-process ablations.
        artists = artist_codes(self.catalog.artist_of)
        intent = SessionIntent(self.catalog.embeddings, self.catalog.genre_of)
        emb = self.catalog.embeddings
        self.rescorer = Rescorer(emb, retriever, scorer, n_candidates, n_recs, artists=artists, intent=intent)
        self.no_intent = Rescorer(emb, retriever, scorer, n_candidates, n_recs, artists=artists)
        self.no_separation = Rescorer(emb, retriever, scorer, n_candidates, n_recs, intent=intent)
        self.context_free = Rescorer(emb, retriever, scorer, n_candidates, n_recs)
        self.dyn = Dynamics()

    def replay(self, state: SessionState, events: Sequence[dict[str, Any]]) -> SessionState:
        """Apply events with the worker's rule (``streams.session.apply_event``)."""
        from streams.records import decode_event

        for e in events:
            ev = decode_event(json.dumps(e))
            i = self.catalog.index[ev.track_id]
            state = apply_event(state, ev, i, self.catalog.embeddings[i], self.dyn)
        return state


class StaticRecommender:
    """segue's retrieval and model with no session context: session vectors and counters zeroed, the
    long-term taste as it stood when the session began, the session's tracks excluded."""

    name = "static"

    def __init__(self, model: InProcessModel, users: Sequence[str], space: TrackSpace) -> None:
        self.model, self.users, self.space = model, list(users), space
        self.taste: list[SessionState] = []

    async def begin(self, histories: Sequence[Sequence[HistoryEvent]]) -> None:
        empty = SessionState.empty(self.model.catalog.dim)
        for user, h in zip(self.users, histories, strict=True):
            full = self.model.replay(empty, [_event_of(e, user, self.space) for e in h])
            self.taste.append(replace(empty, taste=full.taste))

    async def lists(self, seats: Sequence[Seat]) -> list[np.ndarray]:
        states = [replace(t, recent=tuple(s.heard)) for t, s in zip(self.taste, seats, strict=True)]
        return [r.indices for r in self.model.context_free.rank(states, [s.ts_ms for s in seats])]

    async def observe(self, seats: Sequence[Seat], events: Sequence[dict[str, Any]]) -> None:
        return None


class RandomRecommender:
    """Uniformly random tracks the listener has not heard this session."""

    name = "random"

    def __init__(self, n_tracks: int, seed: int, n: int = 20) -> None:
        self.n_tracks, self.n = n_tracks, n
        self.rng = np.random.default_rng([seed, 11])

    async def begin(self, histories: Sequence[Sequence[HistoryEvent]]) -> None:
        return None

    async def lists(self, seats: Sequence[Seat]) -> list[np.ndarray]:
        out = []
        for s in seats:
            heard = set(s.heard)
            pool = self.rng.choice(self.n_tracks, size=self.n + len(heard), replace=False)
            out.append(np.array([t for t in pool if int(t) not in heard][: self.n], dtype=np.int64))
        return out

    async def observe(self, seats: Sequence[Seat], events: Sequence[dict[str, Any]]) -> None:
        return None


class OracleRecommender:
    """A reference, not a recommender anyone could build: it reads the listener's hidden taste and current mood
    and ranks every unheard track by the listener's utility (``sim_listener.utility``). Its skip rate by position
    is the floor the simulated listeners allow: where it rises, the listeners' drift raises it for everyone."""

    name = "oracle"

    def __init__(self, space: TrackSpace, p: SimParams, n: int = 40) -> None:
        self.space, self.p, self.n = space, p, n
        self._all = np.arange(space.n_tracks)

    async def begin(self, histories: Sequence[Sequence[HistoryEvent]]) -> None:
        return None

    async def lists(self, seats: Sequence[Seat]) -> list[np.ndarray]:
        out = []
        for s in seats:
            u = utility(self.space, s.listener, s.mood, self._all, self.p)
            u[np.asarray(s.heard, dtype=np.int64)] = -np.inf
            out.append(np.argsort(-u, kind="stable")[: self.n])
        return out

    async def observe(self, seats: Sequence[Seat], events: Sequence[dict[str, Any]]) -> None:
        return None


class InProcessSegue:
    """segue's worker rule and ranking without Kafka and Redis (``apply_event`` + ``Rescorer.rank``): a
    reference for the live run, which must not do worse than this."""

    name = "segue-inprocess"

    def __init__(
        self,
        model: InProcessModel,
        users: Sequence[str],
        space: TrackSpace,
        prefs: Preferences | None = None,
        without: str | None = None,
    ) -> None:
        self.model, self.users, self.space, self.prefs = model, list(users), space, prefs
        # Ablations: without artist separation ("separation") or without the session intent ("intent"): what
        # each stage adds to the session vectors and the model.
        self.rescorer = {None: model.rescorer, "separation": model.no_separation, "intent": model.no_intent}[without]
        if without is not None:
            self.name = f"segue-no-{without}"
        self.states: list[SessionState] = []

    async def begin(self, histories: Sequence[Sequence[HistoryEvent]]) -> None:
        empty = SessionState.empty(self.model.catalog.dim)
        self.states = [
            self.model.replay(empty, [_event_of(e, u, self.space) for e in h])
            for u, h in zip(self.users, histories, strict=True)
        ]

    async def lists(self, seats: Sequence[Seat]) -> list[np.ndarray]:
        # As the API serves a list: one made for a session that has ended is re-ranked from the session-start
        # view at the listener's time (serving/api.py); otherwise the worker's list, ranked at the last event.
        states, now = [], []
        for state, seat in zip(self.states, seats, strict=True):
            ended = session_ended(state.last_ts_ms, seat.ts_ms, self.model.dyn)
            states.append(session_start_view(state) if ended else state)
            now.append(seat.ts_ms if ended else state.last_ts_ms)
        if self.prefs is None:
            return [r.indices for r in self.rescorer.rank(states, now)]
        ranked = self.rescorer.rank(states, now, prefs=[self.prefs] * len(states), users=self.users)
        return [r.indices for r in ranked]

    async def observe(self, seats: Sequence[Seat], events: Sequence[dict[str, Any]]) -> None:
        self.states = [self.model.replay(s, [e]) for s, e in zip(self.states, events, strict=True)]


class LiveSegue:
    """segue itself: events go to the broker with the SDK; lists are read through the API (``api``, as apps read
    them) or, without one, from Redis where the worker put them."""

    name = "segue"

    def __init__(
        self,
        kafka: KafkaSettings,
        redis: RedisSettings,
        events_topic: str,
        catalog: Catalog,
        users: Sequence[str],
        space: TrackSpace,
        prefs: Preferences | None = None,
        timeout_s: float = 60.0,
        api: str | None = None,
    ) -> None:
        self.prefs, self.api = prefs, api
        self.kafka, self.redis_settings, self.topic = kafka, redis, events_topic
        self.catalog, self.users, self.space = catalog, list(users), space
        self.timeout_s = timeout_s
        self.waits_ms: list[float] = []
        self.fallbacks = 0
        self.served = 0
        self._producer: EventProducer | None = None
        self._store: RedisStore | None = None
        self._http: Any = None

    async def __aenter__(self) -> LiveSegue:
        self._producer = EventProducer.connect(self.kafka, topic=self.topic, linger_ms=1)
        self._store = RedisStore.connect(self.redis_settings)
        if self.api is not None:
            import httpx

            limits = httpx.Limits(max_connections=READ_CONCURRENCY)
            self._http = httpx.AsyncClient(base_url=self.api, timeout=self.timeout_s, limits=limits)
        if self.prefs is not None:  # the per-user knob, which the worker applies from the next event on
            store = RedisPreferencesStore.connect(self.redis_settings)
            try:
                for user in self.users:
                    await store.put(user, self.prefs)
            finally:
                await store.close()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            self._producer.close()
        if self._store is not None:
            await self._store.close()
        if self._http is not None:
            await self._http.aclose()

    async def _records(self, rows: Sequence[int]) -> list[Any]:
        """The stored recommendations of the listeners in ``rows``, read through the store (concurrently)."""
        store = self._store
        assert store is not None
        rows = list(rows)
        out: list[Any] = []
        for k in range(0, len(rows), READ_CONCURRENCY):  # a few connections, not one per listener
            chunk = rows[k : k + READ_CONCURRENCY]
            out.extend(await asyncio.gather(*(store.get_recommendations(self.users[i]) for i in chunk)))
        return out

    async def _send_and_wait(self, events: Sequence[tuple[int, dict[str, Any]]]) -> None:
        """Send (row, event) pairs, then wait until each row's recommendations answer its last event."""
        assert self._producer is not None
        last: dict[int, str] = {}
        for row, e in events:
            self._producer.send(e)
            last[row] = e["event_id"]
        self._producer.flush()
        sent = time.perf_counter()
        pending = sorted(last)
        deadline = sent + self.timeout_s
        while pending:
            recs = await self._records(pending)
            now = time.perf_counter()
            if len(recs) and any(
                r is not None and r.event_id == last[row] for row, r in zip(pending, recs, strict=True)
            ):
                deadline = now + self.timeout_s  # the worker is making progress: wait on
            still = []
            for row, r in zip(pending, recs, strict=True):
                if r is not None and r.event_id == last[row]:
                    self.waits_ms.append((now - sent) * 1000)
                else:
                    still.append(row)
            pending = still
            if pending and now > deadline:
                raise StackError(
                    f"{len(pending)} listeners' recommendations did not answer their events, and none did for "
                    f"{self.timeout_s:.0f} s: is the worker running and consuming {self.topic}? (its log says why)"
                )
            if pending:
                await asyncio.sleep(0.005)

    async def begin(self, histories: Sequence[Sequence[HistoryEvent]]) -> None:
        events = [(row, _event_of(h, self.users[row], self.space)) for row, hs in enumerate(histories) for h in hs]
        await self._send_and_wait(events)
        self.waits_ms.clear()

    async def _served(self, rows: Sequence[int]) -> list[tuple[bool, list[str]]]:
        """(fallback, track ids) of the lists the API serves the listeners in ``rows`` (concurrently)."""
        out: list[tuple[bool, list[str]]] = []

        async def read(row: int) -> tuple[bool, list[str]]:
            response = await self._http.get(f"/v1/users/{self.users[row]}/recommendations", params={"limit": 500})
            if response.status_code != 200:
                raise StackError(f"the API answered {response.status_code} for {self.users[row]}: {response.text}")
            body = response.json()
            return bool(body["fallback"]), [item["track_id"] for item in body["items"]]

        rows = list(rows)
        for k in range(0, len(rows), READ_CONCURRENCY):
            out.extend(await asyncio.gather(*(read(i) for i in rows[k : k + READ_CONCURRENCY])))
        return out

    async def lists(self, seats: Sequence[Seat]) -> list[np.ndarray]:
        if self._http is not None:
            served = await self._served(range(len(self.users)))
        else:
            served = []
            for r in await self._records(range(len(self.users))):
                if r is None:
                    raise StackError("a listener has no recommendations in Redis although its events were answered")
                served.append((r.fallback, [i.track_id for i in r.items]))
        out = []
        for fallback, tracks in served:
            self.served += 1
            self.fallbacks += int(fallback)
            out.append(np.array([self.catalog.index[t] for t in tracks], dtype=np.int64))
        return out

    async def observe(self, seats: Sequence[Seat], events: Sequence[dict[str, Any]]) -> None:
        await self._send_and_wait(list(enumerate(events)))


# --- the loop -----------------------------------------------------------------------------------------


@dataclass
class ArmResult:
    """One recommender's run: per listener the outcome kinds by position and the lists it was shown."""

    name: str
    prefs: Preferences | None
    kinds: list[list[str]]  # per listener, per position
    tracks: list[list[int]]  # per listener, per position: the track played
    served: list[list[np.ndarray]]  # per listener, per position: the ranking read before choosing
    shown: list[list[np.ndarray]]  # per listener, per position: the top-k list shown
    foci: list[list[int]]  # per listener, per position: the listener's focus genre when it heard the track
    exhausted: int  # positions where no listed track was unheard (a random unheard track was played)
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)


async def run_arm(
    rec: Recommender,
    space: TrackSpace,
    listeners: Sequence[TasteListener],
    histories: Sequence[Sequence[HistoryEvent]],
    users: Sequence[str],
    *,
    seed: int,
    positions: int,
    start_ms: int,
    p: SimParams,
    list_k: int = 10,
    choice: str = "top",
    progress: bool = True,
) -> ArmResult:
    """Run one session per listener against ``rec``; the same seeds give the same moods for every ``rec``."""
    started = time.perf_counter()
    await rec.begin(histories)
    tag = uuid.uuid4().hex[:6]
    chairs = seats(space, listeners, seed, start_ms, p, tag)
    exhausted = 0
    prefs = getattr(rec, "prefs", None)
    desc = rec.name if prefs is None else f"{rec.name} [{label(prefs)}]"
    for _ in tqdm(range(positions), desc=desc, unit="pos", file=sys.stderr, disable=not progress):
        ranked = await rec.lists(chairs)
        events = []
        for s, user, ranking in zip(chairs, users, ranked, strict=True):
            heard = set(s.heard)
            shown = np.asarray([t for t in ranking if int(t) not in heard][:list_k], dtype=np.int64)
            s.shown.append(shown)
            s.served.append(np.asarray(ranking, dtype=np.int64))
            if len(shown):
                track = choose(shown, choice, s.choice_rng)
            else:
                exhausted += 1
                track = int(s.choice_rng.choice(np.setdiff1d(np.arange(space.n_tracks), list(heard))))
            s.foci.append(s.mood.focus)
            r = react(space, s.listener, s.mood, track, s.react_rng, p)
            s.heard.append(track)
            s.kinds.append(r.kind)
            events.append(
                to_event(r, user, space.track_ids[track], s.ts_ms, s.session_id, uuid.uuid4().hex, "recommendation")
            )
            s.ts_ms += r.played_ms + TRACK_GAP_MS
            s.mood.drift(space, s.listener, s.mood_rng, p)
        await rec.observe(chairs, events)
    return ArmResult(
        name=rec.name,
        prefs=prefs,
        kinds=[s.kinds for s in chairs],
        tracks=[s.heard for s in chairs],
        served=[s.served for s in chairs],
        shown=[s.shown for s in chairs],
        foci=[s.foci for s in chairs],
        exhausted=exhausted,
        wall_s=time.perf_counter() - started,
    )


# --- orchestration ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopConfig:
    """What one closed-loop evaluation runs."""

    model_dir: Path
    out: Path
    listeners: int = 200
    positions: int = 20
    seed: int = 1
    history_sessions: int = 3
    history_length: int = 15
    late_from: int = 10
    list_k: int = 10
    boot: int = 2000
    settings: tuple[Preferences, ...] = ()
    curve_on: str = "inprocess"  # or "live"
    bootstrap: str | None = None  # external broker; None starts the embedded stack and a worker
    redis_url: str | None = None
    api_url: str | None = None  # with an external broker: the API the lists are read through (None: Redis)
    key_prefix: str = "segue"
    events_topic: str = "segue.events"
    rescore_timeout_ms: float = 2000.0
    progress: bool = True


class _Live:
    """Where the live recommender's events go: the embedded stack with a worker, or external servers."""

    def __init__(self, cfg: LoopConfig) -> None:
        self.cfg = cfg
        self.stack: Any = None
        self.worker: Any = None
        self.api: Any = None
        self.api_url: str | None = cfg.api_url
        self.worker_metrics = ""

    def __enter__(self) -> _Live:
        if self.cfg.bootstrap is not None:
            self.kafka = KafkaSettings(bootstrap_servers=self.cfg.bootstrap)
            self.redis = RedisSettings(url=self.cfg.redis_url or RedisSettings().url, key_prefix=self.cfg.key_prefix)
            return self
        from infra.services import ApiService, WorkerService
        from infra.stack import EmbeddedStack
        from serving.settings import ApiSettings
        from streams.settings import ScoringSettings, WorkerSettings
        from streams.topics import ensure_topics

        run_dir = self.cfg.out / "run"
        self.stack = EmbeddedStack(run_dir).start()
        try:
            self.kafka, self.redis = self.stack.kafka, self.stack.redis
            settings = WorkerSettings(
                kafka=self.kafka,
                redis=self.redis,
                scoring=ScoringSettings(
                    model_dir=self.cfg.model_dir.resolve(), rescore_timeout_ms=self.cfg.rescore_timeout_ms
                ),
                data_dir=run_dir / "worker",
            )
            ensure_topics(self.kafka, settings.topics)
            self.worker = WorkerService("worker", run_dir, settings)
            self.worker.start()
            self.api = ApiService(
                "api", run_dir, ApiSettings(kafka=self.kafka, redis=self.redis, scoring=settings.scoring)
            )
            self.api.start()
            self.worker.wait_ready(timeout_s=90)
            self.api.wait_ready(timeout_s=90)
            self.api_url = self.api.url
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.api is not None:
            self.api.stop()
        if self.worker is not None:
            self.worker_metrics = self.worker.metrics()
            self.worker.stop()
        if self.stack is not None:
            self.stack.stop(keep_run_dir=True)


async def evaluate(cfg: LoopConfig) -> dict[str, Any]:
    """Run every recommender on the same listeners and return the report's data (``loop_report`` writes it)."""
    p = SimParams()
    space = TrackSpace.from_bundle(cfg.model_dir, cfg.seed)
    model = InProcessModel(cfg.model_dir)
    listeners = [TasteListener.create(space, cfg.seed, i) for i in range(cfg.listeners)]
    start_ms = time.time_ns() // 1_000_000
    histories = [
        history(space, lst, cfg.seed, cfg.history_sessions, cfg.history_length, start_ms, p) for lst in listeners
    ]
    run_id = uuid.uuid4().hex[:6]

    def users(arm: str) -> list[str]:
        return [f"cl{run_id}-{arm}-{i:04d}" for i in range(cfg.listeners)]

    common = dict(seed=cfg.seed, positions=cfg.positions, start_ms=start_ms, p=p, list_k=cfg.list_k)
    arms: dict[str, ArmResult] = {}
    curve: list[ArmResult] = []
    live_info: dict[str, Any] = {}
    with _Live(cfg) as live:
        seg = LiveSegue(
            live.kafka, live.redis, cfg.events_topic, model.catalog, users("segue"), space, api=live.api_url
        )
        async with seg:
            arms["segue"] = await run_arm(seg, space, listeners, histories, seg.users, **common, progress=cfg.progress)
        waits = np.asarray(seg.waits_ms) if seg.waits_ms else np.zeros(1)
        live_info = {
            "event_to_visible_ms": {
                q: float(np.percentile(waits, v)) for q, v in (("p50", 50), ("p95", 95), ("p99", 99))
            },
            "fallback_share": seg.fallbacks / max(seg.served, 1),
            "lists_read": seg.served,
        }
        for k, prefs in enumerate(cfg.settings):
            name = f"knob{k}"
            if cfg.curve_on == "live":
                rec: Any = LiveSegue(
                    live.kafka,
                    live.redis,
                    cfg.events_topic,
                    model.catalog,
                    users(name),
                    space,
                    prefs=prefs,
                    api=live.api_url,
                )
                async with rec:
                    r = await run_arm(
                        rec, space, listeners, histories, rec.users, **common, choice="browse", progress=cfg.progress
                    )
            else:
                rec = InProcessSegue(model, users(name), space, prefs=prefs)
                r = await run_arm(
                    rec, space, listeners, histories, rec.users, **common, choice="browse", progress=cfg.progress
                )
            curve.append(r)
    for rec in (
        InProcessSegue(model, users("inproc"), space),
        InProcessSegue(model, users("nointent"), space, without="intent"),
        InProcessSegue(model, users("nosep"), space, without="separation"),
        StaticRecommender(model, users("static"), space),
        RandomRecommender(space.n_tracks, cfg.seed),
        OracleRecommender(space, p),
    ):
        arms[rec.name] = await run_arm(
            rec, space, listeners, histories, users(rec.name), **common, progress=cfg.progress
        )
    kinds = [h.reaction.kind for hs in histories for h in hs]
    live_info["history"] = {k: kinds.count(k) / max(len(kinds), 1) for k in ("skip", "like", "play")}
    live_info["known_genres"] = [known_genres(space, h) for h in histories]
    live_info["genre"] = space.genre
    live_info["focus_preference"] = focus_preference(arms["segue"].foci, listeners)
    return summarise(cfg, p, model.catalog, arms, curve, live_info)


def focus_preference(foci: Sequence[Sequence[int]], listeners: Sequence[TasteListener]) -> list[float]:
    """By position: the mean hidden preference (``TasteListener.genre_pref``, 1 for the favourite genre) of the
    genre the listeners' moods are in: how far the drift has taken them from their favourite genre."""
    pref = np.asarray([lst.genre_pref[np.asarray(f, dtype=np.int64)] for f, lst in zip(foci, listeners, strict=True)])
    return pref.mean(axis=0).tolist()


def summarise(
    cfg: LoopConfig,
    p: SimParams,
    catalog: Catalog,
    arms: dict[str, ArmResult],
    curve: Sequence[ArmResult],
    live_info: dict[str, Any],
) -> dict[str, Any]:
    """The report's data: per-arm rates with CIs, the headline, the trade-off curve (plain JSON values)."""
    boot = lm.bootstrap_indices(cfg.listeners, cfg.boot, cfg.seed)
    late = min(cfg.late_from, cfg.positions - 1)
    out_arms = {}
    for name, r in arms.items():
        out_arms[name] = {
            **lm.summarise_arm(r.kinds, boot, late),
            **lm.list_quality(r.shown, catalog.embeddings, catalog.popularity, len(catalog)),
            "exhausted": r.exhausted,
            "wall_s": r.wall_s,
            "reaction": lm.reaction(r.kinds, r.tracks, r.served, cfg.list_k),
            "mood": lm.mood_breakdown(r.kinds, r.tracks, r.foci, live_info["genre"], live_info["known_genres"], late),
        }
    head = lm.headline({n: r.kinds for n, r in arms.items()}, boot, late)
    vs = head.get("segue_vs_static", {})
    trend = head.get("segue_trend", {})
    head["target"] = {
        "relative_reduction_at_least": 0.30,
        "met": bool(vs and vs["lo"] >= 0.30),
        "skip_falls_over_session": bool(trend and trend["lo"] > 0),
    }
    points = []
    for r in curve:
        s = lm.summarise_arm(r.kinds, boot, late)
        q = lm.list_quality(r.shown, catalog.embeddings, catalog.popularity, len(catalog))
        points.append(
            {
                "exploration": r.prefs.exploration if r.prefs else 0.0,
                "diversity": r.prefs.diversity if r.prefs else 0.0,
                "skip": s["skip_overall"],
                "like": s["like_overall"],
                **q,
            }
        )
    return {
        "format": "segue-closed-loop",
        "version": 1,
        "config": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items() if k not in ("settings", "progress")
        }
        | {"settings": [[s.exploration, s.diversity] for s in cfg.settings], "late_from": late},
        "model_version": catalog.model_version,
        "simulator": asdict(p),
        "arms": out_arms,
        "headline": head,
        "live": {
            k: v for k, v in live_info.items() if k not in ("history", "known_genres", "genre", "focus_preference")
        },
        "focus_preference": live_info.get("focus_preference", []),
        "history": live_info.get("history", {}),
        "curve": points,
        "curve_on": cfg.curve_on,
    }


def main(argv: Sequence[str] | None = None) -> int:
    from loadtests.loop_report import write_report
    from streams.settings import DEFAULT_MODEL_DIR

    parser = argparse.ArgumentParser(prog="python -m loadtests.closed_loop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR), help="model bundle (make model builds it)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="report directory")
    parser.add_argument("--listeners", type=int, default=200)
    parser.add_argument("--positions", type=int, default=20, help="tracks per listener in the evaluated session")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--history-sessions", type=int, default=3, help="earlier sessions per listener")
    parser.add_argument("--history-length", type=int, default=15, help="tracks per earlier session")
    parser.add_argument("--late-from", type=int, default=10, help="first position of the headline window")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples of listeners")
    parser.add_argument(
        "--settings",
        default="0:0,0:0.5,0.2:0,0.2:0.5,0.5:0.5,0:0.9",
        help="exploration:diversity knob settings for the trade-off curve ('' for none)",
    )
    parser.add_argument(
        "--curve-on",
        choices=("inprocess", "live"),
        default="inprocess",
        help="run the knob settings on the in-process ranking or through the live worker",
    )
    parser.add_argument("--bootstrap", default=None, help="an external broker (a worker must consume it)")
    parser.add_argument("--redis-url", default=None, help="the external worker's Redis")
    parser.add_argument(
        "--api", default=None, help="with --bootstrap: the API to read lists through (default: read Redis directly)"
    )
    parser.add_argument("--key-prefix", default="segue", help="the external worker's Redis key prefix")
    parser.add_argument("--events-topic", default="segue.events")
    parser.add_argument(
        "--rescore-timeout-ms",
        type=float,
        default=2000.0,
        help="the embedded worker's model slot (this run measures ranking, not latency)",
    )
    parser.add_argument("--smoke", action="store_true", help="a small quick run (12 listeners, 6 positions)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        settings = tuple(parse_settings(args.settings))
    except ValueError as exc:
        parser.error(str(exc))
    cfg = LoopConfig(
        model_dir=Path(args.model_dir),
        out=Path(args.out),
        listeners=args.listeners,
        positions=args.positions,
        seed=args.seed,
        history_sessions=args.history_sessions,
        history_length=args.history_length,
        late_from=args.late_from,
        boot=args.boot,
        settings=settings,
        curve_on=args.curve_on,
        bootstrap=args.bootstrap,
        redis_url=args.redis_url,
        api_url=args.api,
        key_prefix=args.key_prefix,
        events_topic=args.events_topic,
        rescore_timeout_ms=args.rescore_timeout_ms,
        progress=not args.no_progress,
    )
    if args.smoke:
        cfg = replace(
            cfg,
            listeners=12,
            positions=6,
            history_sessions=2,
            history_length=8,
            late_from=3,
            boot=200,
            settings=settings[:2],
        )
    cfg.out.mkdir(parents=True, exist_ok=True)
    try:
        results = asyncio.run(evaluate(cfg))
    except SegueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_report(cfg.out, results)
    vs = results["headline"].get("segue_vs_static", {})
    print(
        f"skip rate from position {results['config']['late_from']}: segue {vs.get('ours', float('nan')):.3f}, "
        f"static {vs.get('theirs', float('nan')):.3f}, reduction {vs.get('reduction', float('nan')):.1%} "
        f"(95% CI {vs.get('lo', float('nan')):.1%} .. {vs.get('hi', float('nan')):.1%}); report in {cfg.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
