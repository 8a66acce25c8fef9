"""The embedded local stack: one Tansu broker and one Redis server on loopback, for tests and demos.

Contract: ``start()`` starts both services (or neither: a failure stops what had started and raises
``StackError``); ``kafka`` and ``redis`` then point segue at them; ``stop()`` stops both, is
idempotent, and also runs at interpreter exit (deleting a temp ``run_dir`` the stack made).
Topics are not created here: call ``streams.topics.ensure_topics`` with the caller's settings.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from pydantic import SecretStr

from infra.broker import TansuBroker
from infra.redis_server import RedisServer
from streams.errors import StackError
from streams.settings import KafkaSettings, RedisSettings

log = logging.getLogger(__name__)


class EmbeddedStack:
    """A broker and a Redis server whose logs go to ``run_dir`` (a new temp dir when not given)."""

    def __init__(
        self,
        run_dir: Path | None = None,
        *,
        redis_password: str | None = None,
        redis_persistence: bool = False,
        startup_timeout_s: float = 20.0,
    ) -> None:
        """A temp ``run_dir`` made here is deleted by ``stop()``; a given one is kept (logs stay)."""
        self._own_run_dir = run_dir is None
        self.run_dir = Path(run_dir).resolve() if run_dir is not None else Path(tempfile.mkdtemp(prefix="segue-stack-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.broker = TansuBroker(self.run_dir, startup_timeout_s=startup_timeout_s)
        self.redis_server = RedisServer(
            self.run_dir,
            persistence=redis_persistence,
            password=redis_password,
            startup_timeout_s=startup_timeout_s,
        )

    @property
    def kafka(self) -> KafkaSettings:
        """Connection settings for the embedded broker (PLAINTEXT, Tansu-friendly group timeouts)."""
        return KafkaSettings(bootstrap_servers=self.broker.bootstrap)

    @property
    def redis(self) -> RedisSettings:
        """Connection settings for the embedded Redis server."""
        password = self.redis_server.password
        return RedisSettings(url=self.redis_server.url, password=SecretStr(password) if password else None)

    @property
    def pids(self) -> list[int]:
        """Process ids of the services started so far (running or not)."""
        return [pid for pid in (self.broker.pid, self.redis_server.pid) if pid is not None]

    @property
    def running(self) -> bool:
        return self.broker.running and self.redis_server.running

    def start(self) -> Self:
        """Start the broker, then Redis; on failure stop both and raise ``StackError``."""
        atexit.register(self.stop)
        try:
            self.broker.start()
            self.redis_server.start()
        except BaseException:
            self.stop(keep_run_dir=True)
            raise
        log.info(
            "embedded stack up: kafka %s, redis %s, logs in %s",
            self.broker.bootstrap,
            self.redis_server.url,
            self.run_dir,
        )
        return self

    def stop(self, *, keep_run_dir: bool = False) -> None:
        """Stop both services; delete ``run_dir`` if this stack made it and ``keep_run_dir`` is false."""
        atexit.unregister(self.stop)
        errors: list[BaseException] = []
        for service in (self.redis_server, self.broker):
            try:
                service.stop()
            except Exception as exc:  # stop the other one anyway
                errors.append(exc)
        if self._own_run_dir and not keep_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if errors:
            raise StackError(f"could not stop the embedded stack cleanly: {errors[0]}") from errors[0]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
