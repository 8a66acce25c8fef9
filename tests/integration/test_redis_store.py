"""The shared store suite on a real Redis."""

import asyncio

from streams.settings import RedisSettings
from streams.stores import RedisStore, Store
from tests.store_suite import check_compare_and_set, check_offer, check_store


def _run(embedded_stack, redis_prefix, check, *args):
    async def go():
        store = RedisStore.connect(RedisSettings(url=embedded_stack.redis.url, key_prefix=redis_prefix))
        assert isinstance(store, Store)
        try:
            await check(store, *args)
        finally:
            await store.close()

    asyncio.run(go())


def test_redis_store_passes_the_store_suite(embedded_stack, redis_prefix):
    _run(embedded_stack, redis_prefix, check_store, ["alice", "bob", "carol"])


def test_redis_store_compare_and_set(embedded_stack, redis_prefix):
    _run(embedded_stack, redis_prefix, check_compare_and_set, "dave")


def test_redis_store_offer(embedded_stack, redis_prefix):
    _run(embedded_stack, redis_prefix, check_offer, "erin")
