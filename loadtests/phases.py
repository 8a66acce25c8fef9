"""The benchmark's phases on one set of servers: the worker(s), the ceiling, the naive worker.

Each phase returns plain figures (dicts) for ``loadtests.report``; ``loadtests.bench`` runs them in order.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tqdm import tqdm

from infra.services import WorkerService
from loadtests import figures
from loadtests.freshness import FreshnessReader
from loadtests.generator import Generator, encode, schedule
from loadtests.probes import Sampler, redis_used_memory
from loadtests.profiling import Profiler
from loadtests.sources import Replay
from streams.settings import KafkaSettings, RedisSettings, ScoringSettings, TopicSettings, WorkerSettings
from streams.topics import ensure_topics


class NaiveWorkerService(WorkerService):
    """``python -m loadtests.naive_worker`` as a child process, configured like the worker."""

    module = "loadtests.naive_worker"


class Bench:
    """One benchmark's servers, topics and key prefix."""

    def __init__(self, args: argparse.Namespace, kafka: KafkaSettings, redis: RedisSettings, run_dir: Path) -> None:
        self.args = args
        self.kafka = kafka
        self.redis = redis
        self.run_dir = run_dir
        self.suffix = uuid.uuid4().hex[:10]
        self.topics = TopicSettings(
            events=f"bench.{self.suffix}.events",
            recommendations=f"bench.{self.suffix}.recommendations",
            dead_letters=f"bench.{self.suffix}.events.dlq",
            partitions=args.partitions,
        )
        ensure_topics(kafka, self.topics)
        self.pids: dict[str, int | None] = {"bench": os.getpid()}

    def settings(self, name: str, topics: TopicSettings, prefix: str) -> WorkerSettings:
        scoring: dict[str, Any] = {"model_dir": self.args.model_dir.resolve(), "candidates": self.args.candidates}
        if self.args.rescore_timeout_ms:
            scoring["rescore_timeout_ms"] = self.args.rescore_timeout_ms
        extra = {"batch_within_s": self.args.batch_within_s} if self.args.batch_within_s else {}
        return WorkerSettings(
            **extra,
            app_id=f"segue-bench-{name}-{self.suffix}",
            kafka=self.kafka,
            redis=self.redis.model_copy(update={"key_prefix": prefix}),
            topics=topics,
            scoring=ScoringSettings(**scoring),
            data_dir=self.run_dir / f"{name}-data",
        )

    def start(self, services: list[WorkerService]) -> list[WorkerService]:
        for s in services:
            s.start()
        for s in services:
            s.wait_ready(timeout_s=120)
            self.pids[s.process.name] = s.process.pid
        return services


def wait_for(sampler: Sampler, target: int, timeout_s: float, desc: str, done: Any = None) -> None:
    deadline = time.monotonic() + timeout_s
    with tqdm(total=target, desc=desc, unit="ev", file=sys.stderr, mininterval=1.0) as bar:
        while time.monotonic() < deadline:
            row = sampler.latest()
            n = int(row.events) if row else 0
            bar.update(max(0, min(n, target) - bar.n))
            if n >= target or (done is not None and done()):
                return
            time.sleep(sampler.interval_s)


