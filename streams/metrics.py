"""Every Prometheus metric segue exports, built against a registry passed in.

Units: seconds for every duration (``*_seconds`` histograms), counts in ``*_total`` counters. Labels never
carry user or session ids. Latency buckets are fine-grained below 100 ms because the budget for
event -> fresh recommendations is tens of milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

LATENCY_BUCKETS: Final = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
    0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
FAST_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
    0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
BATCH_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


@dataclass(frozen=True)
class Metrics:
    """The metric objects; create once per process with ``Metrics.create(registry)``."""

    registry: CollectorRegistry
    events: Counter
    dead_letters: Counter
    event_to_recs: Histogram
    rescore: Histogram
    batch_size: Histogram
    budget_misses: Counter
    budget: Gauge
    model_info: Gauge
    redis_seconds: Histogram
    redis_errors: Counter
    recommendations: Counter
    api_requests: Counter
    api_seconds: Histogram
    assigned_partitions: Gauge
    consumer_lag: Gauge

    @staticmethod
    def create(registry: CollectorRegistry | None = None) -> Metrics:
        if registry is None:
            # A fresh registry for this process, with the standard process_* and python_info metrics.
            reg = CollectorRegistry()
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
        else:
            reg = registry
        return Metrics(
            registry=reg,
            events=Counter(
                "segue_events",
                "Events consumed, by type and outcome (applied, duplicate, dead_letter).",
                ["type", "outcome"],
                registry=reg,
            ),
            dead_letters=Counter(
                "segue_dead_letters",
                "Events sent to the dead-letter topic, by reason.",
                ["reason"],
                registry=reg,
            ),
            event_to_recs=Histogram(
                "segue_event_to_recommendations_seconds",
                "From an event's broker timestamp to its user's fresh recommendations being published.",
                buckets=LATENCY_BUCKETS,
                registry=reg,
            ),
            rescore=Histogram(
                "segue_rescore_seconds",
                "Time to retrieve and score candidates for one batch of users.",
                ["provider"],
                buckets=FAST_BUCKETS,
                registry=reg,
            ),
            batch_size=Histogram(
                "segue_batch_size_events",
                "Events per micro-batch taken by the worker.",
                buckets=BATCH_BUCKETS,
                registry=reg,
            ),
            budget_misses=Counter(
                "segue_budget_misses",
                "Budget misses by stage: end_to_end (an event's recommendations published after the budget), "
                "rescore (the model call overran its slot and the cheap ranking was served).",
                ["stage"],
                registry=reg,
            ),
            budget=Gauge("segue_budget_seconds", "The configured event -> recommendations budget.", registry=reg),
            model_info=Gauge(
                "segue_model_info",
                "The model being served (value 1) and the execution provider in use.",
                ["model_version", "provider"],
                registry=reg,
            ),
            redis_seconds=Histogram(
                "segue_redis_seconds",
                "Redis round trips, by operation.",
                ["op"],
                buckets=FAST_BUCKETS,
                registry=reg,
            ),
            redis_errors=Counter("segue_redis_errors", "Failed Redis round trips, by operation.", ["op"], registry=reg),
            recommendations=Counter(
                "segue_recommendations",
                "Recommendation lists produced, by kind (model, fallback).",
                ["kind"],
                registry=reg,
            ),
            api_requests=Counter(
                "segue_api_requests",
                "HTTP API requests, by route and status.",
                ["route", "status"],
                registry=reg,
            ),
            api_seconds=Histogram(
                "segue_api_request_seconds",
                "HTTP API request duration, by route.",
                ["route"],
                buckets=FAST_BUCKETS,
                registry=reg,
            ),
            assigned_partitions=Gauge(
                "segue_assigned_partitions",
                "Input partitions this worker owns (0 until the group assigns).",
                registry=reg,
            ),
            consumer_lag=Gauge(
                "segue_consumer_lag_events",
                "Events not yet processed, per input partition (high watermark minus next offset).",
                ["partition"],
                registry=reg,
            ),
        )
