"""What the benchmark watches while it runs: workers' /metrics, process CPU and RSS, Redis memory.

``Sampler`` polls at a fixed interval in a thread and keeps one ``Sample`` per tick; everything over time
in the report (throughput, histogram latency per interval, lag, CPU) is computed from these samples.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import psutil
import redis

from infra.prom_text import samples

EVENTS: str = "segue_events_total"
LAG: str = "segue_consumer_lag_events"
E2E: str = "segue_event_to_recommendations_seconds"
RESCORE: str = "segue_rescore_seconds"


log = logging.getLogger(__name__)


def scrape(url: str, timeout_s: float = 2.0) -> str:
    """The Prometheus text at ``url`` ("" when it does not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 - loopback only
            return r.read().decode()
    except OSError:
        return ""


def buckets(text: str, histogram: str) -> dict[float, float]:
    """Cumulative bucket counts ``{upper bound: count}`` of a histogram, summed over label sets."""
    out: dict[float, float] = {}
    for labels, value in samples(text, histogram + "_bucket"):
        le = float(labels["le"])
        out[le] = out.get(le, 0.0) + value
    return out


@dataclass(frozen=True)
class WorkerView:
    """The figures of one scrape of one worker."""

    events: float  # segue_events_total over all types and outcomes
    lag: float  # segue_consumer_lag_events summed over partitions
    e2e: dict[float, float]
    rescore: dict[float, float]
    provider: str
    recs_model: float = 0.0  # recommendation lists ranked by the model
    recs_fallback: float = 0.0  # ... by retrieval only (model call over its timeout, or failed)
    batches: float = 0.0
    batch_events: float = 0.0

    @staticmethod
    def parse(text: str) -> WorkerView:
        provider = next((lab.get("provider", "") for lab, _ in samples(text, "segue_model_info")), "")
        return WorkerView(
            events=sum(v for _, v in samples(text, EVENTS)),
            lag=sum(v for _, v in samples(text, LAG)),
            e2e=buckets(text, E2E),
            rescore=buckets(text, RESCORE),
            provider=provider,
            recs_model=sum(v for lab, v in samples(text, "segue_recommendations_total") if lab.get("kind") == "model"),
            recs_fallback=sum(
                v for lab, v in samples(text, "segue_recommendations_total") if lab.get("kind") == "fallback"
            ),
            batches=sum(v for _, v in samples(text, "segue_batch_size_events_count")),
            batch_events=sum(v for _, v in samples(text, "segue_batch_size_events_sum")),
        )


def merge_buckets(views: list[dict[float, float]]) -> dict[float, float]:
    out: dict[float, float] = {}
    for v in views:
        for le, c in v.items():
            out[le] = out.get(le, 0.0) + c
    return out


@dataclass(frozen=True)
class ProcStat:
    cpu_s: float  # user + system CPU seconds so far
    rss_bytes: int


def proc_stat(pid: int) -> ProcStat | None:
    """CPU seconds and RSS of ``pid`` (None once it is gone)."""
    try:
        p = psutil.Process(pid)
        t = p.cpu_times()
        return ProcStat(t.user + t.system, p.memory_info().rss)
    except psutil.Error:
        return None


def redis_used_memory(url: str) -> int:
    """``used_memory`` from ``INFO memory``, bytes."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


@dataclass
class Sample:
    t: float  # seconds since the sampler started
    produced: int
    workers: list[WorkerView]
    procs: dict[str, ProcStat | None]
    recs_seen: int

    @property
    def events(self) -> float:
        return sum(w.events for w in self.workers)

    @property
    def lag(self) -> float:
        return sum(w.lag for w in self.workers)


@dataclass
class Sampler:
    """Polls ``metrics_urls``, the processes in ``pids`` (name -> pid, read at every tick) and two counters."""

    metrics_urls: list[str]
    pids: Mapping[str, int | None]
    produced: Callable[[], int]
    recs_seen: Callable[[], int]
    interval_s: float = 0.5
    rows: list[Sample] = field(default_factory=list)
    errors: int = 0  # samples skipped because a scrape or a process probe failed

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
        self._t0 = time.monotonic()

    def start(self) -> Sampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def tick(self) -> Sample:
        views = [WorkerView.parse(scrape(u)) for u in self.metrics_urls]
        procs = {name: proc_stat(pid) if pid else None for name, pid in self.pids.items()}
        row = Sample(time.monotonic() - self._t0, self.produced(), views, procs, self.recs_seen())
        self.rows.append(row)
        return row

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - a missed scrape (a busy machine) must not end the sampling
                self.errors += 1
                log.warning("sample skipped: %s", exc)
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def latest(self) -> Sample | None:
        return self.rows[-1] if self.rows else None

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self.tick()
        except Exception as exc:  # noqa: BLE001
            self.errors += 1
            log.warning("last sample skipped: %s", exc)
        return self.rows
