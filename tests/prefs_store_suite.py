"""The one test suite every ``PreferencesStore`` implementation must pass (unit: memory, integration: Redis)."""

from __future__ import annotations

from serving.diversity import Preferences
from serving.prefs_store import PreferencesStore


async def check_preferences_store(store: PreferencesStore, users: list[str]) -> None:
    assert isinstance(store, PreferencesStore)
    assert await store.get_many(users) == [None] * len(users)
    assert await store.get_many([]) == []
    await store.put(users[0], Preferences(exploration=0.2, diversity=0.5))
    await store.put(users[2], Preferences(diversity=1.0))
    assert await store.get_many(list(reversed(users))) == [Preferences(0.0, 1.0), None, Preferences(0.2, 0.5)]
    await store.put(users[0], Preferences())
    assert (await store.get_many([users[0]]))[0] == Preferences()
    assert await store.delete(users[0]) is True
    assert await store.delete(users[0]) is False
    assert await store.get_many([users[0], users[2]]) == [None, Preferences(0.0, 1.0)]
