"""The shared steer store suite on a real Redis, and the key's TTL following the steer's expiry."""

import asyncio
import time

from streams.settings import RedisSettings
from streams.steer_store import RedisSteerStore
from tests.steer_store_suite import check_steer_store, steer


def test_redis_steer_store_passes_the_steer_store_suite(embedded_stack, redis_prefix):
    async def go():
        store = RedisSteerStore.connect(RedisSettings(url=embedded_stack.redis.url, key_prefix=redis_prefix))
        try:
            await check_steer_store(store, ["alice", "bob", "carol"])
        finally:
            await store.close()

    asyncio.run(go())


def test_redis_key_expires_with_the_steer(embedded_stack, redis_prefix, redis_client):
    settings = RedisSettings(url=embedded_stack.redis.url, key_prefix=redis_prefix)

    async def go():
        store = RedisSteerStore.connect(settings)
        try:
            now = int(time.time() * 1000)
            await store.put_steer("erin", steer("calm", now + 30_000), now)
            return store.key("erin")
        finally:
            await store.close()

    key = asyncio.run(go())
    assert key == f"{redis_prefix}:{{erin}}:steer"
    assert 0 < redis_client.pttl(key) <= 30_000
