"""The synthetic world: determinism, catalog shape, listener behaviour and event validity."""

from __future__ import annotations

import re
from collections import Counter
from itertools import groupby

import msgspec
import numpy as np
import pytest

from models_onnx.generate import FEATURES, GENRES, SyntheticWorld, by_time
from streams.records import Like, Play, Skip, decode_event


def test_catalog_is_deterministic_per_seed() -> None:
    a, b, c = SyntheticWorld.create(3), SyntheticWorld.create(3), SyntheticWorld.create(4)
    assert a.track_ids == b.track_ids
    np.testing.assert_array_equal(a.latent, b.latent)
    np.testing.assert_array_equal(a.popularity, b.popularity)
    assert a.track_records() == b.track_records()
    assert not np.array_equal(a.latent, c.latent)


def test_catalog_shape_and_ranges(world: SyntheticWorld) -> None:
    n = 2000
    assert world.n_tracks == n and len(set(world.track_ids)) == n
    assert world.track_ids[42] == "trk-00042" and world.artist_ids[7] == "art-0007"
    assert world.latent.shape == (n, 16) and world.latent.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(world.latent, axis=1), 1.0, atol=1e-5)
    assert set(world.genre_names) <= set(GENRES) and len(world.genre_names) == 12
    assert len(set(world.track_genre.tolist())) == 12 and len(set(world.track_artist.tolist())) == 300
    assert world.features.shape == (n, len(FEATURES))
    assert world.features.min() >= 0.0 and world.features.max() <= 1.0
    # Zipf-like popularity: max 1, the top 10% of tracks hold most of the mass.
    pop = np.sort(world.popularity)[::-1]
    assert pop[0] == pytest.approx(1.0) and pop[-1] > 0
    assert pop[: n // 10].sum() > 0.5 * pop.sum()
    rec = world.track_records()[5]
    assert set(rec) == {"track_id", "artist_id", "genre", "popularity", "features"}
    assert set(rec["features"]) == set(FEATURES)


def test_styles_cluster_by_genre_and_artist(world: SyntheticWorld) -> None:
    sims = world.latent @ world.latent.T  # [N, N]
    same_genre = world.track_genre[:, None] == world.track_genre[None, :]
    same_artist = world.track_artist[:, None] == world.track_artist[None, :]
    off = ~np.eye(world.n_tracks, dtype=bool)
    across = sims[~same_genre].mean()
    within_genre = sims[same_genre & ~same_artist].mean()
    within_artist = sims[same_artist & off].mean()
    assert within_artist > within_genre + 0.1 > across + 0.3


def test_listener_is_deterministic_and_plausible(world: SyntheticWorld) -> None:
    a, b = world.listener(3), SyntheticWorld.create(7).listener(3)
    assert a.user_id == "user-0003"
    np.testing.assert_array_equal(a.taste, b.taste)
    assert not np.array_equal(a.taste, world.listener(4).taste)
    assert 1 <= len(a.genres) <= 3
    assert np.linalg.norm(a.taste) == pytest.approx(1.0, abs=1e-5)


def test_react_follows_affinity(world: SyntheticWorld) -> None:
    listener = world.listener(0)
    aff = world.latent @ listener.taste  # [N]
    best, worst = world.track_ids[int(np.argmax(aff))], world.track_ids[int(np.argmin(aff))]
    rng = np.random.default_rng(0)
    ts = 1_704_067_200_000
    good = Counter(listener.react(best, ts, rng)["type"] for _ in range(300))
    bad = Counter(listener.react(worst, ts, rng)["type"] for _ in range(300))
    assert bad["skip"] > 280 and bad["like"] == 0
    assert good["skip"] < 15 and good["like"] > 50


def test_react_emits_valid_v1_events(world: SyntheticWorld) -> None:
    listener = world.listener(1)
    rng = np.random.default_rng(1)
    seen = set()
    for i in range(200):
        d = listener.react(world.track_ids[i], 1_704_067_200_000 + i, rng, session_id="ses-1")
        event = decode_event(msgspec.json.encode(d))
        assert event.user_id == "user-0001" and event.track_id == world.track_ids[i]
        assert event.context is not None and event.context.device and event.context.source
        if isinstance(event, (Play, Skip)):
            assert 0 < event.played_ms <= (event.duration_ms or 0)
        seen.add(type(event))
    assert seen == {Play, Skip, Like}
    with pytest.raises(KeyError):
        listener.react("trk-99999", 1_704_067_200_000, rng)


def test_sessions_are_deterministic_valid_and_realistic(world: SyntheticWorld) -> None:
    events = world.simulate_sessions(60, 3, 20, np.random.default_rng(5))
    again = world.simulate_sessions(60, 3, 20, np.random.default_rng(5))
    assert events == again
    assert len(events) == 60 * 3 * 20
    assert len({e["event_id"] for e in events}) == len(events)
    for e in events:
        decode_event(msgspec.json.encode(e))
    users = [u for u, _ in groupby(events, key=lambda e: e["user_id"])]
    assert users == [f"user-{i:04d}" for i in range(60)]  # grouped by user, in user order
    for _, group in groupby(events, key=lambda e: e["user_id"]):
        ts = [e["ts_ms"] for e in group]
        assert ts == sorted(ts)
    types = Counter(e["type"] for e in events)
    assert 0.25 <= types["skip"] / len(events) <= 0.40
    assert 0.02 <= types["like"] / len(events) <= 0.2
    assert all(re.fullmatch(r"ses-[0-9a-f]{16}", e["session_id"]) for e in events)
    assert len({e["session_id"] for e in events}) == 60 * 3
    merged = by_time(events)
    assert [e["ts_ms"] for e in merged] == sorted(e["ts_ms"] for e in events)


def test_create_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError):
        SyntheticWorld.create(1, n_genres=99)
    with pytest.raises(ValueError):
        SyntheticWorld.create(1, n_tracks=10, n_artists=20)
