"""The benchmark: the worker, its ceiling and a naive worker on the same events, broker and Redis.

    python -m loadtests.bench --max --events 100000 --users 5000          # max throughput of one worker
    python -m loadtests.bench --rate 2000 --events 60000 --skip-naive     # freshness at a steady rate
    python -m loadtests.bench --workers 2 --partitions 8 --max            # two workers share 8 partitions
    python -m loadtests.bench --source real --users 100 --events 50000 --max
    python -m loadtests.bench --smoke                                     # a few seconds, for CI

Phases (``loadtests.phases``), in order on one embedded stack (or ``--bootstrap``/``--redis-url`` servers):

1. worker: the real worker process(es) start and own the partitions; a generator process sends the
   pre-encoded events (``loadtests.generator``); a reader times every record on the recommendations topic
   (``loadtests.freshness``); a sampler polls /metrics, CPU/RSS and Redis (``loadtests.probes``) until
   every event is counted in ``segue_events_total``.
2. ceiling: ``loadtests.ceiling`` reads and decodes the same topic from the start (a process of its own).
3. naive: ``loadtests.naive_worker`` (own consumer group, keys and output topic) reads the same topic
   from the start for ``--naive-seconds``.

Output in ``--out`` (default ``.segue/bench/<timestamp>``): results.json, report.md, throughput.png,
latency.png, lag.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import onnxruntime as ort

from infra.stack import EmbeddedStack
from loadtests import figures, report
from loadtests.phases import Bench, ceiling_phase, naive_phase, worker_phase
from loadtests.sources import REAL_DATA, Replay, real, simulated
from serving.catalog import Catalog
from streams.settings import (
    DEFAULT_MODEL_DIR,
    KafkaSettings,
    RedisSettings,
    ScoringSettings,
    WorkerSettings,
)

CUDA = "CUDAExecutionProvider"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="segue-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", choices=["simulated", "real"], default="simulated")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--users", type=int, default=5_000)
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="target events/s (default: as fast as possible)")
    pace.add_argument("--max", action="store_true", help="as fast as possible (the default)")
    pace.add_argument("--compress", type=float, help="real source: replay at real timing compressed this much")
    p.add_argument("--workers", type=int, choices=[1, 2], default=1)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--candidates", type=int, default=200, help="candidates retrieved and scored per user")
    p.add_argument(
        "--events-per-message",
        type=int,
        default=64,
        help="pack up to this many events of one partition into a batch message, as an ingest gateway does (1: one "
        "event per message)",
    )
    p.add_argument("--pack-window-ms", type=float, default=5.0, help="a batch message holds events due within this")
    p.add_argument("--batch-within-s", type=float, help="the workers' SEGUE_BATCH_WITHIN_S (default: the setting's)")
    p.add_argument("--rescore-timeout-ms", type=float, help="the workers' SEGUE_SCORING__RESCORE_TIMEOUT_MS")
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--data-dir", type=Path, default=REAL_DATA, help="real listening histories (read only)")
    p.add_argument("--bootstrap", help="use this broker instead of starting the embedded stack")
    p.add_argument("--redis-url", help="use this Redis instead of the embedded one")
    p.add_argument("--skip-ceiling", action="store_true")
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--naive-seconds", type=float, default=30.0)
    p.add_argument("--timeout-s", type=float, default=900.0)
    p.add_argument("--interval-s", type=float, default=0.5, help="sampling interval")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--blas-threads", type=int, help="OPENBLAS_NUM_THREADS/OMP_NUM_THREADS for the workers (default: inherited)"
    )
    p.add_argument("--profile-s", type=float, default=0.0, help="py-spy the (first) worker for this long under load")
    p.add_argument("--out", type=Path)
    p.add_argument("--smoke", action="store_true", help="a few thousand events, a few seconds per phase (CI)")
    args = p.parse_args(argv)
    if args.smoke:
        args.events, args.users, args.naive_seconds, args.interval_s = 3000, 300, 4.0, 0.25
    if (args.bootstrap is None) != (args.redis_url is None):
        p.error("--bootstrap and --redis-url go together (external servers) or not at all (embedded stack)")
    args.out = args.out or Path(".segue/bench") / time.strftime("%Y%m%d-%H%M%S")
    return args


def load_replay(args: argparse.Namespace, catalog: Catalog) -> Replay:
    if args.source == "real":
        return real(args.data_dir, catalog.track_ids, args.events, args.users, compress=args.compress or 3600.0)
    return simulated(args.model_dir, args.events, args.users, args.seed)


def gpu_line(provider: str) -> str:
    if provider == CUDA:
        return "GPU path measured: the scorer ran on CUDAExecutionProvider"
    return f"GPU path not measured (no CUDA device): the scorer ran on {provider or 'CPU'}"


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    if args.blas_threads:  # the worker processes inherit this environment
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)
    load_before = [round(x, 2) for x in os.getloadavg()]
    catalog = Catalog.load(args.model_dir)
    print(f"building {args.source} events ...", file=sys.stderr, flush=True)
    replay = load_replay(args, catalog)
    run_dir = (args.out / "run").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as es:
        if args.bootstrap:
            kafka, redis = KafkaSettings(bootstrap_servers=args.bootstrap), RedisSettings(url=args.redis_url)
            servers: dict[str, int | None] = {}
        else:
            stack = es.enter_context(EmbeddedStack(run_dir))
            kafka, redis = stack.kafka, stack.redis
            servers = {"broker": stack.broker.pid, "redis": stack.redis_server.pid}
        b = Bench(args, kafka, redis, run_dir)
        b.pids.update(servers)
        w = worker_phase(b, replay)
        n = len(replay.events)
        ceiling = None if args.skip_ceiling else ceiling_phase(b, n)
        b.pids = {"bench": os.getpid(), **servers}
        naive = None if args.skip_naive else naive_phase(b, n)
    provider = w.pop("provider")
    ww = w["worker"]
    ww["events_per_cpu_s"] = figures.per_cpu_second(ww["events_per_s"], ww["processes"], "worker")
    if naive:
        naive["events_per_cpu_s"] = figures.per_cpu_second(naive["events_per_s"], naive["processes"], "naive")
    ratio = w["worker"]["events_per_s"] / naive["events_per_s"] if naive and naive["events_per_s"] > 0 else None
    return {
        "command": "python -m loadtests.bench " + " ".join(argv),
        "environment": {
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "onnxruntime_device": ort.get_device(),
            # The worker caps its own pool (SEGUE_SCORING__BLAS_THREADS, default 1); --blas-threads sets the env.
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS")
            or os.environ.get("SEGUE_SCORING__BLAS_THREADS", "1"),
            "ort_available": ort.get_available_providers(),
        },  # fmt: skip
        "source": {
            "kind": args.source,
            "description": replay.description,
            "events": len(replay.events),
            "users": replay.users,
            "mean_bytes": w.pop("mean_bytes"),
        },  # fmt: skip
        "partitions": args.partitions,
        "workers": args.workers,
        "candidates": args.candidates,
        "worker_settings": {
            "batch_max": WorkerSettings().batch_max,
            "batch_within_s": args.batch_within_s or WorkerSettings().batch_within_s,
            "rescore_timeout_ms": args.rescore_timeout_ms or ScoringSettings().rescore_timeout_ms,
        },
        "provider": provider,
        "gpu": gpu_line(provider),
        **w,
        "ceiling": ceiling,
        "naive": naive,
        "ratio_worker_naive": ratio,
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    results = run(args, argv)
    report.write(args.out, results)
    w = results["worker"]
    print(
        f"worker {w['events_per_s']:,.0f} ev/s | ceiling "
        f"{(results['ceiling'] or {}).get('events_per_s', float('nan')):,.0f} ev/s | naive "
        f"{(results['naive'] or {}).get('events_per_s', float('nan')):,.0f} ev/s | e2e p50/p99 (histogram) "
        f"{w['e2e_hist_ms']['p50']:.1f}/{w['e2e_hist_ms']['p99']:.1f} ms | "
        f"redis {results['redis_memory']['bytes_per_user']:,.0f} B/user | {results['gpu']}"
    )
    print(f"report: {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
