"""Where per-user state and recommendations live: a Protocol, an in-memory store and a Redis store.

Both implementations pass the same test suite (tests/unit/test_stores.py runs it on memory,
tests/integration/test_redis_store.py on a real Redis). Redis layout 2 (docs/state.md): one string per user,

* ``{prefix}:{<user_id>}:user`` -> ``version`` (8 bytes, big-endian) | ``n`` (4 bytes, big-endian) |
  the state (``n`` bytes, ``streams.state_codec``) | the latest recommendations (``streams.recs_codec``, may
  be empty).

One key rather than a hash and a second key: a Redis hash with values over 64 bytes is a hash table, and
every key costs ~100 bytes of its own; the single string holds a user in under 1 KiB. State writes are
compare-and-set on the version (a Lua script that keeps the recommendations part), so two workers that both
hold a user during a rebalance cannot overwrite each other's newer state; recommendations are written
by a second script that keeps the state part (and only where a state exists). A list ranked on demand (by the
API) is *offered* with the state version it was ranked from, through a third script that stores it only where the
state is still at that version and, unless it replaces, no list is stored: it fills a gap and never overwrites the
worker's fresher list. The user id sits in a hash
tag, so on Redis Cluster the user's key lands in the user's slot like the other per-user keys.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.errors import StoreUnavailable
from streams.metrics import Metrics
from streams.records import Recommendations
from streams.recs_codec import RecsCodec, model_version_of
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

    async def get_user(self, user_id: str) -> tuple[SessionState | None, Recommendations | None]:
        """A user's state and latest recommendations in one read (either may be ``None``)."""
        ...

    async def put_recommendations(self, recs: Sequence[Recommendations], ranked: Sequence[Any] | None = None) -> None:
        """Replace the latest recommendations of each user in ``recs`` (users without a state are skipped).

        ``ranked[i]``: the ``serving.rescore.Ranking`` that ``recs[i]`` was made from, if at hand (cheaper to
        encode than the record)."""
        ...

    async def offer_recommendations(
        self, recs: Sequence[Recommendations], versions: Sequence[int], replace: bool = False
    ) -> set[str]:
        """Store ``recs[i]`` only where the user's state is still at ``versions[i]`` (the state it was ranked from)
        and, unless ``replace``, no list is stored yet; return the users whose list was not stored.

        For lists ranked outside the worker (on demand, after a steer): a worker that applied a newer event, or
        wrote its own list for this state, is never overwritten."""
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


CATALOG_REFRESH_S = 3600.0


def pack_user(version: int, state: bytes, recs: bytes = b"") -> bytes:
    """One user's stored value (layout 2): version, state length, state, recommendations."""
    return version.to_bytes(8, "big") + len(state).to_bytes(4, "big") + state + recs


def unpack_user(raw: bytes) -> tuple[int, bytes, bytes]:
    """(version, state bytes, recommendations bytes) of a stored value."""
    n = int.from_bytes(raw[8:12], "big")
    return int.from_bytes(raw[:8], "big"), raw[12 : 12 + n], raw[12 + n :]


class MemoryStore:
    """A dict-backed ``Store`` for unit tests and offline evaluation; values laid out exactly as in Redis."""

    def __init__(self, codec: RecsCodec | None = None) -> None:
        self._users: dict[str, bytes] = {}
        self._codec = codec or RecsCodec()

    async def get_states(self, user_ids: Sequence[str]) -> list[SessionState | None]:
        return [decode_state(unpack_user(self._users[u])[1]) if u in self._users else None for u in user_ids]

    async def put_states(
        self, states: Mapping[str, SessionState], expected: Mapping[str, int | None] | None = None
    ) -> set[str]:
        refused = set()
        for user, state in states.items():
            current = self._users.get(user)
            if expected is not None and (unpack_user(current)[0] if current else None) != expected.get(user):
                refused.add(user)
                continue
            recs = unpack_user(current)[2] if current else b""
            self._users[user] = pack_user(state.version, encode_state(state), recs)
        return refused

    async def get_recommendations(self, user_id: str) -> Recommendations | None:
        raw = self._users.get(user_id)
        recs = unpack_user(raw)[2] if raw is not None else b""
        return self._codec.decode(user_id, recs) if recs else None

    async def get_user(self, user_id: str) -> tuple[SessionState | None, Recommendations | None]:
        raw = self._users.get(user_id)
        if raw is None:
            return None, None
        _, state, recs = unpack_user(raw)
        return decode_state(state), self._codec.decode(user_id, recs) if recs else None

    async def put_recommendations(self, recs: Sequence[Recommendations], ranked: Sequence[Any] | None = None) -> None:
        for k, r in enumerate(recs):
            current = self._users.get(r.user_id)
            if current is not None:
                version, state, _ = unpack_user(current)
                blob = self._codec.encode_ranked(r, ranked[k]) if ranked is not None else self._codec.encode(r)
                self._users[r.user_id] = pack_user(version, state, blob)

    async def offer_recommendations(
        self, recs: Sequence[Recommendations], versions: Sequence[int], replace: bool = False
    ) -> set[str]:
        refused = set()
        for r, want in zip(recs, versions, strict=True):
            current = self._users.get(r.user_id)
            if current is None:
                refused.add(r.user_id)
                continue
            version, state, old = unpack_user(current)
            if version != want or (old and not replace):
                refused.add(r.user_id)
                continue
            self._users[r.user_id] = pack_user(version, state, self._codec.encode(r))
        return refused

    async def forget_user(self, user_id: str) -> bool:
        return self._users.pop(user_id, None) is not None

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


