"""Short variants of the fault suite (the long run: ``python -m loadtests.faults``). Each prints its figures."""

from __future__ import annotations

import numpy as np
import pytest

from infra.stack import EmbeddedStack
from loadtests.faults import FaultRun, kill_restart, lose_a_member, redis_outage, replay_events


@pytest.fixture(scope="module")
def persistent_stack(tmp_path_factory):
    with EmbeddedStack(tmp_path_factory.mktemp("persistent-stack"), redis_persistence=True) as stack:
        yield stack


def _check(report):
    print("\n" + report.line())
    c = report.comparison
    # The fault hit mid-stream: some events were applied before it, not all.
    points = [int(x) for x in report.notes.split("applied=")[1].split()[0].split(",")]
    assert all(0 < p < c.events for p in points), report.line()
    assert c.lost == 0 and c.double_applied == 0 and c.mismatched == 0, report.line()
    assert report.dead_letters == 0, report.line()


def test_kill_9_at_random_points(embedded_stack, quick_bundle, tmp_path):
    events = replay_events(quick_bundle, 8_000, 800, seed=1)
    run = FaultRun(embedded_stack, quick_bundle, tmp_path, events)
    _check(kill_restart(run, kills=2, rng=np.random.default_rng(1), timeout_s=180))


def test_a_group_member_dies_and_the_other_takes_over(embedded_stack, quick_bundle, tmp_path):
    events = replay_events(quick_bundle, 6_000, 600, seed=2)
    run = FaultRun(embedded_stack, quick_bundle, tmp_path, events)
    _check(lose_a_member(run, rng=np.random.default_rng(2), timeout_s=180))


def test_redis_stopped_for_10_s(persistent_stack, quick_bundle, tmp_path):
    events = replay_events(quick_bundle, 6_000, 600, seed=3)
    run = FaultRun(persistent_stack, quick_bundle, tmp_path, events)
    report = redis_outage(run, outage_s=10.0, timeout_s=180)
    _check(report)
    assert "redis_errors_seen_by_worker=0" not in report.notes, report.line()
