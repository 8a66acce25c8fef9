"""Fixtures shared by every test folder.

The embedded stack (one Tansu broker, one Redis server on free loopback ports) is started lazily, once
per session, by the first test that asks for it. Tests isolate themselves with uuid-named topics and
Redis key prefixes, never by restarting services; a test that needs to kill a service starts its own
``EmbeddedStack``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from infra.stack import EmbeddedStack
from models_onnx.generate import SyntheticWorld
from streams.errors import StackError
from streams.settings import TopicSettings
from streams.topics import ensure_topics


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """One broker and one Redis for the whole session; logs stay in pytest's temp dir."""
    stack = EmbeddedStack(tmp_path_factory.mktemp("embedded-stack"))
    try:
        stack.start()
    except StackError as exc:
        pytest.fail(f"the embedded stack did not start: {exc}", pytrace=False)
    yield stack
    stack.stop()


@pytest.fixture
def unique_topics(embedded_stack: EmbeddedStack) -> TopicSettings:
    """Topics with uuid-suffixed names and 4 partitions, already created on the embedded broker."""
    suffix = uuid.uuid4().hex[:12]
    topics = TopicSettings(
        events=f"test.{suffix}.events",
        recommendations=f"test.{suffix}.recommendations",
        dead_letters=f"test.{suffix}.events.dlq",
        partitions=4,
    )
    ensure_topics(embedded_stack.kafka, topics)
    return topics


@pytest.fixture
def redis_prefix() -> str:
    """A Redis key prefix no other test uses."""
    return f"test:{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_client(embedded_stack: EmbeddedStack) -> Iterator[redis.Redis]:
    """A redis-py client (bytes responses) against the embedded Redis; closed after the test."""
    settings = embedded_stack.redis
    password = settings.password.get_secret_value() if settings.password else None
    client = redis.Redis.from_url(settings.url, password=password, socket_timeout=settings.socket_timeout_s)
    yield client
    client.close()


QUICK_SEED = 7


@pytest.fixture(scope="session")
def quick_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle from ``python -m models_onnx.train --quick --seed 7`` (trained once per test session)."""
    from models_onnx.train import main

    out = tmp_path_factory.mktemp("bundle") / "default"
    assert main(["--out", str(out), "--quick", "--seed", str(QUICK_SEED), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def world() -> SyntheticWorld:
    """The default synthetic world of seed 7 (the quick bundle's catalog)."""
    return SyntheticWorld.create(QUICK_SEED)
