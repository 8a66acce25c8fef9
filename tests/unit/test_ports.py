"""Free loopback ports and the bounded wait used to start local services."""

from __future__ import annotations

import socket

from infra.ports import LOOPBACK, free_port, port_accepts, wait_for_port, wait_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_free_port_can_be_bound_on_loopback() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind((LOOPBACK, port))


def test_port_accepts_only_while_something_listens() -> None:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_accepts(port)
        assert wait_for_port(port, timeout_s=1)
    assert not port_accepts(port)


def test_wait_until_returns_true_as_soon_as_the_condition_holds() -> None:
    clock = FakeClock()
    calls = iter([False, False, True])
    assert wait_until(lambda: next(calls), 10, interval_s=1, clock=clock, sleep=clock.sleep)
    assert clock.now == 2


def test_wait_until_times_out_without_oversleeping() -> None:
    clock = FakeClock()
    assert not wait_until(lambda: False, 2.5, interval_s=1, clock=clock, sleep=clock.sleep)
    assert clock.now == 2.5


def test_wait_until_tries_once_even_with_zero_timeout() -> None:
    tries = []
    assert wait_until(lambda: tries.append(1) or True, 0)
    assert tries == [1]


def test_wait_until_stops_early_when_told_to_give_up() -> None:
    clock = FakeClock()
    assert not wait_until(
        lambda: False, 60, interval_s=1, give_up=lambda: clock.now >= 3, clock=clock, sleep=clock.sleep
    )
    assert clock.now == 3


def test_wait_for_port_gives_up_on_a_closed_port() -> None:
    assert not wait_for_port(free_port(), timeout_s=5, give_up=lambda: True)
