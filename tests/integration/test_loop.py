"""The whole loop on the real broker and Redis: events -> session state -> rescoring -> recommendations."""

from __future__ import annotations

import time

import numpy as np

from infra.prom_text import samples, total
from models_onnx.bundle import read_manifest
from models_onnx.generate import world_from_manifest
from serving.catalog import Catalog
from streams.records import decode_recommendations
from streams.sdk import EventProducer
from tests.integration.helpers import (
    eventually,
    latest_recommendations,
    read_topic,
    start_worker,
    worker_settings,
)

N_USERS = 30


def test_recommendations_follow_each_users_latest_events(
    embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path
):
    # This test is about the model's ranking: give it a slot a loaded test machine cannot overrun (the
    # fallback within a tight slot is tested in test_slow_model.py).
    settings = worker_settings(
        embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path, rescore_timeout_ms=2000.0
    )
    world = world_from_manifest(read_manifest(quick_bundle))
    catalog = Catalog.load(quick_bundle)
    rng = np.random.default_rng(3)
    worker = start_worker(settings, tmp_path)
    try:
        now = time.time_ns() // 1_000_000
        users = [world.listener(i) for i in range(N_USERS)]
        skipped, last_ids, heard = {}, {}, {}
        with EventProducer.connect(embedded_stack.kafka, topic=unique_topics.events) as producer:
            for u, sim in enumerate(users):
                favourite = world.genre_tracks[int(sim.genres[0])]
                plays = rng.choice(favourite, size=4, replace=False)
                for k, t in enumerate(plays):
                    producer.play(
                        sim.user_id,
                        world.track_ids[t],
                        played_ms=200_000,
                        duration_ms=200_000,
                        ts_ms=now + k * 1000,
                    )
                other = [g for g in range(len(world.genre_names)) if g not in set(sim.genres.tolist())]
                s = int(rng.choice(world.genre_tracks[other[u % len(other)]]))
                skipped[sim.user_id] = world.track_ids[s]
                heard[sim.user_id] = {int(t) for t in plays} | {s}
                last_ids[sim.user_id] = producer.skip(
                    sim.user_id, world.track_ids[s], played_ms=3_000, ts_ms=now + 5_000
                ).event_id
            producer.flush()

        def answered(ids):
            recs = latest_recommendations(settings.redis, list(ids))
            return recs if all(r is not None and r.event_id == ids[u] for u, r in recs.items()) else None

        first = eventually(lambda: answered(last_ids), timeout_s=60)
        for user, recs in first.items():
            tracks = [i.track_id for i in recs.items]
            assert len(tracks) == settings.scoring.recommendations
            assert skipped[user] not in tracks, f"{user} was recommended the track just skipped"
            assert recs.provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
            assert recs.model_version == catalog.model_version and not recs.fallback

        # A like pulls the liked track's neighbours up.
        liked, gains = {}, []
        with EventProducer.connect(embedded_stack.kafka, topic=unique_topics.events) as producer:
            for sim in users:
                current = {catalog.index[i.track_id] for i in first[sim.user_id].items}
                candidates = [t for t in range(len(catalog.track_ids)) if t not in current | heard[sim.user_id]]
                liked[sim.user_id] = like = int(rng.choice(candidates))
                last_ids[sim.user_id] = producer.like(sim.user_id, catalog.track_ids[like], ts_ms=now + 9_000).event_id
            producer.flush()
        second = eventually(lambda: answered(last_ids), timeout_s=60)
        for sim in users:
            like = liked[sim.user_id]
            sims = catalog.embeddings @ catalog.embeddings[like]
            sims[list(heard[sim.user_id] | {like})] = -np.inf
            neighbours = set(np.argsort(-sims)[:50].tolist())
            before = len(neighbours & {catalog.index[i.track_id] for i in first[sim.user_id].items})
            after = len(neighbours & {catalog.index[i.track_id] for i in second[sim.user_id].items})
            gains.append(after - before)
        assert np.mean(gains) > 5, gains
        assert sum(g > 0 for g in gains) >= 0.8 * N_USERS, gains

        # Downstream consumers see the same fresh lists on the recommendations topic.
        messages = read_topic(
            embedded_stack.kafka.bootstrap_servers,
            unique_topics.recommendations,
            unique_topics.partitions,
            expected=2 * N_USERS,
        )
        newest = {}
        for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
            rec = decode_recommendations(m.value)
            assert m.key.decode() == rec.user_id
            newest[rec.user_id] = rec
        assert newest == {u: second[u] for u in newest} and set(newest) == set(last_ids)

        text = worker.metrics()
        applied = total(text, "segue_events_total", outcome="applied")
        assert applied == N_USERS * 6
        assert total(text, "segue_event_to_recommendations_seconds_count") == applied
        assert total(text, "segue_rescore_seconds_count") >= 1
        assert total(text, "segue_dead_letters_total") == 0
        lags = samples(text, "segue_consumer_lag_events")
        assert lags and all(v == 0 for _, v in lags), lags
    finally:
        worker.stop()
