"""The Faust agent: micro-batches from the events topic through ``Processor``, results to Kafka.

Bad events never stop the agent (they become dead letters inside ``Processor``). A store outage is retried
with the configured exponential backoff, the batch held until Redis answers, so no event is skipped.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import faust
from faust.types import TP
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from streams.errors import RetryableError
from streams.metrics import Metrics
from streams.pipeline import BatchOutcome, Incoming, Processor
from streams.records import encode_record
from streams.settings import WorkerSettings

log = logging.getLogger(__name__)


def _exit_now(why: str) -> None:
    """Leave at once, without committing anything: the uncommitted batch is redelivered after a restart
    (and applied once, because applying events is idempotent). A Faust agent that merely crashed would be
    restarted past the failed batch."""
    log.critical(why, exc_info=True)
    logging.shutdown()
    os._exit(70)


@dataclass(frozen=True)
class AgentDeps:
    """What the agent needs besides the app."""

    processor: Processor
    metrics: Metrics
    settings: WorkerSettings
    clock_s: Callable[[], float] = time.time
    exit_on_failure: Callable[[str], None] = _exit_now


def to_incoming(event: faust.types.EventT) -> Incoming:
    """The broker message behind a Faust event, as the pipeline's ``Incoming``."""
    m = event.message
    return Incoming(
        value=m.value,
        key=m.key,
        topic=m.topic,
        partition=m.partition,
        offset=m.offset,
        timestamp_ms=int(m.timestamp * 1000),
    )


def register_agents(app: faust.App, deps: AgentDeps) -> faust.types.AgentT:
    """Declare the topics and the event-processing agent on ``app``; return the agent."""
    topics = deps.settings.topics
    events = app.topic(topics.events, key_type=bytes, value_type=bytes, partitions=topics.partitions)
    dead_letters = app.topic(topics.dead_letters, key_type=bytes, value_type=bytes)
    s = deps.settings
    backoff = ExponentialWithJitterBackoff(cap=s.retry_backoff_cap_s, base=s.retry_backoff_base_s)
    retry = Retry(backoff, retries=s.retry_attempts, supported_errors=(RetryableError,))
    budget_s = deps.settings.scoring.budget_ms / 1000.0
    deps.metrics.budget.set(budget_s)

    async def publish(out: BatchOutcome) -> None:
        for dl in out.dead_letters:
            key = dl.key.encode() if dl.key is not None else None
            await dead_letters.send(key=key, value=encode_record(dl))
        if out.dead_letters:
            await app.producer.flush()  # dead letters are durable before their offsets can be committed
        send = app.producer.send  # straight to the client: Faust's per-message topic machinery costs more
        for rec in out.recommendations:
            await send(topics.recommendations, rec.user_id.encode(), encode_record(rec), None, None, None)
        done = deps.clock_s()
        observe, late = deps.metrics.event_to_recs.observe, 0
        for ts_ms in out.applied_ms:
            latency = max(0.0, done - ts_ms / 1000.0)
            observe(latency)
            late += latency > budget_s
        if late:  # one labelled increment per batch, not per event
            deps.metrics.budget_misses.labels("end_to_end").inc(late)

    async def on_store_error(exc: Exception) -> None:
        log.warning("state store unavailable, holding the batch and retrying: %s", exc)

    def record_lag(incoming: list[Incoming]) -> None:
        # The high watermark from fetch responses is right on every broker (end_offsets is not on Tansu).
        last: dict[int, int] = {}
        for msg in incoming:
            last[msg.partition] = max(msg.offset, last.get(msg.partition, -1))
        for partition, offset in last.items():
            highwater = app.consumer.highwater(TP(topics.events, partition))
            if highwater is not None:
                deps.metrics.consumer_lag.labels(str(partition)).set(max(0, highwater - offset - 1))

    @app.agent(events, name="segue.process-events")
    async def process_events(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(deps.settings.batch_max, within=deps.settings.batch_within_s):
            incoming = [to_incoming(e) for e in batch]
            try:
                out = await retry.call_with_retry(partial(deps.processor.process, incoming), on_store_error)
                await publish(out)
            except Exception:  # noqa: BLE001 - anything here means this batch cannot be completed
                deps.exit_on_failure(
                    "giving up on a batch after the configured retries; exiting so that a restart redelivers it"
                )
                raise
            record_lag(incoming)

    return process_events
