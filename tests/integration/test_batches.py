"""Batch messages end to end: a JSON array of events per partition is applied event by event, exactly once,
and one bad event in a batch is dead-lettered alone."""

from __future__ import annotations

import time

import numpy as np
from kafka import KafkaProducer

from infra.prom_text import total
from models_onnx.bundle import read_manifest
from models_onnx.generate import world_from_manifest
from serving.catalog import Catalog
from streams.records import decode_dead_letter
from streams.sdk import EventProducer
from streams.topics import dead_letter_partitions
from tests.integration.helpers import eventually, read_topic, start_worker, states, worker_settings
from tests.integration.test_redelivery import _same, offline

N_USERS = 25
PER_USER = 8


def test_batches_apply_every_event_once(embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path):
    settings = worker_settings(embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path)
    world = world_from_manifest(read_manifest(quick_bundle))
    catalog = Catalog.load(quick_bundle)
    rng = np.random.default_rng(5)
    start = time.time_ns() // 1_000_000
    events = [
        world.listener(u).react(world.track_ids[int(rng.integers(world.n_tracks))], start + k * 60_000, rng)
        for k in range(PER_USER)
        for u in range(N_USERS)
    ]
    expected = offline(catalog, events)
    users = sorted(expected)
    worker = start_worker(settings, tmp_path)
    try:
        with EventProducer.connect(embedded_stack.kafka, topic=unique_topics.events) as producer:
            for first in range(0, len(events), 40):  # a gateway forwarding 40 listeners' events at a time
                producer.send_batch(events[first : first + 40])
            producer.send_batch(events[:40])  # a gateway retry: the same events again, in new messages
            producer.flush()
        raw = KafkaProducer(bootstrap_servers=embedded_stack.kafka.servers)
        good = b'{"type":"like","event_id":"batch-good","user_id":"solo","track_id":"%s","ts_ms":%d}' % (
            world.track_ids[3].encode(),
            start,
        )
        bad = b'{"type":"like","event_id":"batch-bad","user_id":"solo","track_id":"nope","ts_ms":%d}' % start
        raw.send(unique_topics.events, value=b"[" + good + b"," + bad + b"]", partition=0).get(timeout=10)
        raw.close()

        def all_applied():
            got = states(settings.redis, [*users, "solo"])
            done = all(s is not None and s.version == PER_USER for u, s in got.items() if u != "solo")
            return got if done and got["solo"] is not None else None

        got = eventually(all_applied, timeout_s=90)
        text = eventually(
            lambda: (t := worker.metrics()) and total(t, "segue_events_total", outcome="duplicate") == 40 and t,
            timeout_s=30,
        )
        assert total(text, "segue_events_total", outcome="applied") == len(events) + 1
        assert total(text, "segue_dead_letters_total", reason="unknown_track") == 1
    finally:
        worker.stop()
    for u in users:
        assert _same(got[u], expected[u]), u
    assert got["solo"].version == 1
    dlq_partitions = dead_letter_partitions(unique_topics.partitions)
    (dead,) = read_topic(embedded_stack.kafka.servers, unique_topics.dead_letters, dlq_partitions, expected=1)
    letter = decode_dead_letter(dead.value)
    assert (letter.reason, letter.index, letter.partition) == ("unknown_track", 1, 0)
    assert letter.value == bad.decode()
