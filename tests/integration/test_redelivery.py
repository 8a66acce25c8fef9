"""At-least-once delivery: the same events delivered twice leave the same session state as once."""

from __future__ import annotations

import time

import numpy as np

from infra.prom_text import total
from models_onnx.bundle import read_manifest
from models_onnx.generate import world_from_manifest
from serving.catalog import Catalog
from streams.records import decode_event
from streams.sdk import EventProducer
from streams.session import SessionState, apply_event
from streams.state_codec import encode_state
from tests.integration.helpers import eventually, start_worker, states, worker_settings

N_USERS = 20
PER_USER = 12


def offline(catalog: Catalog, events: list[dict]) -> dict[str, SessionState]:
    out: dict[str, SessionState] = {}
    for raw in events:
        e = decode_event(_json(raw))
        i = catalog.index[e.track_id]
        out[e.user_id] = apply_event(out.get(e.user_id) or SessionState.empty(catalog.dim), e, i, catalog.embeddings[i])
    return out


def _json(d: dict) -> bytes:
    import msgspec

    return msgspec.json.encode(d)


def _same(a: SessionState, b: SessionState) -> bool:
    return (
        np.allclose(a.pos, b.pos, atol=1e-6)
        and np.allclose(a.neg, b.neg, atol=1e-6)
        and np.allclose(a.taste, b.taste, atol=1e-6)
        and (a.recent, a.outcomes, a.plays, a.skips, a.likes, a.events, a.seen_ids, a.version)
        == (b.recent, b.outcomes, b.plays, b.skips, b.likes, b.events, b.seen_ids, b.version)
    )


def test_duplicates_and_redelivery_change_nothing(embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path):
    settings = worker_settings(embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path)
    world = world_from_manifest(read_manifest(quick_bundle))
    catalog = Catalog.load(quick_bundle)
    rng = np.random.default_rng(11)
    start = time.time_ns() // 1_000_000
    events = []
    for u in range(N_USERS):
        sim = world.listener(u)
        for k in range(PER_USER):
            track = world.track_ids[int(rng.integers(world.n_tracks))]
            events.append(sim.react(track, start + k * 60_000, rng))
    expected = offline(catalog, events)
    users = sorted(expected)

    worker = start_worker(settings, tmp_path)
    try:
        with EventProducer.connect(embedded_stack.kafka, topic=unique_topics.events) as producer:
            for e in events:  # every event sent twice: a producer retry after a lost acknowledgement
                producer.send(e)
                producer.send(e)
            producer.flush()

        def all_applied():
            got = states(settings.redis, users)
            return got if all(s is not None and s.version == PER_USER for s in got.values()) else None

        eventually(all_applied, timeout_s=60)
        text = eventually(
            lambda: (
                (t := worker.metrics()) and total(t, "segue_events_total", outcome="duplicate") == len(events) and t
            ),
            timeout_s=30,
        )
        assert total(text, "segue_events_total", outcome="applied") == len(events)
    finally:
        worker.stop()
    once = states(settings.redis, users)
    for u in users:
        assert _same(once[u], expected[u]), u

    # A second consumer group re-reads the whole topic from the beginning: a full redelivery.
    replay = settings.model_copy(update={"app_id": settings.app_id + "-replay"})
    again = start_worker(replay, tmp_path, name="replayer")
    try:
        eventually(
            lambda: total(again.metrics(), "segue_events_total", outcome="duplicate") == 2 * len(events),
            timeout_s=60,
        )
        assert total(again.metrics(), "segue_events_total", outcome="applied") == 0
    finally:
        again.stop()
    after = states(settings.redis, users)
    for u in users:
        assert encode_state(after[u]) == encode_state(once[u]), u
