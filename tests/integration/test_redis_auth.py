"""Redis with a password: the store works with the password and fails clearly without it."""

import asyncio

import pytest
from pydantic import SecretStr

from infra.stack import EmbeddedStack
from streams.errors import SegueError
from streams.settings import RedisSettings
from streams.stores import RedisStore
from tests.store_suite import check_store


def test_password_protected_redis(tmp_path):
    with EmbeddedStack(tmp_path, redis_password="s3cret-pw") as stack:
        settings = stack.redis
        assert settings.password is not None

        async def with_password():
            store = RedisStore.connect(settings)
            try:
                await check_store(store, ["a", "b"])
            finally:
                await store.close()

        asyncio.run(with_password())

        async def without():
            store = RedisStore.connect(RedisSettings(url=settings.url, password=SecretStr("wrong")))
            try:
                await store.get_states(["a"])
            finally:
                await store.close()

        with pytest.raises((SegueError, Exception)) as info:
            asyncio.run(without())
        assert "auth" in str(info.value).lower() or "password" in str(info.value).lower()
