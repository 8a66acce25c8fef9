"""The fault suite: crashes, a lost group member and a Redis outage during a replay, against the real
embedded broker and Redis, each ending with every user's state compared to an offline recomputation.

    python -m loadtests.faults                      # the long run: 100,000 events, 5,000 users, 5 kills
    python -m loadtests.faults --scenario redis --events 20000 --users 1000

Each scenario prints one line of figures: events, users, kills, lost, double-applied, dead letters.
The test suite runs short variants (tests/integration/test_faults.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from infra.redis_server import RedisServer
from infra.services import WorkerService
from infra.stack import EmbeddedStack
from loadtests.oracle import Comparison, compare, expected_states
from models_onnx.bundle import read_manifest
from models_onnx.generate import by_time, world_from_manifest
from serving.catalog import Catalog
from streams.settings import DEFAULT_MODEL_DIR, RedisSettings, ScoringSettings, TopicSettings, WorkerSettings
from streams.stores import RedisStore
from streams.topics import ensure_topics


@dataclass(frozen=True)
class FaultReport:
    """The figures of one scenario."""

    scenario: str
    kills: int
    comparison: Comparison
    dead_letters: int
    seconds: float
    notes: str = ""

    def line(self) -> str:
        c = self.comparison
        return (
            f"{self.scenario}: events={c.events} users={c.users} kills={self.kills} lost={c.lost} "
            f"double_applied={c.double_applied} mismatched={c.mismatched} dead_letters={self.dead_letters} "
            f"seconds={self.seconds:.1f}{' ' + self.notes if self.notes else ''}"
        )


def replay_events(bundle: Path, n_events: int, n_users: int, seed: int) -> list[dict[str, Any]]:
    """About ``n_events`` generated events of ``n_users`` listeners, merged in time order."""
    world = world_from_manifest(read_manifest(bundle))
    per_user = max(1, round(n_events / n_users))
    sessions = max(1, per_user // 10)
    events = world.simulate_sessions(n_users, sessions, max(1, per_user // sessions), np.random.default_rng(seed))
    return by_time(events)


IN_FLIGHT_SHARE = 0.03  # of the replay, sent past a fault's point before the fault lands


class FaultRun:
    """One scenario's world: topics and keys of its own on a stack, the events and their expected result."""

    def __init__(self, stack: EmbeddedStack, bundle: Path, run_dir: Path, events: list[dict[str, Any]]) -> None:
        self.stack = stack
        self.bundle = bundle
        self.run_dir = run_dir
        self.events = events
        suffix = uuid.uuid4().hex[:10]
        self.topics = TopicSettings(
            events=f"faults.{suffix}.events",
            recommendations=f"faults.{suffix}.recommendations",
            dead_letters=f"faults.{suffix}.events.dlq",
            partitions=8,
        )
        ensure_topics(stack.kafka, self.topics)
        self.prefix = f"faults:{suffix}"
        self.app_id = f"segue-faults-{suffix}"
        self.expected = expected_states(Catalog.load(bundle), events)
        self.users = sorted(self.expected)
        self._workers = 0

    def redis_settings(self) -> RedisSettings:
        return RedisSettings(url=self.stack.redis.url, key_prefix=self.prefix, socket_timeout_s=1.0)

    def worker(self, **scoring: Any) -> WorkerService:
        """A started, ready worker of this run's consumer group."""
        self._workers += 1
        settings = WorkerSettings(
            app_id=self.app_id,
            kafka=self.stack.kafka,
            redis=self.redis_settings(),
            topics=self.topics,
            scoring=ScoringSettings(model_dir=self.bundle, device="cpu", **scoring),
            data_dir=self.run_dir / f"worker-{self._workers}",
        )
        w = WorkerService(f"worker-{self._workers}", self.run_dir, settings)
        w.start()
        w.wait_ready(timeout_s=120)
        return w

    def produce_in_background(self, holds: Sequence[tuple[int, threading.Event]] = ()) -> threading.Thread:
        """Send every event (keyed by user) from a thread; returns the running thread.

        Each hold ``(index, released)`` stops the replay before event ``index`` until ``released`` is set, so
        a fault can be made to land mid-stream however fast the worker drains what was sent.
        """
        pending = sorted(holds, key=lambda h: h[0])

        def send() -> None:
            producer = KafkaProducer(bootstrap_servers=self.stack.kafka.servers, linger_ms=20, acks=1)
            for i, e in enumerate(self.events):
                while pending and i >= pending[0][0]:
                    producer.flush()
                    pending.pop(0)[1].wait(timeout=600)
                producer.send(self.topics.events, key=e["user_id"].encode(), value=msgspec.json.encode(e))
            producer.flush()
            producer.close()

        thread = threading.Thread(target=send, name="replay", daemon=True)
        thread.start()
        return thread

    def hold_after(self, share: float) -> tuple[int, threading.Event]:
        """A hold a little past ``share`` of the replay: the events up to it are sent, with some in flight
        when the fault lands, and the rest wait for the fault."""
        n = len(self.events)
        return min(n - 1, int(np.ceil((share + IN_FLIGHT_SHARE) * n))), threading.Event()

    def applied(self) -> int:
        """Events applied so far, from the state versions in Redis (one pipelined round trip)."""
        client = redis.Redis.from_url(self.stack.redis.url, socket_timeout=2)
        try:
            pipe = client.pipeline(transaction=False)
            store = RedisStore.connect(self.redis_settings())
            for u in self.users:
                pipe.getrange(store.user_key(u), 0, 7)  # the state version (layout 2)
            return sum(int.from_bytes(v, "big") for v in pipe.execute() if v)
        except redis.RedisError:
            return -1
        finally:
            client.close()

    @property
    def total(self) -> int:
        return sum(s.version for s in self.expected.values())

    def wait_applied(self, at_least: float, timeout_s: float) -> int:
        """Wait until ``at_least`` events are applied (or the timeout); return how many are."""
        deadline = time.monotonic() + timeout_s
        applied = self.applied()
        while applied < at_least and time.monotonic() < deadline:
            time.sleep(0.2)
            applied = self.applied()
        return applied

    def wait_done(self, timeout_s: float) -> None:
        self.wait_applied(self.total, timeout_s)

    def dead_letters(self) -> int:
        """Messages on this run's dead-letter topic."""
        consumer = KafkaConsumer(bootstrap_servers=self.stack.kafka.servers, consumer_timeout_ms=1500)
        try:
            consumer.assign([TopicPartition(self.topics.dead_letters, p) for p in range(4)])
            consumer.seek_to_beginning()
            return sum(1 for _ in consumer)
        finally:
            consumer.close()

    def comparison(self) -> Comparison:
        async def read() -> dict:
            store = RedisStore.connect(self.redis_settings())
            try:
                out: dict = {}
                for i in range(0, len(self.users), 1000):
                    chunk = self.users[i : i + 1000]
                    out.update(zip(chunk, await store.get_states(chunk), strict=True))
                return out
            finally:
                await store.close()

        return compare(self.expected, asyncio.run(read()))


