"""Loopback TCP ports: pick a free one, and wait until a service accepts connections on one.

Contract: everything here binds or connects to loopback only. ``free_port`` can race with another
process that takes the same port before the caller binds it; callers that start a server on the port
should treat "address in use" as a reason to pick another port and try again.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that nothing listened on a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = LOOPBACK, timeout_s: float = 0.2) -> bool:
    """True if a TCP connection to ``host:port`` succeeds within ``timeout_s``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    *,
    interval_s: float = 0.05,
    give_up: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Poll ``condition`` until it is true (return True) or ``timeout_s`` has passed (return False).

    ``condition`` is always tried at least once. ``give_up`` is checked after each failed try: when it
    returns True the wait ends early with False (for example: the process being waited on has died).
    """
    deadline = clock() + timeout_s
    while True:
        if condition():
            return True
        if give_up is not None and give_up():
            return False
        remaining = deadline - clock()
        if remaining <= 0:
            return False
        sleep(min(interval_s, remaining))


def wait_for_port(
    port: int,
    host: str = LOOPBACK,
    timeout_s: float = 10.0,
    *,
    give_up: Callable[[], bool] | None = None,
) -> bool:
    """Wait until ``host:port`` accepts TCP connections; False on timeout or when ``give_up()`` is true."""
    return wait_until(lambda: port_accepts(port, host), timeout_s, give_up=give_up)
