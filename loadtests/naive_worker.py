"""The naive worker: a Faust agent that handles one event at a time (the comparator of the batched worker).

    SEGUE_KAFKA__BOOTSTRAP_SERVERS=... SEGUE_REDIS__URL=... python -m loadtests.naive_worker

Per event: decode, one Redis read of the user's state, ``streams.session.apply_event``, one Redis
compare-and-set write, one retrieval + ONNX call for this user alone (``serving.rescore.Rescorer``), one
Redis write of the recommendations, one send to the recommendations topic. The same settings, store,
catalog, retrieval, model and metrics as ``streams.worker``, so the difference measured is batching.
Bad events are counted as dead letters and skipped (not published: this is a benchmark, not a deployable).
"""

from __future__ import annotations

import logging
import sys
import time

import faust
from prometheus_client import start_http_server

from serving.rescore import Rescorer, to_record
from serving.retrieval import ExactRetriever
from streams.app import create_app
from streams.errors import InvalidEvent
from streams.records import decode_message, encode_record, event_type
from streams.session import SessionState, apply_event, stream_position
from streams.settings import WorkerSettings
from streams.stores import RedisStore
from streams.worker import Runtime, build_runtime, dynamics_from

log = logging.getLogger("segue.naive-worker")


def build_naive_app(rt: Runtime) -> faust.App:
    """The Faust app with the one-event-at-a-time agent."""
    s = rt.settings
    app = create_app(s)
    events = app.topic(s.topics.events, key_type=bytes, value_type=bytes, partitions=s.topics.partitions)
    recs_topic = app.topic(s.topics.recommendations, key_type=bytes, value_type=bytes)
    catalog, m = rt.catalog, rt.metrics
    store = RedisStore.connect(s.redis, m)
    retriever = ExactRetriever(catalog.embeddings)
    rescorer = Rescorer(catalog.embeddings, retriever, rt.scorer, s.scoring.candidates, s.scoring.recommendations)
    dyn = dynamics_from(s)
    items = catalog.embeddings

    @app.agent(events, name="segue.naive-events")
    async def handle(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            ts_ms = int(msg.timestamp * 1000)
            for index_in_message, (_, decoded) in enumerate(decode_message(msg.value)):
                await handle_one(decoded, msg, ts_ms, stream_position(msg.offset, index_in_message))

    async def handle_one(decoded: object, msg: object, ts_ms: int, position: int) -> None:
        """One event, the tutorial way: read the state, apply, write, rescore, write, send."""
        try:
            if isinstance(decoded, InvalidEvent):
                raise decoded
            ev = decoded
            index = catalog.lookup(ev.track_id)
            if index is None:
                raise InvalidEvent("unknown_track", ev.track_id)
        except InvalidEvent as exc:
            m.events.labels("invalid", "dead_letter").inc()
            m.dead_letters.labels(exc.reason).inc()
            return
        (before,) = await store.get_states([ev.user_id])
        state = before if before is not None else SessionState.empty(catalog.dim)
        after = apply_event(state, ev, index, items[index], dyn, msg.partition, position)
        if after is state:
            m.events.labels(event_type(ev), "duplicate").inc()
            return
        expected = {ev.user_id: before.version if before is not None else None}
        await store.put_states({ev.user_id: after}, expected)
        started = time.perf_counter()
        (ranking,) = rescorer.rank([after], [after.last_ts_ms])
        m.rescore.labels(rt.scorer.provider).observe(time.perf_counter() - started)
        rec = to_record(
            ev.user_id,
            ranking,
            catalog.track_ids,
            catalog.model_version,
            rt.scorer.provider,
            generated_ms=time.time_ns() // 1_000_000,
            session_id=after.session_id,
            event_id=ev.event_id,
            event_ms=ts_ms,
        )
        await store.put_recommendations([rec])
        await recs_topic.send(key=ev.user_id.encode(), value=encode_record(rec))
        m.events.labels(event_type(ev), "applied").inc()
        m.event_to_recs.observe(max(0.0, time.time() - ts_ms / 1000.0))

    @app.on_partitions_assigned.connect
    async def _assigned(sender: object, assigned: set, **kwargs: object) -> None:  # noqa: ARG001
        m.assigned_partitions.set(sum(1 for tp in assigned if tp.topic == s.topics.events))

    return app


def main() -> int:
    settings = WorkerSettings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rt = build_runtime(settings)
    server, _ = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=rt.metrics.registry)
    worker = faust.Worker(build_naive_app(rt), loglevel="INFO", quiet=True, override_logging=False)
    try:
        worker.execute_from_commandline()
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
