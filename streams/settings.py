"""Settings of the worker deployable, and the Kafka and Redis connection blocks it shares with the API.

Nothing else in segue reads the environment. Every field can be set with an environment variable:
``SEGUE_`` + the field name in capitals, and ``__`` to reach a nested block, for example
``SEGUE_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or ``SEGUE_REDIS__URL=rediss://:pw@redis:6380/0``.
docs/configuration.md lists them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL_DIR = Path(".segue/models/default")


class KafkaSettings(BaseModel):
    """How to reach the Kafka-protocol broker."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    # Group timeouts: the defaults suit the embedded Tansu broker, whose group joins wait about half the
    # session timeout. Raise them for Apache Kafka under heavy load.
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.0
    # The longest a consumer fetch waits for new data. Short, because the embedded broker does not answer
    # a waiting fetch early when data arrives.
    fetch_max_wait_ms: int = Field(10, ge=1, le=5000)
    # The worker's producer: a send waits while its partition's batch is full and a request is in flight, so
    # a micro-batch's recommendations (~1.2 KB each, hundreds per partition) outgrew the clients' 16 KiB and the
    # worker idled on it: 16 KiB -> 512 KiB took it from 86% to 93-96% of a core and 6,445-6,665 to 7,131-7,401
    # events/s (docs/benchmarks.md). Below Kafka's default message.max.bytes (1 MB).
    producer_max_batch_bytes: int = Field(
        524_288, ge=1024, le=1_000_000, description="the worker producer's batch size per partition, in bytes"
    )

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    def kafka_python_kwargs(self) -> dict[str, object]:
        """Connection keyword arguments for kafka-python clients."""
        kw: dict[str, object] = {
            "bootstrap_servers": self.servers,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        if self.ssl_cafile:
            kw["ssl_cafile"] = str(self.ssl_cafile)
        if self.ssl_certfile:
            kw["ssl_certfile"] = str(self.ssl_certfile)
        if self.ssl_keyfile:
            kw["ssl_keyfile"] = str(self.ssl_keyfile)
        return kw


class RedisSettings(BaseModel):
    """How to reach Redis. ``rediss://`` turns on TLS; a password goes in the URL or in ``password``."""

    url: str = "redis://127.0.0.1:6379/0"
    password: SecretStr | None = None
    socket_timeout_s: float = 2.0
    key_prefix: str = "segue"
    state_ttl_s: int = Field(30 * 86_400, ge=1)


class TopicSettings(BaseModel):
    """Topic names (dots only, per Kafka convention) and partition counts, created explicitly at start."""

    events: str = "segue.events"
    recommendations: str = "segue.recommendations"
    dead_letters: str = "segue.events.dlq"
    partitions: int = Field(8, ge=1)
    replication_factor: int = Field(1, ge=1)


class ScoringSettings(BaseModel):
    """What rescoring does for each user, and within which budget."""

    model_dir: Path = DEFAULT_MODEL_DIR
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto",
        description="auto: CUDA where onnxruntime-gpu and the NVIDIA driver are present, else CPU; cuda: CUDA or a "
        "warning and CPU; cpu",
    )
    candidates: int = Field(200, ge=1)
    retriever: Literal["auto", "exact", "ivf"] = Field(
        "auto",
        description="candidate retrieval: exact (the whole catalog per user), ivf (an inverted file, faiss), "
        "auto (ivf from 20,000 tracks)",
    )
    retriever_nprobe: int = Field(16, ge=1, description="cells of the inverted file searched per user")
    repeats: bool = Field(
        False, description="offer the session's played (not skipped) tracks again as candidates (serving/candidates.py)"
    )
    recommendations: int = Field(20, ge=1)
    budget_ms: float = Field(50.0, gt=0)
    # Ranking slower than this per `slot_users` users is abandoned for the cheap ranking (retrieval
    # similarity), so that recommendations still arrive when the model stalls. Ranking 64 users (model,
    # session intent, explanations) takes ~30-40 ms of a shared core: a shorter slot abandons ordinary calls
    # under load (docs/benchmarks.md, "Freshness at a steady rate").
    rescore_timeout_ms: float = Field(
        60.0, gt=0, description="slot for ranking `slot_users` users; over it, lists are ranked by retrieval"
    )
    slot_users: int = Field(
        64, ge=1, description="users one slot covers: a micro-batch of U users gets ceil(U / slot_users) slots"
    )
    # Each model call has a fixed part (the session intent's prior and filter, the explanations' arrays, ONNX
    # Runtime's call): 256 users per call gave 16% more events per CPU-second than 64 at 1,024 events per batch
    # (docs/benchmarks.md, "What each optimisation changed"). The budget stays per `slot_users`.
    model_batch: int = Field(
        256, ge=1, description="users per model call; a micro-batch with more users is scored in several calls"
    )
    # Fault drills only: sleep this long in every model call (0 in production).
    inject_delay_ms: float = Field(0.0, ge=0)
    intra_op_threads: int = Field(1, ge=1)
    blas_threads: int = Field(
        1,
        ge=0,
        description="numpy's BLAS threads in the worker (retrieval, explanations); 0: as the environment says",
    )
    explain: bool = Field(
        True, description="give every recommendation a reason from the score's contributions (docs/explanations.md)"
    )
    explain_events: int = Field(2, ge=1, le=8, description="how many recent session events a reason may cite")
    rules_refresh_s: float = Field(5.0, gt=0, description="how often editorial rules are re-read from Redis")
    cold_start: bool = Field(
        True, description="use the bundle's context prior for listeners with little history (docs/cold-start.md)"
    )
    steering: bool = Field(True, description="apply listeners' prompt steers when ranking (docs/steering.md)")


class SessionSettings(BaseModel):
    """Session state: when a session ends and how fast the vectors move."""

    gap_s: float = Field(1800.0, gt=0)
    recent_tracks: int = Field(32, ge=1, le=500)
    dedup_ids: int = Field(16, ge=1, le=1024)


class WorkerSettings(BaseSettings):
    """Everything the stream worker needs. Environment: ``SEGUE_*``."""

    model_config = SettingsConfigDict(env_prefix="SEGUE_", env_nested_delimiter="__", extra="ignore")

    app_id: str = "segue-worker"
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    topics: TopicSettings = TopicSettings()
    scoring: ScoringSettings = ScoringSettings()
    session: SessionSettings = SessionSettings()
    # Retries of a batch while Redis or the broker fails (exponential backoff with jitter). After the last
    # one the worker exits without committing, so a restart redelivers the batch: -1 retries for ever.
    retry_attempts: int = Field(300, ge=-1)
    retry_backoff_base_s: float = Field(0.05, gt=0)
    retry_backoff_cap_s: float = Field(2.0, gt=0)
    batch_max: int = Field(1000, ge=1)
    # Each micro-batch gathers events for this long after the previous one is done: longer windows make fewer,
    # larger batches (the per-batch cost is shared by more events), at up to this much added latency per event.
    # The default is the freshness end; 0.02 keeps a worker near its limit from falling behind
    # (docs/benchmarks.md, "Freshness at a steady rate").
    batch_within_s: float = Field(
        0.003, gt=0, description="how long a micro-batch gathers events before it is processed (seconds)"
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, ge=0)
    web_port: int = Field(6066, ge=0)
    data_dir: Path = Path(".segue/worker")
