"""The topics segue uses, and their explicit, idempotent creation before any worker starts.

Topics are always created here with their partition counts: some clients auto-create a missing topic
with one partition, and brokers such as the embedded Tansu cannot add partitions later.
"""

from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from streams.errors import BrokerUnavailable, ConfigError, SegueError
from streams.settings import KafkaSettings, TopicSettings

DEAD_LETTER_MAX_PARTITIONS = 4


@dataclass(frozen=True)
class TopicSpec:
    """One topic to create: name, partition count and replication factor."""

    name: str
    partitions: int
    replication_factor: int = 1


def dead_letter_partitions(partitions: int) -> int:
    """Partitions of the dead-letter topic: few, since it carries only the rare bad event."""
    return max(1, min(partitions, DEAD_LETTER_MAX_PARTITIONS))


def topic_specs(topics: TopicSettings) -> list[TopicSpec]:
    """The topics of ``topics``: events and recommendations with ``partitions``, dead letters with fewer."""
    rf = topics.replication_factor
    return [
        TopicSpec(topics.events, topics.partitions, rf),
        TopicSpec(topics.recommendations, topics.partitions, rf),
        TopicSpec(topics.dead_letters, dead_letter_partitions(topics.partitions), rf),
    ]


def check_partitions(wanted: list[TopicSpec], existing: dict[str, int]) -> None:
    """Raise ``ConfigError`` if a topic in ``existing`` (name -> partitions) has fewer than wanted.

    More partitions than configured is accepted: keys still map to stable partitions.
    """
    short = [(s, existing[s.name]) for s in wanted if s.name in existing and existing[s.name] < s.partitions]
    if short:
        detail = "; ".join(f"{s.name} has {have} partitions, {s.partitions} configured" for s, have in short)
        raise ConfigError(
            f"existing topics have fewer partitions than configured ({detail}); partitions cannot be "
            "added on every broker: delete and recreate the topics, or lower SEGUE_TOPICS__PARTITIONS"
        )


def _partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names) if t["error_code"] == 0}


def _segue_error(message: str, error: type[KafkaError] | KafkaError) -> SegueError:
    """Retriable Kafka errors become ``BrokerUnavailable``; the rest (bad replication factor, denied
    authorisation, policy) are ``ConfigError``: retrying will not help."""
    return BrokerUnavailable(message) if getattr(error, "retriable", False) else ConfigError(message)


def ensure_topics(kafka: KafkaSettings, topics: TopicSettings, timeout_s: float = 30.0) -> dict[str, int]:
    """Create the topics of ``topics`` where missing and return ``{name: partitions}`` as they now are.

    Idempotent: existing topics are kept. Raises ``ConfigError`` if an existing topic has fewer
    partitions than configured, ``BrokerUnavailable`` if the broker cannot be reached or fails.
    """
    specs = topic_specs(topics)
    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            **kafka.kafka_python_kwargs(),
            client_id="segue-topics",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
    except KafkaError as exc:
        raise _segue_error(f"cannot reach the broker at {kafka.bootstrap_servers}: {exc}", exc) from exc
    try:
        existing = _partition_counts(admin, [s.name for s in specs])
        check_partitions(specs, existing)
        missing = [s for s in specs if s.name not in existing]
        if missing:
            new = {
                s.name: {"num_partitions": s.partitions, "replication_factor": s.replication_factor} for s in missing
            }
            result = admin.create_topics(new, timeout_ms=timeout_ms, raise_errors=False, wait_for_metadata=True)
            for created in result["topics"]:
                code = created["error_code"]
                if code not in (0, TopicAlreadyExistsError.errno):
                    error = for_code(code)
                    raise _segue_error(
                        f"could not create topic {created['name']}: {error.__name__} "
                        f"{created.get('error_message') or ''}".rstrip(),
                        error,
                    )
            existing = _partition_counts(admin, [s.name for s in specs])
            check_partitions(specs, existing)
        absent = [s.name for s in specs if s.name not in existing]
        if absent:
            raise BrokerUnavailable(f"topics not visible in metadata after creation: {', '.join(absent)}")
        return existing
    except KafkaError as exc:
        raise _segue_error(f"topic creation on {kafka.bootstrap_servers} failed: {exc}", exc) from exc
    finally:
        admin.close()
