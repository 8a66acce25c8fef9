"""Settings of the API deployable (``segue-api``).

Environment: ``SEGUE_API_*`` for its own fields and the same nested blocks as the worker:
``SEGUE_API_KAFKA__*``, ``SEGUE_API_REDIS__*``, ``SEGUE_API_SCORING__*``.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.settings import KafkaSettings, RedisSettings, ScoringSettings, SessionSettings, TopicSettings


class ApiSettings(BaseSettings):
    """Everything the HTTP API needs."""

    model_config = SettingsConfigDict(env_prefix="SEGUE_API_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0)
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    topics: TopicSettings = TopicSettings()
    scoring: ScoringSettings = ScoringSettings()
    session: SessionSettings = SessionSettings()
    ingest: bool = True
    auth_token: SecretStr | None = None
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_batch_events: int = Field(1000, ge=1)
    steer_default_ttl_s: int = Field(3600, ge=1, description="how long a prompt steer lasts when ttl_s is not sent")
