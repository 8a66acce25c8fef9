"""``segue-forget`` removes a listener's state and recommendations from the real Redis."""

import asyncio

import numpy as np

from serving.diversity import Preferences
from serving.prefs_store import RedisPreferencesStore
from streams.forget import main
from streams.records import Like, Recommendations, RecommendedTrack
from streams.session import SessionState, apply_event
from streams.settings import RedisSettings
from streams.steer_store import RedisSteerStore
from streams.stores import RedisStore
from tests.steer_store_suite import NOW, steer


def test_forget_user_removes_state_and_recommendations(embedded_stack, redis_prefix, monkeypatch, capsys):
    settings = RedisSettings(url=embedded_stack.redis.url, key_prefix=redis_prefix)
    like = Like(event_id="e", user_id="gone", track_id="t", ts_ms=1_763_900_000_000)
    state = apply_event(SessionState.empty(4), like, 0, np.ones(4, np.float32))
    recs = Recommendations(user_id="gone", items=[RecommendedTrack("t", 1.0, 1)], model_version="m", provider="cpu")

    async def seed():
        store = RedisStore.connect(settings)
        await store.put_states({"gone": state, "kept": state})
        await store.put_recommendations([recs])
        await store.close()
        steers = RedisSteerStore.connect(settings)
        await steers.put_steer("steered-only", steer("calm", NOW + 60_000), NOW)
        await steers.close()
        prefs = RedisPreferencesStore.connect(settings)
        await prefs.put("tuned-only", Preferences(exploration=0.2, diversity=0.5))
        await prefs.close()

    async def look():
        store = RedisStore.connect(settings)
        try:
            return await store.get_states(["gone", "kept"]), await store.get_recommendations("gone")
        finally:
            await store.close()

    asyncio.run(seed())
    monkeypatch.setenv("SEGUE_REDIS__URL", settings.url)
    monkeypatch.setenv("SEGUE_REDIS__KEY_PREFIX", redis_prefix)
    assert main(["gone", "never-seen", "steered-only", "tuned-only"]) == 0
    out = capsys.readouterr().out
    assert "gone: forgotten" in out and "never-seen: nothing stored" in out
    assert "steered-only: forgotten" in out  # a prompt steer is per-user data too
    assert "tuned-only: forgotten" in out  # and so are the listener's exploration/diversity preferences
    (gone, kept), gone_recs = asyncio.run(look())
    assert gone is None and gone_recs is None and kept is not None
