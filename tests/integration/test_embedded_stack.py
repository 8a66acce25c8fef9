"""The embedded stack runs real Kafka-protocol and Redis services that segue's clients can use."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer

from infra.ports import LOOPBACK, free_port
from infra.redis_server import RedisServer
from infra.stack import EmbeddedStack
from streams.errors import ConfigError, StackError
from streams.settings import TopicSettings
from streams.topics import ensure_topics


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_keyed_messages_round_trip_through_a_consumer_group(
    embedded_stack: EmbeddedStack, unique_topics: TopicSettings
) -> None:
    kw = embedded_stack.kafka.kafka_python_kwargs()
    keys = [f"user-{i}".encode() for i in range(12)]
    sent: dict[bytes, list[bytes]] = {k: [] for k in keys}
    producer = KafkaProducer(**kw, linger_ms=5)
    try:
        futures = []
        for n in range(240):
            key = keys[n % len(keys)]
            value = f"{key.decode()}:{n}".encode()
            sent[key].append(value)
            futures.append((key, producer.send(unique_topics.events, key=key, value=value)))
        producer.flush(timeout=10)
        produced_partition = {}
        for key, fut in futures:
            partition = fut.get(timeout=10).partition
            assert produced_partition.setdefault(key, partition) == partition
    finally:
        producer.close()

    consumer = KafkaConsumer(
        unique_topics.events,
        **kw,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        enable_auto_commit=False,
    )
    received: dict[bytes, list[bytes]] = {k: [] for k in keys}
    seen_partition: dict[bytes, set[int]] = {k: set() for k in keys}
    try:
        deadline = time.monotonic() + 30
        while sum(map(len, received.values())) < 240 and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    received[record.key].append(record.value)
                    seen_partition[record.key].add(tp.partition)
        consumer.commit()
    finally:
        consumer.close()

    assert received == sent  # everything back, in order per key
    assert all(seen_partition[k] == {produced_partition[k]} for k in keys)  # one stable partition per key
    assert len(set(produced_partition.values())) > 1  # keys spread over the 4 partitions


def test_redis_set_get_round_trip(redis_client: redis.Redis, redis_prefix: str) -> None:
    key = f"{redis_prefix}:greeting"
    assert redis_client.set(key, b"\x00hello", ex=60)
    assert redis_client.get(key) == b"\x00hello"


def test_ensure_topics_is_idempotent_and_creates_configured_partitions(embedded_stack: EmbeddedStack) -> None:
    suffix = uuid.uuid4().hex[:12]
    topics = TopicSettings(
        events=f"test.{suffix}.ev",
        recommendations=f"test.{suffix}.rec",
        dead_letters=f"test.{suffix}.dlq",
        partitions=6,
    )
    expected = {topics.events: 6, topics.recommendations: 6, topics.dead_letters: 4}
    assert ensure_topics(embedded_stack.kafka, topics) == expected
    assert ensure_topics(embedded_stack.kafka, topics) == expected
    # fewer configured than existing is fine; more cannot be satisfied
    assert ensure_topics(embedded_stack.kafka, topics.model_copy(update={"partitions": 2})) == expected
    with pytest.raises(ConfigError, match="fewer partitions than configured"):
        ensure_topics(embedded_stack.kafka, topics.model_copy(update={"partitions": 8}))


def test_unique_topics_fixture_creates_four_partitions(
    embedded_stack: EmbeddedStack, unique_topics: TopicSettings
) -> None:
    counts = ensure_topics(embedded_stack.kafka, unique_topics)
    assert counts[unique_topics.events] == 4
    assert counts[unique_topics.recommendations] == 4


def test_stopping_a_stack_leaves_no_process_behind() -> None:
    stack = EmbeddedStack()
    with stack:
        pids = stack.pids
        assert len(pids) == 2 and all(_pid_alive(p) for p in pids)
        run_dir = stack.run_dir
    assert not any(_pid_alive(p) for p in pids)
    assert not run_dir.exists()
    stack.stop()  # idempotent


def test_redis_that_dies_at_start_reports_its_log(tmp_path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind((LOOPBACK, port))
        taken.listen()
        server = RedisServer(tmp_path, port=port, startup_timeout_s=5)
        with pytest.raises(StackError, match="(?s)exited at start.*last lines"):
            server.start()
    assert not server.running


def test_persistent_redis_keeps_data_across_a_kill(tmp_path, redis_prefix: str) -> None:
    first = RedisServer(tmp_path / "a", persistence=True, data_dir=tmp_path / "data", password="s3cret")
    with first:
        client = first.client()
        client.set(f"{redis_prefix}:k", b"v")
        client.close()
        first.kill()
    second = RedisServer(
        tmp_path / "b", port=first.port, persistence=True, data_dir=tmp_path / "data", password="s3cret"
    )
    with second:
        client = second.client()
        assert client.get(f"{redis_prefix}:k") == b"v"
        client.close()
