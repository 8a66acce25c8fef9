"""``loadtests.idle_cost`` on the embedded stack: a real idle worker's CPU is measured (no speed assertions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.stack import EmbeddedStack
from loadtests.idle_cost import measure
from streams.settings import TopicSettings
from tests.integration.helpers import worker_settings

pytestmark = pytest.mark.timeout(180)


def test_idle_worker_cpu_is_measured_per_setting(
    embedded_stack: EmbeddedStack, unique_topics: TopicSettings, redis_prefix: str, quick_bundle: Path, tmp_path: Path
) -> None:
    base = worker_settings(embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path)
    cost = measure(base, fetch_wait_ms=20, within_s=0.01, seconds=1.5, run_dir=tmp_path, settle_s=0.5)
    assert (cost.fetch_wait_ms, cost.within_s) == (20, 0.01)
    assert cost.seconds >= 1.5
    # a live worker polls even when idle, and one process cannot use more than the machine's cores
    assert 0.0 < cost.share < 4.0
