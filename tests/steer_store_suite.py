"""The one test suite every ``SteerStore`` implementation must pass (used by unit and integration tests)."""

from __future__ import annotations

import numpy as np
import pytest

from serving.steering import Steer
from streams.errors import InvalidSteer
from streams.steer_store import SteerStore

NOW = 1_800_000_000_000


def steer(prompt: str, expires_ms: int, dim: int = 8) -> Steer:
    vector = np.arange(dim, dtype=np.float32) / dim
    return Steer(prompt=prompt, strength=1.5, expires_ms=expires_ms, model_version="m1", vector=vector.tobytes())


async def check_steer_store(store: SteerStore, users: list[str]) -> None:
    assert isinstance(store, SteerStore)
    assert await store.get_steers(users, NOW) == [None] * len(users)
    assert await store.steered_users(NOW) == set()
    assert await store.get_steers([], NOW) == []

    a = steer("upbeat workout", NOW + 60_000)
    await store.put_steer(users[0], a, NOW)
    got = await store.get_steers(users, NOW)
    assert got[0] == a and got[1:] == [None] * (len(users) - 1)
    np.testing.assert_array_equal(got[0].array(), np.arange(8, dtype=np.float32) / 8)
    assert await store.get_steers([users[0]], NOW) == [a]  # one user (no pipeline) reads the same

    b = steer("rainy evening piano", NOW + 120_000)
    await store.put_steer(users[0], b, NOW)  # replaces
    assert (await store.get_steers([users[0]], NOW))[0] == b
    await store.put_steer(users[1], steer("calm", NOW + 30_000), NOW)
    assert await store.steered_users(NOW) == {users[0], users[1]}
    assert await store.steered_users(NOW + 30_000) == {users[0]}  # the index follows expiry too
    assert await store.delete_steer(users[1]) is True

    # An expired steer reads as None, also before the store drops it.
    assert await store.get_steers([users[0]], NOW + 120_000) == [None]
    with pytest.raises(InvalidSteer, match="expired"):
        await store.put_steer(users[1], steer("late", NOW - 1), NOW)

    assert await store.delete_steer(users[0]) is True
    assert await store.delete_steer(users[0]) is False
    assert await store.get_steers(users, NOW) == [None] * len(users)
    assert await store.steered_users(NOW) == set()
