"""Every dashboard query and every rule has data on a real Prometheus scraping the real worker and API.

The test starts its own ``prometheus`` (Debian package, installed by ``bash infra/prometheus/install.sh``)
on a free loopback port with a temporary config and TSDB, scraping every second and evaluating the repo's
rule files every second; it never touches a system Prometheus on :9090. It fails (does not skip) when
Prometheus is not installed.

How each kind of expression is checked, via ``/api/v1/query``:

* dashboard panel targets and recording rules: the expression itself must return at least one series;
* alert rules: the full expression must evaluate without error (it is normally empty: nothing fires while
  the system is healthy), and each of its signals must return data: ``infra.promql.signals`` drops the
  thresholds (``up == 0`` -> ``up``; ``a > 0.14 and b > 0.14`` -> ``a``, ``b``; ``absent(x)`` -> ``x``);
* ``/api/v1/rules`` reports every rule healthy (no evaluation error).

It also renders each dashboard as a PNG from ``/api/v1/query_range`` into ``$SEGUE_DASHBOARD_PNG_DIR``
(when set) or the test's temp dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
from kafka import KafkaProducer

from infra.dashboards import PROMETHEUS_CONFIG, Query, all_queries, expand, rule_files
from infra.prom_api import PrometheusClient
from infra.prometheus_server import PrometheusServer, find_binary
from infra.promql import signals
from infra.render_dashboards import render_all
from infra.services import ApiService
from models_onnx.bundle import read_manifest
from models_onnx.generate import by_time, world_from_manifest
from serving.settings import ApiSettings
from streams.errors import StackError
from streams.sdk import EventProducer
from streams.settings import RedisSettings, ScoringSettings
from tests.integration.helpers import eventually, start_worker, worker_settings

EVENTS_PER_S = 120
LOAD_MIN_S = 20.0  # at least this much load in the pictures
INVALID = [
    b'{"type": "play", "event_id": ',
    json.dumps({"type": "pause", "event_id": "bad-type", "user_id": "u", "track_id": "t", "ts_ms": 1}).encode(),
    json.dumps({"type": "play", "event_id": "bad-user", "track_id": "t", "ts_ms": 1, "played_ms": 1}).encode(),
]


def _installed(name: str) -> str:
    try:
        return find_binary(name)
    except StackError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_promtool_accepts_the_rules_and_the_config() -> None:
    promtool = _installed("promtool")
    for args in (["check", "rules", *map(str, rule_files())], ["check", "config", str(PROMETHEUS_CONFIG)]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


class Load:
    """Simulated listeners' events (plus a few invalid ones) at a steady rate, and API reads, in a thread."""

    def __init__(self, bootstrap: str, topic: str, events: list[dict[str, object]], api_url: str) -> None:
        self.producer = EventProducer.connect(bootstrap, topic=topic)
        self.raw = KafkaProducer(bootstrap_servers=bootstrap)
        self.topic = topic
        self.events = events
        self.api_url = api_url
        self.sent = 0
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def __enter__(self) -> Load:
        for value in INVALID:
            self.raw.send(self.topic, key=b"user-bad", value=value)
        self.raw.flush()
        self.started = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        users = sorted({str(e["user_id"]) for e in self.events})
        with httpx.Client(base_url=self.api_url, timeout=5.0) as api:
            rounds = 0
            while not self._stop.is_set() and self.sent < len(self.events):
                due = int((time.monotonic() - self.started) * EVENTS_PER_S)
                while self.sent < min(due, len(self.events)):
                    self.producer.send(self.events[self.sent])
                    self.sent += 1
                rounds += 1
                if rounds % 20 == 0:  # a dead letter every ~2 s
                    self.raw.send(self.topic, key=b"user-bad", value=INVALID[rounds // 20 % len(INVALID)])
                self.producer.flush()
                api.get(f"/v1/users/{users[self.sent % len(users)]}/recommendations")
                self._stop.wait(0.1)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.producer.close()
        self.raw.close()


@pytest.fixture
def prometheus_installed() -> None:
    """Fail at once (before the stack starts) when the prometheus binary is missing."""
    _installed("prometheus")


@pytest.fixture
def api(embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path) -> Iterator[ApiService]:
    settings = ApiSettings(
        kafka=embedded_stack.kafka,
        redis=RedisSettings(url=embedded_stack.redis.url, key_prefix=redis_prefix),
        topics=unique_topics,
        scoring=ScoringSettings(model_dir=quick_bundle, device="cpu"),
    )
    service = ApiService("api", tmp_path, settings)
    service.start()
    try:
        service.wait_ready(timeout_s=90)
        yield service
    finally:
        service.stop()


def _png_dir(tmp_path: Path) -> Path:
    configured = os.environ.get("SEGUE_DASHBOARD_PNG_DIR")
    return Path(configured) if configured else tmp_path / "dashboards"


def _empty(client: PrometheusClient, queries: list[tuple[Query, str]]) -> list[tuple[Query, str]]:
    """The (query, expression) pairs whose expression returns no series now."""
    return [(q, expr) for q, expr in queries if not client.query(expand(expr))]


def test_every_dashboard_query_and_rule_has_data(
    prometheus_installed, embedded_stack, unique_topics, redis_prefix, quick_bundle, api, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    world = world_from_manifest(read_manifest(quick_bundle))
    events = by_time(world.simulate_sessions(60, 2, 40, np.random.default_rng(3)))
    assert {"play", "skip", "like"} <= {str(e["type"]) for e in events}

    settings = worker_settings(embedded_stack, unique_topics, redis_prefix, quick_bundle, tmp_path)
    worker = start_worker(settings, tmp_path)
    targets = {
        "segue-worker": [urlparse(worker.metrics_url).netloc],
        "segue-api": [urlparse(api.url).netloc],
    }
    prometheus = PrometheusServer(tmp_path / "prometheus", targets, rule_files())
    try:
        prometheus.start()
        client = prometheus.client
        with Load(embedded_stack.kafka.bootstrap_servers, unique_topics.events, events, api.url) as load:
            started = time.time()
            # Scraped and flowing: both targets up, events applied and dead letters counted.
            eventually(lambda: len(client.query("up == 1")) == 2, timeout_s=30, interval_s=0.5)
            eventually(lambda: client.query('segue_events_total{outcome="applied"} > 0'), timeout_s=60, interval_s=0.5)
            eventually(lambda: client.query("segue_dead_letters_total"), timeout_s=30, interval_s=0.5)

            queries = all_queries()
            checks = [(q, q.expr) for q in queries if q.kind != "alert"]
            checks += [(q, s) for q in queries if q.kind == "alert" for s in signals(q.expr)]
            deadline = time.monotonic() + 45
            pending = _empty(client, checks)
            while pending and time.monotonic() < deadline:
                time.sleep(1)
                pending = _empty(client, pending)
            assert not pending, "no data for:\n" + "\n".join(f"  {q.source}: {expr}" for q, expr in pending)
            for q in queries:
                if q.kind == "alert":
                    client.query(q.expr)  # raises StackError on a PromQL error

            unhealthy = [(r["name"], r.get("lastError")) for r in client.rules() if r.get("health") != "ok"]
            assert not unhealthy, unhealthy
            time.sleep(max(2.0, LOAD_MIN_S - (time.monotonic() - load.started)))
            assert load.sent > 0
            print(f"sent {load.sent} events in {time.monotonic() - load.started:.1f} s")

        # Grafana would pick a $__rate_interval of about 4 scrape intervals for so short a range.
        pictures = render_all(client, _png_dir(tmp_path), started, time.time(), rate_interval="5s")
        print("dashboard pictures:", *pictures, sep="\n  ")
        assert pictures and all(p.stat().st_size > 10_000 for p in pictures)
    finally:
        prometheus.stop()
        worker.stop()