# Write one user's state, keeping the recommendations part. KEYS[1]: the user's key. ARGV: the new value's
# head (version + length + state), TTL in seconds, "1" to compare-and-set, the expected 8-byte version ("" =
# absent). Returns 1 if written, 0 if the stored version differs.
_PUT_STATE = """
local cur = redis.call('GET', KEYS[1])
local tail = ''
if cur then
  if ARGV[3] == '1' and string.sub(cur, 1, 8) ~= ARGV[4] then return 0 end
  local a, b, c, d = string.byte(cur, 9, 12)
  tail = string.sub(cur, 13 + ((a * 256 + b) * 256 + c) * 256 + d)
elseif ARGV[3] == '1' and ARGV[4] ~= '' then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1] .. tail, 'EX', ARGV[2])
return 1
"""

# Replace one user's recommendations, keeping the state part and the TTL. KEYS[1]: the user's key. ARGV[1]:
# the encoded recommendations. Returns 0 (nothing written) where no state is stored.
_PUT_RECS = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local a, b, c, d = string.byte(cur, 9, 12)
redis.call('SET', KEYS[1], string.sub(cur, 1, 12 + ((a * 256 + b) * 256 + c) * 256 + d) .. ARGV[1], 'KEEPTTL')
return 1
"""

# Store a list ranked from one state version (see ``Store.offer_recommendations``). KEYS[1]: the user's key.
# ARGV[1]: the encoded recommendations; ARGV[2]: the version (8 bytes, big-endian) it was ranked from; ARGV[3]:
# '1' to replace a stored list. Returns 1 if written, 0 if not (no state, another version, a list already there).
_OFFER_RECS = """
local cur = redis.call('GET', KEYS[1])
if not cur or string.sub(cur, 1, 8) ~= ARGV[2] then return 0 end
local a, b, c, d = string.byte(cur, 9, 12)
local head = 12 + ((a * 256 + b) * 256 + c) * 256 + d
if ARGV[3] ~= '1' and string.len(cur) > head then return 0 end
redis.call('SET', KEYS[1], string.sub(cur, 1, head) .. ARGV[1], 'KEEPTTL')
return 1
"""


class RedisStore:
    """A ``Store`` on Redis (or Redis Cluster through a cluster-aware client passed in)."""

    def __init__(
        self,
        client: aioredis.Redis,
        settings: RedisSettings,
        metrics: Metrics | None = None,
        codec: RecsCodec | None = None,
    ) -> None:
        self._r = client
        self._prefix = settings.key_prefix
        self._state_ttl = settings.state_ttl_s
        self._metrics = metrics
        self._codec = codec or RecsCodec()
        self._codecs: dict[str, RecsCodec] = {self._codec.model_version: self._codec} if codec else {}
        self._published = -CATALOG_REFRESH_S
        self._put_state = client.register_script(_PUT_STATE)
        self._put_recs = client.register_script(_PUT_RECS)
        self._offer_recs = client.register_script(_OFFER_RECS)

    @staticmethod
    def connect(settings: RedisSettings, metrics: Metrics | None = None, codec: RecsCodec | None = None) -> RedisStore:
        """Build a store from settings (``rediss://`` URLs use TLS)."""
        password = settings.password.get_secret_value() if settings.password else None
        client = aioredis.Redis.from_url(
            settings.url,
            password=password,
            socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.socket_timeout_s,
        )
        return RedisStore(client, settings, metrics, codec)

    def catalog_key(self, model_version: str) -> str:
        """The key of the track table that decodes recommendations of ``model_version``."""
        return f"{self._prefix}:catalog:{model_version}"

    def _publish_catalog(self, pipe: aioredis.client.Pipeline) -> None:
        """Queue the codec's table (readers without the model bundle decode lists with it); hourly, which keeps
        it alive as long as lists of this model are written."""
        now = time.monotonic()
        if self._codec.model_version and now - self._published >= CATALOG_REFRESH_S:
            pipe.set(self.catalog_key(self._codec.model_version), self._codec.catalog_payload(), ex=self._state_ttl)
            self._published = now

    async def _codec_for(self, raw: bytes) -> RecsCodec | None:
        version = model_version_of(raw)
        if version is None:
            return self._codec  # v1 JSON decodes without a table
        codec = self._codecs.get(version)
        if codec is None:
            pipe = self._r.pipeline(transaction=False)
            pipe.get(self.catalog_key(version))
            (table,) = await self._run("get_catalog", pipe)
            if table is None:
                return None
            codec = self._codecs[version] = RecsCodec.from_payload(version, table)  # type: ignore[arg-type]
        return codec

    def user_key(self, user_id: str) -> str:
        """The key of everything stored for ``user_id`` (layout 2)."""
        return f"{self._prefix}:{{{user_id}}}:user"

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
            pipe.get(self.user_key(u))
        raw = await self._run("get_states", pipe)
        return [decode_state(unpack_user(v)[1]) if v is not None else None for v in raw]  # type: ignore[arg-type]

    async def put_states(
        self, states: Mapping[str, SessionState], expected: Mapping[str, int | None] | None = None
    ) -> set[str]:
        if not states:
            return set()
        users = list(states)
        pipe = self._r.pipeline(transaction=False)
        for u in users:
            s = states[u]
            head = pack_user(s.version, encode_state(s))
            if expected is None:
                args = [head, self._state_ttl, "0", ""]
            else:
                want = expected.get(u)
                args = [head, self._state_ttl, "1", b"" if want is None else want.to_bytes(8, "big")]
            await self._put_state(keys=[self.user_key(u)], args=args, client=pipe)
        results = await self._run("put_states", pipe)
        return {u for u, ok in zip(users, results, strict=True) if not ok}

    async def _get_user_value(self, op: str, user_id: str) -> bytes | None:
        pipe = self._r.pipeline(transaction=False)
        pipe.get(self.user_key(user_id))
        (raw,) = await self._run(op, pipe)
        return raw  # type: ignore[return-value]

    async def get_recommendations(self, user_id: str) -> Recommendations | None:
        raw = await self._get_user_value("get_recommendations", user_id)
        return await self._decode_recs(user_id, unpack_user(raw)[2] if raw is not None else b"")

    async def get_user(self, user_id: str) -> tuple[SessionState | None, Recommendations | None]:
        raw = await self._get_user_value("get_user", user_id)
        if raw is None:
            return None, None
        _, state, recs = unpack_user(raw)
        return decode_state(state), await self._decode_recs(user_id, recs)

    async def _decode_recs(self, user_id: str, recs: bytes) -> Recommendations | None:
        if not recs:
            return None
        codec = await self._codec_for(recs)
        return codec.decode(user_id, recs) if codec is not None else None

    async def put_recommendations(self, recs: Sequence[Recommendations], ranked: Sequence[Any] | None = None) -> None:
        if not recs:
            return
        pipe = self._r.pipeline(transaction=False)
        self._publish_catalog(pipe)
        for k, r in enumerate(recs):
            blob = self._codec.encode_ranked(r, ranked[k]) if ranked is not None else self._codec.encode(r)
            await self._put_recs(keys=[self.user_key(r.user_id)], args=[blob], client=pipe)
        await self._run("put_recommendations", pipe)

    async def offer_recommendations(
        self, recs: Sequence[Recommendations], versions: Sequence[int], replace: bool = False
    ) -> set[str]:
        if not recs:
            return set()
        pipe = self._r.pipeline(transaction=False)
        self._publish_catalog(pipe)
        flag = "1" if replace else "0"
        for r, want in zip(recs, versions, strict=True):
            args = [self._codec.encode(r), want.to_bytes(8, "big"), flag]
            await self._offer_recs(keys=[self.user_key(r.user_id)], args=args, client=pipe)
        results = (await self._run("offer_recommendations", pipe))[-len(recs) :]
        return {r.user_id for r, ok in zip(recs, results, strict=True) if not ok}

    async def forget_user(self, user_id: str) -> bool:
        pipe = self._r.pipeline(transaction=False)
        pipe.delete(self.user_key(user_id))
        (n,) = await self._run("forget_user", pipe)
        return bool(n)

    async def ping(self) -> bool:
        try:
            return bool(await self._r.ping())
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return False

    async def close(self) -> None:
        await self._r.aclose()
