"""A user's key sits in the user's Redis Cluster hash slot (like every other per-user key)."""

from redis.crc import key_slot

from streams.settings import RedisSettings
from streams.stores import RedisStore


def test_a_users_key_is_in_the_users_slot():
    store = RedisStore.connect(RedisSettings(url="redis://127.0.0.1:1/0", key_prefix="segue"))
    a = store.user_key("user:1")
    assert key_slot(a.encode()) == key_slot(b"user:1")
    assert key_slot(store.user_key("user:2").encode()) != key_slot(a.encode())