def kill_restart(run: FaultRun, kills: int, rng: np.random.Generator, timeout_s: float) -> FaultReport:
    """kill -9 the worker ``kills`` times at random points of the replay (after a random share of the events
    is applied); a new worker takes over each time."""
    started = time.monotonic()
    worker = run.worker()
    shares = sorted(rng.uniform(0.05, 0.95, size=kills))
    holds = [run.hold_after(s) for s in shares]
    producer = run.produce_in_background(holds)
    at: list[int] = []
    try:
        for share, (_, released) in zip(shares, holds, strict=True):
            at.append(run.wait_applied(share * run.total, timeout_s))
            worker.kill()
            released.set()
            worker = run.worker()
        producer.join()
        run.wait_done(timeout_s)
    finally:
        worker.stop()
    notes = "killed_after_applied=" + ",".join(map(str, at))
    return FaultReport(
        "kill-9 restarts", kills, run.comparison(), run.dead_letters(), time.monotonic() - started, notes
    )


def lose_a_member(run: FaultRun, rng: np.random.Generator, timeout_s: float) -> FaultReport:
    """Two workers share the partitions; one is killed mid-stream and the other takes its partitions."""
    started = time.monotonic()
    a, b = run.worker(), run.worker()
    share = float(rng.uniform(0.2, 0.8))
    index, released = run.hold_after(share)
    producer = run.produce_in_background([(index, released)])
    try:
        at = run.wait_applied(share * run.total, timeout_s)
        a.kill()
        released.set()
        producer.join()
        run.wait_done(timeout_s)
    finally:
        a.stop()
        b.stop()
    return FaultReport(
        "two workers, one killed",
        1,
        run.comparison(),
        run.dead_letters(),
        time.monotonic() - started,
        f"killed_after_applied={at}",
    )


def redis_outage(run: FaultRun, outage_s: float, timeout_s: float) -> FaultReport:
    """Redis (persistent) is stopped for ``outage_s`` during the replay and started again on its port."""
    server: RedisServer = run.stack.redis_server
    if not server.persistence:
        raise ValueError("the Redis outage scenario needs a stack with redis_persistence=True")
    started = time.monotonic()
    worker = run.worker()
    index, released = run.hold_after(0.3)
    producer = run.produce_in_background([(index, released)])
    try:
        at = run.wait_applied(0.3 * run.total, timeout_s)
        server.stop()
        released.set()
        time.sleep(outage_s)
        restarted = RedisServer(server.run_dir, port=server.port, persistence=True, data_dir=server.data_dir)
        restarted.start()
        run.stack.redis_server = restarted
        producer.join()
        run.wait_done(timeout_s)
        text = worker.metrics()
    finally:
        worker.stop()
    errors = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("segue_redis_errors_total{"))
    return FaultReport(
        f"redis stopped {outage_s:.0f} s",
        0,
        run.comparison(),
        run.dead_letters(),
        time.monotonic() - started,
        notes=f"stopped_after_applied={at} redis_errors_seen_by_worker={errors:.0f}",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segue-faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["all", "kill", "rebalance", "redis"], default="all")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--outage-s", type=float, default=10.0)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--run-dir", type=Path, default=Path(".segue/faults"))
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    events = replay_events(args.model_dir, args.events, args.users, args.seed)
    reports = []
    todo = ["kill", "rebalance", "redis"] if args.scenario == "all" else [args.scenario]
    with EmbeddedStack(args.run_dir.resolve(), redis_persistence=True) as stack:
        for name in todo:
            run = FaultRun(stack, args.model_dir.resolve(), args.run_dir.resolve(), events)
            if name == "kill":
                report = kill_restart(run, args.kills, rng, args.timeout_s)
            elif name == "rebalance":
                report = lose_a_member(run, rng, args.timeout_s)
            else:
                report = redis_outage(run, args.outage_s, args.timeout_s)
            print(report.line(), flush=True)
            reports.append(report)
    return 0 if all(r.comparison.exact for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
