"""The shared preferences and rules store suites on a real Redis."""

import asyncio

from serving.prefs_store import RedisPreferencesStore
from serving.rules_store import RedisRulesStore
from streams.settings import RedisSettings
from tests.prefs_store_suite import check_preferences_store
from tests.rules_store_suite import AUDIT_MAX, check_rules_store, clock_from


def test_redis_preferences_store_passes_the_suite(embedded_stack, redis_prefix):
    async def go():
        store = RedisPreferencesStore.connect(RedisSettings(url=embedded_stack.redis.url, key_prefix=redis_prefix))
        try:
            await check_preferences_store(store, ["alice", "bob", "carol"])
        finally:
            await store.close()

    asyncio.run(go())


def test_redis_rules_store_passes_the_suite(embedded_stack, redis_prefix, redis_client):
    async def go():
        settings = RedisSettings(url=embedded_stack.redis.url, key_prefix=redis_prefix)
        base = RedisRulesStore.connect(settings)
        store = RedisRulesStore(base._r, redis_prefix, clock=clock_from(), audit_max=AUDIT_MAX)
        try:
            await check_rules_store(store)
        finally:
            await store.close()

    asyncio.run(go())
    # Both keys in one cluster slot (the {rules} hash tag), the audit log capped in Redis itself.
    assert redis_client.llen(f"{redis_prefix}:{{rules}}:audit") == AUDIT_MAX
    assert redis_client.hlen(f"{redis_prefix}:{{rules}}") == 5
