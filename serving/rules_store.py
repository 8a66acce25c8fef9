"""Where editorial rules and their audit log live: a Protocol, a memory store and a Redis store.

Both pass the shared suite in tests/rules_store_suite.py. Redis layout, format v1 (docs/rules.md):

* ``{prefix}:{rules}``        hash: rule id -> ``Rule`` JSON
* ``{prefix}:{rules}:audit``  list, newest first, capped at ``audit_max`` entries: ``AuditEntry`` JSON

Both keys share the ``{rules}`` hash tag (one Redis Cluster slot), so a change and its audit entry are
written in one MULTI/EXEC transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from serving.rules import ActiveRules, AuditEntry, Rule, compile_rules
from streams.errors import StoreUnavailable
from streams.settings import RedisSettings

log = logging.getLogger(__name__)

AUDIT_MAX = 10_000

_rule_decoder = msgspec.json.Decoder(Rule)
_audit_decoder = msgspec.json.Decoder(AuditEntry)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@runtime_checkable
class RulesStore(Protocol):
    """Editorial rules and the log of every change to them."""

    async def add(self, rule: Rule, actor: str) -> None:
        """Store (or replace, by ``rule_id``) a rule and audit the change."""
        ...

    async def remove(self, rule_id: str, actor: str, why: str = "") -> Rule | None:
        """Remove a rule and audit it; the removed rule, or ``None`` if there was none with that id."""
        ...

    async def list(self) -> list[Rule]:
        """All stored rules, expired ones included, oldest first."""
        ...

    async def audit(self, limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` audit entries, newest first."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def _sorted(rules: list[Rule]) -> list[Rule]:
    return sorted(rules, key=lambda r: (r.created_ms, r.rule_id))


class MemoryRulesStore:
    """A dict-backed ``RulesStore``; values encoded exactly as in Redis."""

    def __init__(self, clock: Callable[[], int] = _now_ms, audit_max: int = AUDIT_MAX) -> None:
        self._rules: dict[str, bytes] = {}
        self._audit: list[bytes] = []
        self._clock = clock
        self._audit_max = audit_max

    def _log(self, change: str, actor: str, rule: Rule, why: str) -> None:
        entry = AuditEntry(ts_ms=self._clock(), change=change, actor=actor, rule=rule, why=why)  # type: ignore[arg-type]
        self._audit.insert(0, msgspec.json.encode(entry))
        del self._audit[self._audit_max :]

    async def add(self, rule: Rule, actor: str) -> None:
        self._rules[rule.rule_id] = msgspec.json.encode(rule)
        self._log("add", actor, rule, rule.why)

    async def remove(self, rule_id: str, actor: str, why: str = "") -> Rule | None:
        raw = self._rules.pop(rule_id, None)
        if raw is None:
            return None
        rule = _rule_decoder.decode(raw)
        self._log("remove", actor, rule, why)
        return rule

    async def list(self) -> list[Rule]:
        return _sorted([_rule_decoder.decode(r) for r in self._rules.values()])

    async def audit(self, limit: int = 100) -> list[AuditEntry]:
        return [_audit_decoder.decode(e) for e in self._audit[:limit]]

    async def close(self) -> None:
        return None


# Remove one rule and log it, atomically. KEYS: rules hash, audit list. ARGV: rule id, audit entry prefix
# (the entry JSON up to its "rule" field), audit suffix, cap. Returns the removed rule JSON, or false.
_REMOVE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[2] .. raw .. ARGV[3])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
return raw
"""


