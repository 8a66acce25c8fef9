"""What an idle worker costs: CPU of a worker process that owns its partitions and receives no events.

    python -m loadtests.idle_cost                                  # fetch wait 10/100 ms x batch window 3/50 ms
    python -m loadtests.idle_cost --fetch-wait-ms 10 --within-s 0.003 --seconds 20

An idle worker is not free: its Kafka consumer sends a fetch request every ``SEGUE_KAFKA__FETCH_MAX_WAIT_MS``
(the embedded broker holds a fetch that long and does not answer early when data arrives, so a short wait is
what keeps freshness), and its Faust agent wakes every ``SEGUE_BATCH_WITHIN_S`` to close a micro-batch. Both
cost CPU whether events arrive or not, and both bound how soon an event is seen: this command measures the
first half of that trade-off (``loadtests.bench --rate`` the second). For each pair of settings it starts a
real worker on the embedded stack (or ``--bootstrap``/``--redis-url`` servers), waits until it owns its
partitions, and reads the worker process's CPU time (psutil) over ``--seconds``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psutil

from infra.services import WorkerService
from infra.stack import EmbeddedStack
from streams.settings import KafkaSettings, RedisSettings, WorkerSettings
from streams.topics import ensure_topics


@dataclass(frozen=True)
class IdleCost:
    fetch_wait_ms: int
    within_s: float
    seconds: float
    cpu_s: float

    @property
    def share(self) -> float:
        """CPU share of one core."""
        return self.cpu_s / self.seconds


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def measure(
    base: WorkerSettings, fetch_wait_ms: int, within_s: float, seconds: float, run_dir: Path, settle_s: float = 2.0
) -> IdleCost:
    """One worker with these settings, idle for ``seconds`` after owning its partitions and ``settle_s``."""
    kafka = base.kafka.model_copy(update={"fetch_max_wait_ms": fetch_wait_ms})
    settings = base.model_copy(update={"kafka": kafka, "batch_within_s": within_s})
    worker = WorkerService(f"worker-{fetch_wait_ms}ms-{within_s}s", run_dir, settings)
    worker.start()
    try:
        worker.wait_ready(90)
        if worker.process.pid is None:
            raise RuntimeError("the worker exited before it could be measured")
        proc = psutil.Process(worker.process.pid)
        time.sleep(settle_s)
        before = proc.cpu_times()
        start = time.monotonic()
        time.sleep(seconds)
        after = proc.cpu_times()
        elapsed = time.monotonic() - start
    finally:
        worker.stop()
    cpu = (after.user - before.user) + (after.system - before.system)
    return IdleCost(fetch_wait_ms, within_s, elapsed, cpu)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="segue-idle-cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--fetch-wait-ms", default="10,100", help="consumer fetch waits to try, comma-separated")
    p.add_argument("--within-s", default="0.003,0.05", help="micro-batch windows to try, comma-separated")
    p.add_argument("--seconds", type=float, default=20.0, help="how long each worker is measured")
    p.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: start the embedded stack)")
    p.add_argument("--redis-url", help="URL of a running Redis (with --bootstrap)")
    p.add_argument("--model-dir", type=Path, help="the model bundle (default: the worker's setting)")
    args = p.parse_args(argv)
    if bool(args.bootstrap) != bool(args.redis_url):
        p.error("--bootstrap and --redis-url go together")
    with ExitStack() as stack:
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="segue-idle-")))
        if args.bootstrap:
            kafka, redis = KafkaSettings(bootstrap_servers=args.bootstrap), RedisSettings(url=args.redis_url)
        else:
            embedded = stack.enter_context(EmbeddedStack(run_dir / "stack"))
            kafka, redis = embedded.kafka, embedded.redis
        base = WorkerSettings(kafka=kafka, redis=redis, data_dir=run_dir / "faust")
        if args.model_dir is not None:
            base = base.model_copy(update={"scoring": base.scoring.model_copy(update={"model_dir": args.model_dir})})
        ensure_topics(base.kafka, base.topics)
        rows = [
            measure(base, wait, within, args.seconds, run_dir)
            for wait, within in itertools.product(_ints(args.fetch_wait_ms), _floats(args.within_s))
        ]
    print("| fetch wait (ms) | micro-batch window (ms) | idle worker CPU, % of one core |")
    print("|---:|---:|---:|")
    for r in rows:
        print(f"| {r.fetch_wait_ms} | {r.within_s * 1000:g} | {100 * r.share:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
