"""Where each listener's exploration and diversity knob lives: a Protocol, a memory store and a Redis store.

Both pass the shared suite in tests/prefs_store_suite.py. Redis layout, format v1:
``{prefix}:{<user_id>}:prefs`` -> JSON ``{"v": 1, "exploration": ..., "diversity": ...}``
(``serving.diversity.encode_preferences``), in the user's hash-tag slot beside the state. A user without
a record gets ``Preferences()`` (0, 0): rankings exactly as without the knob.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from serving.diversity import Preferences, decode_preferences, encode_preferences
from streams.errors import StoreUnavailable
from streams.settings import RedisSettings


@runtime_checkable
class PreferencesStore(Protocol):
    """Per-user ``Preferences``."""

    async def get_many(self, user_ids: Sequence[str]) -> list[Preferences | None]:
        """Preferences in the order of ``user_ids`` (one round trip); ``None`` where none were set."""
        ...

    async def put(self, user_id: str, prefs: Preferences) -> None:
        """Set a user's preferences."""
        ...

    async def delete(self, user_id: str) -> bool:
        """Remove a user's preferences; True if there were any."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class MemoryPreferencesStore:
    """A dict-backed ``PreferencesStore``; values encoded exactly as in Redis."""

    def __init__(self) -> None:
        self._prefs: dict[str, bytes] = {}

    async def get_many(self, user_ids: Sequence[str]) -> list[Preferences | None]:
        return [decode_preferences(self._prefs[u]) if u in self._prefs else None for u in user_ids]

    async def put(self, user_id: str, prefs: Preferences) -> None:
        self._prefs[user_id] = encode_preferences(prefs)

    async def delete(self, user_id: str) -> bool:
        return self._prefs.pop(user_id, None) is not None

    async def close(self) -> None:
        return None


class RedisPreferencesStore:
    """A ``PreferencesStore`` on Redis: one MGET per batch of users."""

    def __init__(self, client: aioredis.Redis, key_prefix: str) -> None:
        self._r = client
        self._prefix = key_prefix

    @staticmethod
    def connect(settings: RedisSettings) -> RedisPreferencesStore:
        """Build a store from the deployable's Redis settings."""
        password = settings.password.get_secret_value() if settings.password else None
        client = aioredis.Redis.from_url(
            settings.url,
            password=password,
            socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.socket_timeout_s,
        )
        return RedisPreferencesStore(client, settings.key_prefix)

    def key(self, user_id: str) -> str:
        return f"{self._prefix}:{{{user_id}}}:prefs"

    async def get_many(self, user_ids: Sequence[str]) -> list[Preferences | None]:
        if not user_ids:
            return []
        pipe = self._r.pipeline(transaction=False)
        for u in user_ids:  # GETs in one pipeline, not MGET: the keys sit in different cluster slots
            pipe.get(self.key(u))
        raw = await _execute(pipe, "read preferences")
        return [decode_preferences(v) if v is not None else None for v in raw]  # type: ignore[arg-type]

    async def put(self, user_id: str, prefs: Preferences) -> None:
        pipe = self._r.pipeline(transaction=False)
        pipe.set(self.key(user_id), encode_preferences(prefs))
        await _execute(pipe, "write preferences")

    async def delete(self, user_id: str) -> bool:
        pipe = self._r.pipeline(transaction=False)
        pipe.delete(self.key(user_id))
        (n,) = await _execute(pipe, "delete preferences")
        return bool(n)

    async def close(self) -> None:
        await self._r.aclose()


async def _execute(pipe: aioredis.client.Pipeline, what: str) -> list[object]:
    try:
        return await pipe.execute()
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StoreUnavailable(
            f"could not {what} in Redis: {exc}; check SEGUE_REDIS__URL and that Redis is up"
        ) from exc