def worker_phase(b: Bench, replay: Replay) -> dict[str, Any]:
    args = b.args
    n = len(replay.events)
    rate = args.rate
    offsets = schedule(n, rate, replay.replay_ms if args.compress else None)
    payloads = encode(
        replay.events, b.topics.events, args.partitions, offsets, args.events_per_message, args.pack_window_ms / 1000
    )
    mem_before = redis_used_memory(b.redis.url)
    workers = [
        WorkerService(f"worker-{i + 1}", b.run_dir, b.settings("worker", b.topics, f"bench:{b.suffix}"))
        for i in range(args.workers)
    ]
    with ExitStack() as stack:
        for w in workers:
            stack.callback(w.stop)
        b.start(workers)
        reader = FreshnessReader(b.kafka.servers, b.topics.recommendations, args.partitions).start()
        gen = Generator(b.kafka.servers, payloads)
        stack.callback(gen.stop)
        urls = [w.metrics_url for w in workers]
        sampler = Sampler(urls, b.pids, lambda: gen.sent, lambda: reader.seen, interval_s=args.interval_s)
        t0_wall = time.time() * 1000.0
        sampler.start()
        gen.start()
        b.pids["generator"] = gen.pid
        profiler = None
        if args.profile_s > 0:
            profiler = Profiler(workers[0].process.pid, args.profile_s, args.out / "profile-worker.txt")
        wait_for(sampler, n, args.timeout_s, "worker")
        profile = profiler.wait(args.profile_s + 30) if profiler else []
        gen_result = gen.result()
        time.sleep(0.3)  # the last records reach the reader
        rows = sampler.stop()
        fresh = reader.stop()
        b.pids.pop("generator", None)
    mem_after = redis_used_memory(b.redis.url)
    users = len({e["user_id"] for e in replay.events})
    window = figures.active_window(rows, n)
    target = f"{rate:,.0f}/s" if rate else ("replay clock" if args.compress else "as fast as possible")
    provider = next((w.provider for w in rows[-1].workers if w.provider), "")
    return {
        "generator": {
            "sent": gen_result.sent,
            "seconds": gen_result.seconds,
            "rate": gen_result.rate,
            "errors": gen_result.errors,
            "cpu_s": gen_result.cpu_s,
            "target": target,
        },  # fmt: skip
        "provider": provider,
        "profile": {"stages": profile, "error": profiler.error if profiler else None, "seconds": args.profile_s},
        "mean_bytes": payloads.mean_bytes,
        "worker": {
            "events": rows[-1].events,
            "events_per_s": figures.throughput(rows, n),
            "seconds": (window[1].t - window[0].t) if window else None,
            "e2e_hist_ms": figures.hist_quantiles(figures.final_hist(rows, "e2e")),
            "rescore_hist_ms": figures.hist_quantiles(figures.final_hist(rows, "rescore")),
            "e2e_topic_generated_ms": figures.sample_quantiles(fresh[:, 2] - fresh[:, 1]),
            "e2e_topic_received_ms": figures.sample_quantiles(fresh[:, 0] - fresh[:, 1]),
            "recs_records": len(fresh),
            "reader_error": repr(reader.error) if reader.error else None,
            "lag_max": max(r.lag for r in rows),
            "lag_end": rows[-1].lag,
            "processes": figures.process_usage(rows, window),
            **figures.worker_counts(rows[-1]),
        },
        "series": figures.series(rows),
        "freshness_series": figures.freshness_series(fresh, t0_wall),
        "redis_memory": {
            "before": mem_before,
            "after": mem_after,
            "users": users,
            "bytes_per_user": (mem_after - mem_before) / max(1, users),
        },  # fmt: skip
    }


def ceiling_phase(b: Bench, n: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "loadtests.ceiling", "--bootstrap", b.kafka.bootstrap_servers]
    cmd += ["--topic", b.topics.events, "--partitions", str(b.args.partitions), "--events", str(n)]
    print("ceiling: reading and decoding the events topic ...", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=b.args.timeout_s, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def naive_phase(b: Bench, n: int) -> dict[str, Any]:
    args = b.args
    topics = b.topics.model_copy(
        update={
            "recommendations": f"bench.{b.suffix}.naive.recommendations",
            "dead_letters": f"bench.{b.suffix}.naive.dlq",
        }
    )
    ensure_topics(b.kafka, topics)
    naive = NaiveWorkerService("naive-worker", b.run_dir, b.settings("naive", topics, f"bench:{b.suffix}:naive"))
    try:
        b.start([naive])
        pids = {"naive-worker": naive.process.pid}
        sampler = Sampler([naive.metrics_url], pids, lambda: n, lambda: 0, interval_s=args.interval_s).start()
        deadline = time.monotonic() + args.naive_seconds
        wait_for(
            sampler,
            n,
            args.naive_seconds + 5,
            f"naive ({args.naive_seconds:.0f} s)",
            lambda: time.monotonic() > deadline,
        )
        rows = sampler.stop()
    finally:
        naive.stop()
    window = figures.active_window(rows, n)
    return {
        "events": rows[-1].events,
        "events_per_s": figures.throughput(rows, n),
        "seconds": (window[1].t - window[0].t) if window else None,
        "e2e_hist_ms": figures.hist_quantiles(figures.final_hist(rows, "e2e")),
        "rescore_hist_ms": figures.hist_quantiles(figures.final_hist(rows, "rescore")),
        "processes": figures.process_usage(rows, window),
        **figures.worker_counts(rows[-1]),
    }
