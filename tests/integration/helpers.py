"""Shared steps of the integration tests: a real worker process, reading topics, waiting for Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from infra.services import WorkerService
from infra.stack import EmbeddedStack
from streams.records import Recommendations
from streams.settings import RedisSettings, ScoringSettings, TopicSettings, WorkerSettings
from streams.stores import RedisStore


def worker_settings(
    stack: EmbeddedStack, topics: TopicSettings, prefix: str, bundle: Path, run_dir: Path, **scoring: Any
) -> WorkerSettings:
    return WorkerSettings(
        app_id=f"segue-test-{uuid.uuid4().hex[:8]}",
        kafka=stack.kafka,
        redis=RedisSettings(url=stack.redis.url, key_prefix=prefix),
        topics=topics,
        scoring=ScoringSettings(model_dir=bundle, **scoring),
        data_dir=run_dir / "faust",
        batch_within_s=0.005,
    )


def start_worker(settings: WorkerSettings, run_dir: Path, name: str = "worker") -> WorkerService:
    worker = WorkerService(name, run_dir, settings)
    worker.start()
    try:
        worker.wait_ready(timeout_s=90)
    except Exception:
        worker.stop()
        raise
    return worker


def eventually(check: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.05) -> Any:
    """Call ``check`` until it returns something truthy; fail with its last value after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s (last value: {last!r})")


def read_topic(bootstrap: str, topic: str, partitions: int, expected: int, timeout_s: float = 30.0) -> list[Any]:
    """Read ``topic`` from the beginning (no group) until ``expected`` messages or the timeout."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=500)
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    consumer.seek_to_beginning()
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend(records)
    finally:
        consumer.close()
    return out


def latest_recommendations(redis: RedisSettings, users: list[str]) -> dict[str, Recommendations | None]:
    async def go() -> dict[str, Recommendations | None]:
        store = RedisStore.connect(redis)
        try:
            return {u: await store.get_recommendations(u) for u in users}
        finally:
            await store.close()

    return asyncio.run(go())


def states(redis: RedisSettings, users: list[str]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        store = RedisStore.connect(redis)
        try:
            return dict(zip(users, await store.get_states(users), strict=True))
        finally:
            await store.close()

    return asyncio.run(go())