class RedisRulesStore:
    """A ``RulesStore`` on Redis."""

    def __init__(
        self, client: aioredis.Redis, key_prefix: str, clock: Callable[[], int] = _now_ms, audit_max: int = AUDIT_MAX
    ) -> None:
        self._r = client
        self.rules_key = f"{key_prefix}:{{rules}}"
        self.audit_key = f"{key_prefix}:{{rules}}:audit"
        self._clock = clock
        self._audit_max = audit_max
        self._remove = client.register_script(_REMOVE)

    @staticmethod
    def connect(settings: RedisSettings, clock: Callable[[], int] = _now_ms) -> RedisRulesStore:
        """Build a store from the deployable's Redis settings."""
        password = settings.password.get_secret_value() if settings.password else None
        client = aioredis.Redis.from_url(
            settings.url,
            password=password,
            socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.socket_timeout_s,
        )
        return RedisRulesStore(client, settings.key_prefix, clock)

    async def add(self, rule: Rule, actor: str) -> None:
        entry = AuditEntry(ts_ms=self._clock(), change="add", actor=actor, rule=rule, why=rule.why)
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(self.rules_key, rule.rule_id, msgspec.json.encode(rule))
        pipe.lpush(self.audit_key, msgspec.json.encode(entry))
        pipe.ltrim(self.audit_key, 0, self._audit_max - 1)
        await _guard(pipe.execute(), "add a rule")

    async def remove(self, rule_id: str, actor: str, why: str = "") -> Rule | None:
        # The entry is written around the stored rule JSON inside the script, so the log holds exactly
        # what was removed even if another writer replaced the rule meanwhile.
        head = msgspec.json.encode({"v": 1, "ts_ms": self._clock(), "change": "remove", "actor": actor, "why": why})
        prefix = head[:-1] + b',"rule":'
        raw = await _guard(
            self._remove(keys=[self.rules_key, self.audit_key], args=[rule_id, prefix, b"}", self._audit_max]),
            "remove a rule",
        )
        return _rule_decoder.decode(raw) if raw else None

    async def list(self) -> list[Rule]:
        raw = await _guard(self._r.hvals(self.rules_key), "list the rules")
        return _sorted([_rule_decoder.decode(r) for r in raw])

    async def audit(self, limit: int = 100) -> list[AuditEntry]:
        raw = await _guard(self._r.lrange(self.audit_key, 0, max(0, limit - 1)), "read the rules audit log")
        return [_audit_decoder.decode(e) for e in raw] if limit > 0 else []

    async def close(self) -> None:
        await self._r.aclose()


async def _guard(call, what: str):  # type: ignore[no-untyped-def]
    try:
        return await call
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StoreUnavailable(
            f"could not {what} in Redis: {exc}; check SEGUE_REDIS__URL and that Redis is up"
        ) from exc


class RulesCache:
    """The active rules for a deployable, read from the store at most every ``refresh_s`` seconds.

    ``current(now_ms)`` is called once per batch: it reloads from the store when the last load is older than
    ``refresh_s`` and recompiles without a round trip when a rule expired meanwhile, so an expiry takes
    effect at once and a change within ``refresh_s``. If the store is unreachable the last rules stay in force.
    """

    def __init__(
        self,
        store: RulesStore,
        track_index: dict[str, int],
        artist_of: list[str],
        refresh_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._index = track_index
        self._artists = artist_of
        self._refresh_s = refresh_s
        self._monotonic = monotonic
        self._rules: list[Rule] = []
        self._loaded_at: float | None = None
        self._active = ActiveRules.none(len(artist_of))
        self._compiled_ms = -1

    async def current(self, now_ms: int) -> ActiveRules:
        """The rules in force at ``now_ms``."""
        stale = self._loaded_at is None or self._monotonic() - self._loaded_at >= self._refresh_s
        if stale:
            try:
                self._rules = await self._store.list()
                self._compiled_ms = -1
            except StoreUnavailable as exc:
                log.warning("keeping the last editorial rules: %s", exc)
            self._loaded_at = self._monotonic()
        if self._compiled_ms < 0 or now_ms >= self._active.valid_until_ms or now_ms < self._compiled_ms:
            self._active = compile_rules(self._rules, self._index, self._artists, now_ms)
            self._compiled_ms = now_ms
        return self._active
