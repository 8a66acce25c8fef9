"""The producer SDK for player apps: validate, key by user, batch, send.

    from streams.sdk import EventProducer
    with EventProducer.connect("127.0.0.1:9092") as events:
        events.play("user-1", "trk-00042", played_ms=183_000, duration_ms=200_000)
        events.skip("user-1", "trk-00077", played_ms=4_000)
        events.like("user-1", "trk-00042")

Every event is checked against contract v1 with the same validator the worker uses before it leaves the
process: an invalid event raises ``InvalidEvent`` at the call site instead of becoming a dead letter.
Sending is asynchronous and batched by kafka-python (``linger_ms``); ``flush()`` waits for delivery.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from streams.errors import BrokerUnavailable, InvalidEvent
from streams.records import MALFORMED_JSON, MAX_BATCH_EVENTS, Event, decode_event, encode_batch, encode_event
from streams.settings import KafkaSettings, TopicSettings


class EventProducer:
    """Sends validated events to the events topic, keyed by user id."""

    def __init__(self, producer: KafkaProducer, topic: str = TopicSettings().events) -> None:
        self._producer = producer
        self.topic = topic

    @staticmethod
    def connect(
        bootstrap_servers: str | KafkaSettings,
        topic: str = TopicSettings().events,
        linger_ms: int = 5,
        connect_timeout_s: float = 10.0,
        **producer_options: Any,
    ) -> EventProducer:
        """Connect to the broker; raise ``BrokerUnavailable`` with the address if it cannot be reached."""
        kafka = (
            bootstrap_servers
            if isinstance(bootstrap_servers, KafkaSettings)
            else KafkaSettings(bootstrap_servers=bootstrap_servers)
        )
        try:
            producer = KafkaProducer(
                **kafka.kafka_python_kwargs(),
                linger_ms=linger_ms,
                acks=1,
                retries=5,
                bootstrap_timeout_ms=int(connect_timeout_s * 1000),
                **producer_options,
            )
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"no Kafka broker answered at {kafka.bootstrap_servers}: is it running? "
                "(set the address with SEGUE_KAFKA__BOOTSTRAP_SERVERS or --bootstrap)"
            ) from exc
        return EventProducer(producer, topic)

    def send(self, event: Event | Mapping[str, Any] | bytes) -> Event:
        """Validate and send one event (a record, a dict or JSON bytes); return the validated record."""
        validated = self._validate(event)
        try:
            self._producer.send(self.topic, key=validated.user_id.encode(), value=encode_event(validated))
        except KafkaError as exc:
            raise BrokerUnavailable(f"could not send to {self.topic}: {exc}") from exc
        return validated

    @staticmethod
    def _validate(event: Event | Mapping[str, Any] | bytes) -> Event:
        if isinstance(event, bytes):
            validated = decode_event(event)
        elif isinstance(event, Mapping):
            try:
                payload = msgspec.json.encode(dict(event))
            except (TypeError, msgspec.EncodeError) as exc:
                raise InvalidEvent(MALFORMED_JSON, f"event is not JSON-serialisable: {exc}") from None
            validated = decode_event(payload)
        else:
            validated = decode_event(encode_event(event))
        return validated

    def send_batch(self, events: Sequence[Event | Mapping[str, Any] | bytes]) -> list[Event]:
        """Validate ``events`` and send them as batch messages, one per partition (a JSON array of the events
        whose users' keys map to that partition, in the order given; see docs/events.md, "Batches").

        For gateways that forward many listeners' events: the worker pays its per-message cost once per batch
        instead of once per event. Every event is validated first; one invalid event raises ``InvalidEvent``
        and nothing is sent."""
        validated = [self._validate(e) for e in events]
        try:
            partitions = sorted(self._producer.partitions_for(self.topic))
        except KafkaError as exc:
            raise BrokerUnavailable(f"could not read the partitions of {self.topic}: {exc}") from exc
        groups: dict[int, list[Event]] = {}
        for event in validated:
            key = event.user_id.encode()
            part = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]  # the Kafka default partitioner's
            groups.setdefault(part, []).append(event)
        try:
            for part, group in groups.items():
                for start in range(0, len(group), MAX_BATCH_EVENTS):
                    self._producer.send(
                        self.topic, value=encode_batch(group[start : start + MAX_BATCH_EVENTS]), partition=part
                    )
        except KafkaError as exc:
            raise BrokerUnavailable(f"could not send to {self.topic}: {exc}") from exc
        return validated

    def play(self, user_id: str, track_id: str, played_ms: int, **fields: Any) -> Event:
        """Send a play event; ``fields`` may add duration_ms, position_ms, session_id, context, ts_ms."""
        return self.send(_event("play", user_id, track_id, played_ms=played_ms, **fields))

    def skip(self, user_id: str, track_id: str, played_ms: int, **fields: Any) -> Event:
        """Send a skip event after ``played_ms`` of listening."""
        return self.send(_event("skip", user_id, track_id, played_ms=played_ms, **fields))

    def like(self, user_id: str, track_id: str, **fields: Any) -> Event:
        """Send a like event."""
        return self.send(_event("like", user_id, track_id, **fields))

    def flush(self, timeout_s: float | None = 30.0) -> None:
        """Block until every sent event is delivered (or raise ``BrokerUnavailable``)."""
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise BrokerUnavailable(f"events not delivered within {timeout_s} s: {exc}") from exc

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush and close the connection."""
        self._producer.close(timeout=timeout_s)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _event(kind: str, user_id: str, track_id: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("event_id", uuid.uuid4().hex)
    fields.setdefault("ts_ms", time.time_ns() // 1_000_000)
    return {"type": kind, "user_id": user_id, "track_id": track_id, **fields}
