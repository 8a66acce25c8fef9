"""Editorial rules and the knob through the real worker process and Redis: block, pin, expiry, preferences."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import numpy as np

from serving.catalog import Catalog
from serving.diversity import Preferences
from serving.prefs_store import RedisPreferencesStore
from serving.rules import Rule
from serving.rules_store import RedisRulesStore
from streams.sdk import EventProducer
from tests.integration.helpers import eventually, latest_recommendations, start_worker, worker_settings

N_USERS = 12
PIN_POSITION = 3


def _now() -> int:
    return time.time_ns() // 1_000_000


def _send_wave(stack, topics, users, tracks_of, catalog, ts_ms):
    ids = {}
    with EventProducer.connect(stack.kafka, topic=topics.events) as producer:
        for u in users:
            t = tracks_of[u].pop()
            ids[u] = producer.play(
                u, catalog.track_ids[t], played_ms=180_000, duration_ms=200_000, ts_ms=ts_ms
            ).event_id
        producer.flush()
    return ids


def _wave(stack, topics, settings, users, tracks_of, catalog, ts_ms):
    """One play per user; the recommendations that answer it (all users)."""
    ids = _send_wave(stack, topics, users, tracks_of, catalog, ts_ms)

    def answered():
        recs = latest_recommendations(settings.redis, list(ids))
        return recs if all(r is not None and r.event_id == ids[u] for u, r in recs.items()) else None

    return eventually(answered, timeout_s=60)


def test_block_pin_expiry_and_preferences_in_fresh_recommendations(
    embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path
):
    settings = worker_settings(
        embedded_stack,
        unique_topics,
        redis_prefix,
        quick_bundle,
        tmp_path,
        rescore_timeout_ms=2000.0,
        rules_refresh_s=0.2,
    )
    catalog = Catalog.load(quick_bundle)
    rng = np.random.default_rng(11)
    users = [f"ed-{i}" for i in range(N_USERS)]
    tracks_of = {u: [int(t) for t in rng.choice(len(catalog), size=6, replace=False)] for u in users}
    heard = {u: set(ts) for u, ts in tracks_of.items()}
    worker = start_worker(settings, tmp_path)
    try:
        t = _now()
        first = _wave(embedded_stack, unique_topics, settings, users, tracks_of, catalog, t)
        # Block the artist recommended most often in the first wave; pin a track nobody heard.
        artists = Counter(catalog.artist_of[catalog.index[i.track_id]] for r in first.values() for i in r.items)
        blocked_artist, _ = artists.most_common(1)[0]
        pinned = next(
            i
            for i in range(len(catalog))
            if all(i not in h for h in heard.values()) and catalog.artist_of[i] != blocked_artist
        )
        now = _now()
        pin_expires = now + 6_000

        async def setup():
            rules = RedisRulesStore.connect(settings.redis)
            prefs = RedisPreferencesStore.connect(settings.redis)
            await rules.add(
                Rule(
                    rule_id="blk",
                    action="block",
                    target="artist",
                    value=blocked_artist,
                    expires_ms=now + 600_000,
                    created_ms=now,
                    author="test",
                ),
                actor="test",
            )
            await rules.add(
                Rule(
                    rule_id="pin",
                    action="pin",
                    target="track",
                    value=catalog.track_ids[pinned],
                    position=PIN_POSITION,
                    expires_ms=pin_expires,
                    created_ms=now,
                    author="test",
                ),
                actor="test",
            )
            await prefs.put(users[0], Preferences(exploration=0.5))
            await rules.close()
            await prefs.close()

        asyncio.run(setup())
        time.sleep(0.5)  # past the worker's rules refresh

        second = _wave(embedded_stack, unique_topics, settings, users, tracks_of, catalog, t + 2_000)
        assert _now() < pin_expires, "the machine was too slow to check the pin before it expired"
        for recs in second.values():
            tracks = [i.track_id for i in recs.items]
            assert len(tracks) == settings.scoring.recommendations, "blocking must keep the list full"
            assert all(catalog.artist_of[catalog.index[x]] != blocked_artist for x in tracks)
            assert tracks[PIN_POSITION - 1] == catalog.track_ids[pinned]
            assert recs.items[PIN_POSITION - 1].reason.code == "editorial_pin"
            assert all(i.reason is not None for i in recs.items)
        codes = [i.reason.code for i in second[users[0]].items]
        assert codes.count("exploration") == 10  # the user's stored knob, read by the worker
        assert all("exploration" not in [i.reason.code for i in second[u].items] for u in users[1:])

        time.sleep(max(0.0, (pin_expires - _now()) / 1000) + 0.3)
        third = _wave(embedded_stack, unique_topics, settings, users, tracks_of, catalog, t + 4_000)
        for recs in third.values():
            assert all(i.reason.code != "editorial_pin" for i in recs.items), "the pin outlived its expiry"
            assert all(catalog.artist_of[catalog.index[i.track_id]] != blocked_artist for i in recs.items)
    finally:
        worker.stop()
