"""The Faust application: built from ``WorkerSettings``, wired to the embedded or an external broker.

This module only wires. The agent lives in ``streams.agents``; the batch logic in ``streams.pipeline``.
State is kept in Redis, not in Faust tables (at-least-once delivery, no changelog topics).
"""

from __future__ import annotations

import ssl

import faust

from streams.settings import KafkaSettings, WorkerSettings
from streams.transport import SegueApp


def broker_url(kafka: KafkaSettings) -> str:
    """Faust broker URL(s) for the bootstrap servers: ``kafka://h1:9092;kafka://h2:9092``."""
    return ";".join(f"kafka://{s}" for s in kafka.servers)


def broker_credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """Faust credentials for SASL and/or SSL, or ``None`` for PLAINTEXT."""
    context: ssl.SSLContext | None = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
        if kafka.ssl_certfile:
            context.load_cert_chain(str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None)
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            mechanism=kafka.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(settings: WorkerSettings) -> faust.App:
    """A Faust app configured for segue's worker (no tables, no leader topic, loopback web server)."""
    return SegueApp(
        settings.app_id,
        fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
        broker=broker_url(settings.kafka),
        broker_credentials=broker_credentials(settings.kafka),
        broker_session_timeout=settings.kafka.session_timeout_s,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval_s,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topics.partitions,
        topic_disable_leader=True,
        topic_allow_declare=False,
        store="memory://",
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        web_bind=settings.metrics_host,
        web_port=settings.web_port,
        datadir=str(settings.data_dir),
        autodiscover=False,
        producer_linger=0.0,
        producer_max_batch_size=settings.kafka.producer_max_batch_bytes,
        processing_guarantee="at_least_once",
        stream_wait_empty=False,
    )
