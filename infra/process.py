"""A child service process (broker, Redis) with a log file, a bounded stop and no orphans left behind.

Contract:

* ``start()`` launches the program in its own session with stdout and stderr appended to ``log_path``.
* ``stop()`` sends SIGTERM, waits up to ``stop_timeout_s``, then SIGKILLs; it is idempotent.
* A started process is stopped at interpreter exit (``atexit``). On Linux the child also gets SIGTERM
  when the *thread* that started it ends (``PR_SET_PDEATHSIG``), which covers a parent killed by a
  signal or ended with ``os._exit`` (where ``atexit`` does not run). So start services from a
  long-lived thread (the main thread, as pytest fixtures do), not from a short-lived worker thread.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from infra.ports import free_port
from streams.errors import StackError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def read_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file, or "" if it does not exist."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ServiceProcess:
    """One child process of a local service. Not thread-safe: start and stop it from one thread."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process has been started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def start(self) -> None:
        """Launch the process (again, once it has exited). Raises ``OSError`` if it cannot be executed."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        atexit.register(self.stop)

    def log_tail(self, lines: int = 20) -> str:
        return read_tail(self.log_path, lines)

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after ``stop_timeout_s``) and reap it."""
        proc = self._proc
        if proc is None:
            return
        atexit.unregister(self.stop)
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            except ProcessLookupError:
                pass
        proc.wait()

    def kill(self) -> None:
        """SIGKILL the process at once (for fault tests) and reap it."""
        proc = self._proc
        if proc is None:
            return
        atexit.unregister(self.stop)
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


def start_on_free_port(
    name: str,
    argv_for: Callable[[int], Sequence[str]],
    log_path: Path,
    *,
    ready: Callable[[ServiceProcess, int], bool],
    waited_for: str,
    fixed_port: int | None = None,
    attempts: int = 3,
    cwd: Path | None = None,
    stop_timeout_s: float = 5.0,
) -> tuple[ServiceProcess, int]:
    """Start ``argv_for(port)`` and wait until ``ready(proc, port)``; return the process and its port.

    A process that exits at start (a port taken meanwhile, say) is retried on another free port, up to
    ``attempts`` times; with ``fixed_port`` it is tried once. A process that runs but is not ready is
    stopped. Both raise ``StackError`` with the end of the log; ``waited_for`` says what readiness means.
    """
    tries = 1 if fixed_port is not None else max(1, attempts)
    for attempt in range(1, tries + 1):
        port = fixed_port if fixed_port is not None else free_port()
        proc = ServiceProcess(name, argv_for(port), log_path, cwd=cwd, stop_timeout_s=stop_timeout_s)
        try:
            proc.start()
        except OSError as exc:
            raise StackError(f"could not execute {name} ({proc.argv[0]}): {exc}") from exc
        if ready(proc, port):
            return proc, port
        if proc.running:
            proc.stop()
            raise StackError(
                f"{name} on port {port} did not {waited_for}; last lines of {log_path}:\n{proc.log_tail()}"
            )
        if attempt == tries:
            raise StackError(
                f"{name} exited at start with code {proc.returncode} (port {port}); "
                f"last lines of {log_path}:\n{proc.log_tail()}"
            )
        log.warning("%s exited at start on port %s (code %s); trying another port", name, port, proc.returncode)
    raise AssertionError("unreachable")  # pragma: no cover


class LocalService:
    """What the embedded broker and Redis server share: one child process on one loopback port.

    Subclasses set ``_fixed_port``/``_port``/``_proc`` in ``__init__``, implement ``start`` (usually with
    ``start_on_free_port``) and name themselves in ``service_name`` for error messages.
    """

    service_name = "service"
    _port: int | None
    _proc: ServiceProcess | None

    def start(self) -> Self:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._port is None:
            raise StackError(f"the {self.service_name} has not been started")
        return self._port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after its stop timeout)."""
        if self._proc is not None:
            self._proc.stop()

    def kill(self) -> None:
        """SIGKILL the process at once (fault tests)."""
        if self._proc is not None:
            self._proc.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
