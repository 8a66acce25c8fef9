"""Where per-user state and recommendations live: a Protocol, an in-memory store and a Redis store.

Both implementations pass the same test suite (tests/unit/test_stores.py runs it on memory,
tests/integration/test_redis_store.py on a real Redis). Redis layout, format v1 (docs/state.md):

* ``{prefix}:{<user_id>}:state`` -> session state, MessagePack (``streams.state_codec``)
* ``{prefix}:{<user_id>}:recs``  -> latest recommendations, JSON (``streams.records.Recommendations``)

The user id sits in a hash tag, so on Redis Cluster a user's keys share a slot.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.errors import StoreUnavailable
from streams.metrics import Metrics
from streams.records import Recommendations, decode_recommendations, encode_record
from streams.session import SessionState
from streams.settings import RedisSettings
from streams.state_codec import decode_state, encode_state


@runtime_checkable
class Store(Protocol):
    """Per-user session state and latest recommendations."""

    async def get_states(self, user_ids: Sequence[str]) -> list[SessionState | None]:
        """States in the order of ``user_ids``; ``None`` for users never seen."""
        ...

    async def put_states(self, states: Mapping[str, SessionState]) -> None:
        """Write the states of several users (each write replaces the user's whole state)."""
        ...

    async def get_recommendations(self, user_id: str) -> Recommendations | None:
        """The latest recommendations for a user, or ``None``."""
        ...

    async def put_recommendations(self, recs: Sequence[Recommendations]) -> None:
        """Replace the latest recommendations of each user in ``recs``."""
        ...

    async def forget_user(self, user_id: str) -> bool:
        """Remove everything stored about a user; True if anything was there."""
        ...

    async def ping(self) -> bool:
        """True if the store answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryStore:
    """A dict-backed ``Store`` for unit tests and offline evaluation; values encoded exactly as in Redis."""

    def __init__(self) -> None:
        self._states: dict[str, bytes] = {}
        self._recs: dict[str, bytes] = {}

    async def get_states(self, user_ids: Sequence[str]) -> list[SessionState | None]:
        return [decode_state(self._states[u]) if u in self._states else None for u in user_ids]

    async def put_states(self, states: Mapping[str, SessionState]) -> None:
        for user, state in states.items():
            self._states[user] = encode_state(state)

    async def get_recommendations(self, user_id: str) -> Recommendations | None:
        raw = self._recs.get(user_id)
        return decode_recommendations(raw) if raw is not None else None

    async def put_recommendations(self, recs: Sequence[Recommendations]) -> None:
        for r in recs:
            self._recs[r.user_id] = encode_record(r)

    async def forget_user(self, user_id: str) -> bool:
        found = self._states.pop(user_id, None) is not None
        return (self._recs.pop(user_id, None) is not None) or found

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class RedisStore:
    """A ``Store`` on Redis (or Redis Cluster through a cluster-aware client passed in)."""

    def __init__(self, client: aioredis.Redis, settings: RedisSettings, metrics: Metrics | None = None) -> None:
        self._r = client
        self._prefix = settings.key_prefix
        self._state_ttl = settings.state_ttl_s
        self._recs_ttl = settings.recommendations_ttl_s
        self._metrics = metrics

    @staticmethod
    def connect(settings: RedisSettings, metrics: Metrics | None = None) -> RedisStore:
        """Build a store from settings (``rediss://`` URLs use TLS)."""
        password = settings.password.get_secret_value() if settings.password else None
        client = aioredis.Redis.from_url(
            settings.url,
            password=password,
            socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.socket_timeout_s,
        )
        return RedisStore(client, settings, metrics)

    def state_key(self, user_id: str) -> str:
        return f"{self._prefix}:{{{user_id}}}:state"

    def recs_key(self, user_id: str) -> str:
        return f"{self._prefix}:{{{user_id}}}:recs"

    async def _run(self, op: str, pipe: aioredis.client.Pipeline) -> list[object]:
        start = time.perf_counter()
        try:
            return await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            if self._metrics:
                self._metrics.redis_errors.labels(op).inc()
            raise StoreUnavailable(f"Redis {op} failed: {exc}") from exc
        finally:
            if self._metrics:
                self._metrics.redis_seconds.labels(op).observe(time.perf_counter() - start)

    async def get_states(self, user_ids: Sequence[str]) -> list[SessionState | None]:
        if not user_ids:
            return []
        pipe = self._r.pipeline(transaction=False)
        for u in user_ids:
            pipe.get(self.state_key(u))
        raw = await self._run("get_states", pipe)
        return [decode_state(v) if v is not None else None for v in raw]  # type: ignore[arg-type]

    async def put_states(self, states: Mapping[str, SessionState]) -> None:
        if not states:
            return
        pipe = self._r.pipeline(transaction=False)
        for u, s in states.items():
            pipe.set(self.state_key(u), encode_state(s), ex=self._state_ttl)
        await self._run("put_states", pipe)

    async def get_recommendations(self, user_id: str) -> Recommendations | None:
        pipe = self._r.pipeline(transaction=False)
        pipe.get(self.recs_key(user_id))
        (raw,) = await self._run("get_recommendations", pipe)
        return decode_recommendations(raw) if raw is not None else None  # type: ignore[arg-type]

    async def put_recommendations(self, recs: Sequence[Recommendations]) -> None:
        if not recs:
            return
        pipe = self._r.pipeline(transaction=False)
        for r in recs:
            pipe.set(self.recs_key(r.user_id), encode_record(r), ex=self._recs_ttl)
        await self._run("put_recommendations", pipe)

    async def forget_user(self, user_id: str) -> bool:
        pipe = self._r.pipeline(transaction=False)
        pipe.delete(self.state_key(user_id), self.recs_key(user_id))
        (n,) = await self._run("forget_user", pipe)
        return bool(n)

    async def ping(self) -> bool:
        try:
            return bool(await self._r.ping())
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return False

    async def close(self) -> None:
        await self._r.aclose()
