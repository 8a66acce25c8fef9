"""Bad input goes to the dead-letter topic with its reason and is counted; good events keep flowing."""

from __future__ import annotations

import json
import time

from kafka import KafkaProducer

from infra.prom_text import samples, total
from models_onnx.bundle import read_manifest
from models_onnx.generate import world_from_manifest
from streams.records import decode_dead_letter
from tests.integration.helpers import eventually, read_topic, start_worker, states, worker_settings


def test_bad_events_become_dead_letters_and_good_ones_apply(
    embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path, monkeypatch
):
    # No CUDA here (and none allowed for this worker): it must run and report the CPU provider.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    settings = worker_settings(embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path, device="cuda")
    world = world_from_manifest(read_manifest(quick_bundle))
    now = time.time_ns() // 1_000_000
    track = world.track_ids[0]

    def good(i):
        return {
            "type": "play",
            "event_id": f"good-{i}",
            "user_id": "user-good",
            "track_id": track,
            "ts_ms": now + i,
            "played_ms": 100_000,
        }

    bad = {
        "malformed_json": b'{"type": "play", "event_id": ',
        "unknown_type": {**good(0), "type": "pause", "event_id": "bad-type"},
        "missing_field": {k: v for k, v in good(0).items() if k != "user_id"} | {"event_id": "bad-user"},
        "unknown_track": {**good(0), "track_id": "no-such-track", "event_id": "bad-track"},
        "oversized": {**good(0), "event_id": "bad-big", "session_id": "x" * 100, "junk": "y" * 10_000},
    }
    worker = start_worker(settings, tmp_path)
    producer = KafkaProducer(bootstrap_servers=embedded_stack.kafka.bootstrap_servers)
    try:
        i = 0
        for payload in bad.values():
            for _ in range(2):
                i += 1
                producer.send(unique_topics.events, key=b"user-good", value=json.dumps(good(i)).encode())
            raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            producer.send(unique_topics.events, key=b"user-good", value=raw)
        producer.flush()

        letters = read_topic(
            embedded_stack.kafka.bootstrap_servers,
            unique_topics.dead_letters,
            min(unique_topics.partitions, 4),
            expected=len(bad),
            timeout_s=60,
        )
        decoded = [decode_dead_letter(m.value) for m in letters]
        assert sorted(d.reason for d in decoded) == sorted(bad)
        for d in decoded:
            assert d.detail and d.topic == unique_topics.events and d.size > 0
        big = next(d for d in decoded if d.reason == "oversized")
        assert big.size > 10_000 and len(big.value) <= 2048

        state = eventually(lambda: (s := states(settings.redis, ["user-good"])["user-good"]) and s.version == i and s)
        assert state.plays == i

        text = worker.metrics()
        for reason in bad:
            assert total(text, "segue_dead_letters_total", reason=reason) == 1, reason
        assert total(text, "segue_events_total", outcome="dead_letter") == len(bad)
        assert total(text, "segue_events_total", outcome="applied") == i
        info = samples(text, "segue_model_info")
        assert [lab["provider"] for lab, v in info if v == 1] == ["CPUExecutionProvider"]
        assert worker.process.running
    finally:
        producer.close()
        worker.stop()
