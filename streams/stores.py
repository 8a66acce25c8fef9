"""Where per-user state and recommendations live: a Protocol, an in-memory store and a Redis store.

Both implementations pass the same test suite (tests/unit/test_stores.py runs it on memory,
tests/integration/test_redis_store.py on a real Redis). Redis layout, format v1 (docs/state.md):

* ``{prefix}:{<user_id>}:state`` -> hash: ``v`` the state's version, ``s`` the state, MessagePack
  (``streams.state_codec``). Writes are compare-and-set on ``v`` (a Lua script), so two workers that both
  hold a user during a rebalance cannot overwrite each other's newer state.
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

    async def put_states(
        self, states: Mapping[str, SessionState], expected: Mapping[str, int | None] | None = None
    ) -> set[str]:
        """Write the states of several users; return the users whose write was refused.

        With ``expected``, a user's write happens only if the stored version is ``expected[user]`` (``None``:
        no state stored yet); otherwise that user is returned and nothing of theirs is written.
        """
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
        self._states: dict[str, tuple[int, bytes]] = {}
        self._recs: dict[str, bytes] = {}

    async def get_states(self, user_ids: Sequence[str]) -> list[SessionState | None]:
        return [decode_state(self._states[u][1]) if u in self._states else None for u in user_ids]

    async def put_states(
        self, states: Mapping[str, SessionState], expected: Mapping[str, int | None] | None = None
    ) -> set[str]:
        refused = set()
        for user, state in states.items():
            if expected is not None:
                current = self._states.get(user)
                if (current[0] if current else None) != expected.get(user):
                    refused.add(user)
                    continue
            self._states[user] = (state.version, encode_state(state))
        return refused

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


# Compare-and-set of one user's state. KEYS[1]: state key. ARGV: expected version ("" = absent), new version,
# state bytes, TTL in seconds. Returns 1 if written, 0 if the stored version differs.
_CAS_STATE = """
local current = redis.call('HGET', KEYS[1], 'v')
if (current == false and ARGV[1] == '') or current == ARGV[1] then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
"""


class RedisStore:
    """A ``Store`` on Redis (or Redis Cluster through a cluster-aware client passed in)."""

    def __init__(self, client: aioredis.Redis, settings: RedisSettings, metrics: Metrics | None = None) -> None:
        self._r = client
        self._prefix = settings.key_prefix
        self._state_ttl = settings.state_ttl_s
        self._recs_ttl = settings.recommendations_ttl_s
        self._metrics = metrics
        self._cas = client.register_script(_CAS_STATE)

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
            pipe.hget(self.state_key(u), "s")
        raw = await self._run("get_states", pipe)
        return [decode_state(v) if v is not None else None for v in raw]  # type: ignore[arg-type]

    async def put_states(
        self, states: Mapping[str, SessionState], expected: Mapping[str, int | None] | None = None
    ) -> set[str]:
        if not states:
            return set()
        users = list(states)
        pipe = self._r.pipeline(transaction=False)
        for u in users:
            s = states[u]
            if expected is None:
                pipe.hset(self.state_key(u), mapping={"v": s.version, "s": encode_state(s)})
                pipe.expire(self.state_key(u), self._state_ttl)
            else:
                want = expected.get(u)
                args = ["" if want is None else want, s.version, encode_state(s), self._state_ttl]
                await self._cas(keys=[self.state_key(u)], args=args, client=pipe)
        results = await self._run("put_states", pipe)
        if expected is None:
            return set()
        return {u for u, ok in zip(users, results, strict=True) if not ok}

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
