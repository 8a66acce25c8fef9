"""segue-import end to end: seeding a taste into the real Redis, and replaying plays onto the real broker."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest

from models_onnx.bundle import read_manifest, read_tracks
from serving.catalog import Catalog
from streams.records import decode_event
from streams.settings import RedisSettings
from streams.spotify_import import main
from streams.stores import RedisStore
from tests.integration.helpers import read_topic

NAMED = {5: ("Massive Attack", "Teardrop"), 6: ("Portishead", "Roads"), 7: ("Björk", "Hyperballad")}


@pytest.fixture
def export(quick_bundle, tmp_path):
    """A bundle whose tracks 5-7 have names, and an account-data export that plays them."""
    bundle = tmp_path / "bundle"
    shutil.copytree(quick_bundle, bundle)
    tracks = read_tracks(bundle, read_manifest(bundle))
    for i, (artist, title) in NAMED.items():
        tracks[i].update(artist_name=artist, title=title)
    (bundle / "tracks.json").write_text(json.dumps(tracks))
    plays = [
        {"endTime": f"2024-02-01 0{k}:00", "artistName": a, "trackName": t, "msPlayed": 200_000 if k != 2 else 4_000}
        for k, (a, t) in enumerate(NAMED.values())
    ]
    path = tmp_path / "StreamingHistory_music_0.json"
    path.write_text(json.dumps(plays, ensure_ascii=False))
    return bundle, path


def test_seed_writes_the_taste_into_redis(export, embedded_stack, redis_prefix, monkeypatch, capsys):
    bundle, path = export
    monkeypatch.setenv("SEGUE_REDIS__URL", embedded_stack.redis.url)
    monkeypatch.setenv("SEGUE_REDIS__KEY_PREFIX", redis_prefix)
    assert main([str(path), "--user", "imp-alice", "--bundle", str(bundle)]) == 0
    assert "matched 3 of 3 plays to the catalog (1 as skips)" in capsys.readouterr().out

    async def read():
        store = RedisStore.connect(RedisSettings(url=embedded_stack.redis.url, key_prefix=redis_prefix))
        try:
            return (await store.get_states(["imp-alice"]))[0]
        finally:
            await store.close()

    state = asyncio.run(read())
    items = Catalog.load(bundle).embeddings
    # Two kept plays (tracks 5 and 6; the 4-second play of 7 is a skip) through the session rule.
    expected = 0.95 * 0.05 * items[5] + 0.05 * items[6]
    np.testing.assert_allclose(state.taste, expected, atol=1e-4)  # state vectors may be half precision
    assert state.version == 1 and state.events == 0


def test_replay_sends_valid_events_to_the_topic(export, embedded_stack, unique_topics, monkeypatch, capsys):
    bundle, path = export
    monkeypatch.setenv("SEGUE_KAFKA__BOOTSTRAP_SERVERS", embedded_stack.kafka.bootstrap_servers)
    monkeypatch.setenv("SEGUE_TOPICS__EVENTS", unique_topics.events)
    assert main([str(path), "--user", "imp-bob", "--bundle", str(bundle), "--replay"]) == 0
    assert f"sent 3 events for imp-bob to {unique_topics.events}" in capsys.readouterr().out
    records = read_topic(embedded_stack.kafka.bootstrap_servers, unique_topics.events, unique_topics.partitions, 3)
    events = sorted((decode_event(r.value) for r in records), key=lambda e: e.ts_ms)
    ids = Catalog.load(bundle).track_ids
    assert [e.track_id for e in events] == [ids[5], ids[6], ids[7]]
    assert [type(e).__name__ for e in events] == ["Play", "Play", "Skip"]
    assert {r.key for r in records} == {b"imp-bob"} and all(e.context.source == "import" for e in events)
