"""A user's keys share one Redis Cluster hash slot (so multi-key work per user stays on one node)."""

from redis.crc import key_slot

from streams.settings import RedisSettings
from streams.stores import RedisStore


def test_keys_share_a_cluster_slot_per_user():
    store = RedisStore.connect(RedisSettings(url="redis://127.0.0.1:1/0", key_prefix="segue"))
    a, b = store.state_key("user:1"), store.recs_key("user:1")
    assert key_slot(a.encode()) == key_slot(b.encode()) == key_slot(b"user:1")
    assert key_slot(store.state_key("user:2").encode()) != key_slot(a.encode())
