"""segue's own deployables (worker, API) as child processes, configured through their environment.

Used by the demo and the integration tests, so both run the same code the way production does: a
separate process per deployable, settings from ``SEGUE_*`` variables, readiness from their own endpoints.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from infra.ports import LOOPBACK, free_port, wait_until
from infra.process import ServiceProcess
from streams.errors import StackError


def settings_env(prefix: str, settings: BaseModel) -> dict[str, str]:
    """Flatten settings into environment variables: ``SEGUE_`` + ``KAFKA__BOOTSTRAP_SERVERS`` and so on."""
    env: dict[str, str] = {}
    for name, value in settings:
        key = f"{prefix}{name.upper()}"
        if isinstance(value, BaseModel):
            env.update(settings_env(f"{key}__", value))
        elif isinstance(value, SecretStr):
            env[key] = value.get_secret_value()
        elif value is not None:
            env[key] = str(value)
    return env


def _get(url: str, timeout_s: float = 1.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback only
            return response.read().decode()
    except OSError:
        return None


def metric_value(text: str, name: str) -> float | None:
    """The value of an unlabelled sample ``name`` in Prometheus text, or ``None``."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class _Deployable:
    module: str = ""

    def __init__(self, name: str, run_dir: Path, env: dict[str, str]) -> None:
        # One BLAS thread: the retrieval matmul is small, and a thread pool per process costs more than it
        # gains on a few cores (measured: 2.3x events per CPU-second, docs/benchmarks.md).
        threads = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        full_env = {**os.environ, **threads, **env, "PYTHONUNBUFFERED": "1"}
        self.process = ServiceProcess(
            name, [sys.executable, "-m", self.module], run_dir / f"{name}.log", env=full_env, cwd=Path.cwd()
        )

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def _wait(self, ready: Any, timeout_s: float, what: str) -> None:
        if not wait_until(ready, timeout_s, interval_s=0.2, give_up=lambda: not self.process.running):
            state = "exited" if not self.process.running else f"not {what} after {timeout_s:.0f} s"
            raise StackError(
                f"{self.process.name} {state}; last lines of {self.process.log_path}:\n{self.process.log_tail(30)}"
            )


class WorkerService(_Deployable):
    """``python -m streams.worker`` with ``WorkerSettings`` passed through the environment."""

    module = "streams.worker"

    def __init__(self, name: str, run_dir: Path, settings: BaseModel) -> None:
        port = free_port()
        settings = settings.model_copy(update={"metrics_port": port})
        self.metrics_url = f"http://{LOOPBACK}:{port}/metrics"
        super().__init__(name, run_dir, settings_env("SEGUE_", settings))

    def metrics(self) -> str:
        return _get(self.metrics_url) or ""

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until the worker owns input partitions (its consumer group has assigned them)."""

        def ready() -> bool:
            value = metric_value(self.metrics(), "segue_assigned_partitions")
            return bool(value and value > 0)

        self._wait(ready, timeout_s, "assigned partitions")


class ApiService(_Deployable):
    """``python -m serving.cli`` with ``ApiSettings`` passed through the environment."""

    module = "serving.cli"

    def __init__(self, name: str, run_dir: Path, settings: BaseModel) -> None:
        port = free_port()
        settings = settings.model_copy(update={"port": port, "host": LOOPBACK})
        self.url = f"http://{LOOPBACK}:{port}"
        super().__init__(name, run_dir, settings_env("SEGUE_API_", settings))

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until ``/healthz`` answers."""
        self._wait(lambda: _get(self.url + "/healthz") is not None, timeout_s, "healthy")
