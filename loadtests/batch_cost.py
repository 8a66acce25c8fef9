"""What the worker's batch step costs in CPU, by batch size: ``Processor.process`` in-process, no broker.

    python -m loadtests.batch_cost --events 24000 --users 5000 --sizes 1,8,64,1024

The same ``Processor`` and ranking step the worker builds (``streams.worker.build_rescorer`` from
``WorkerSettings``, so ``SEGUE_SCORING__*`` apply), on the memory store, fed with simulated listeners' events
packed ``size`` events per message, one message per batch. Reported per batch size: events per CPU-second of
the process (every thread), CPU milliseconds per ranked user and per batch, and how many events each
ranking covered. CPU time, not wall clock: on a shared machine it is the steadier figure. What it leaves out
(Kafka fetch and produce, Faust, Redis round trips) is what ``loadtests.bench`` adds on top.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from tqdm import tqdm

from loadtests.sources import simulated
from serving.catalog import Catalog
from serving.scorer import OnnxScorer
from streams.metrics import Metrics
from streams.pipeline import Incoming, Processor, now_ms
from streams.settings import WorkerSettings
from streams.stores import MemoryStore
from streams.worker import build_rescorer, dynamics_from, limit_blas_threads


@dataclass(frozen=True)
class Cost:
    size: int  # events per batch
    events: int
    ranked: int
    batches: int
    cpu_s: float

    @property
    def events_per_cpu_s(self) -> float:
        return self.events / self.cpu_s

    @property
    def ms_per_ranked(self) -> float:
        return 1000.0 * self.cpu_s / self.ranked

    @property
    def ms_per_batch(self) -> float:
        return 1000.0 * self.cpu_s / self.batches


def messages(events: Sequence[dict], size: int, broker_ms: int) -> list[Incoming]:
    """``events`` packed ``size`` per message (a JSON array, as a gateway sends them), one partition."""
    enc = json.JSONEncoder(separators=(",", ":"))
    return [
        Incoming(enc.encode(list(events[i : i + size])).encode(), None, "events", 0, k, broker_ms)
        for k, i in enumerate(range(0, len(events), size))
    ]


def measure(processor: Processor, batches: list[Incoming], size: int, warmup: int, progress: bool) -> Cost:
    """Process ``batches`` one by one; the first ``warmup`` are not counted."""

    async def run(part: list[Incoming]) -> tuple[int, int]:
        ranked = events = 0
        for msg in tqdm(part, desc=f"{size} per batch", unit="batch", disable=not progress, leave=False):
            out = await processor.process([msg])
            ranked += len(out.recommendations)
            events += len(out.applied_ms) + out.duplicates + len(out.dead_letters)
        return ranked, events

    asyncio.run(run(batches[:warmup]))
    cpu0 = time.process_time()
    ranked, events = asyncio.run(run(batches[warmup:]))
    return Cost(size, events, ranked, len(batches) - warmup, time.process_time() - cpu0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segue-batch-cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the worker's setting")
    parser.add_argument("--events", type=int, default=24_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--sizes", default="1,8,64,1024", help="events per batch, comma-separated")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    settings = WorkerSettings()
    if args.model_dir is not None:
        settings = settings.model_copy(
            update={"scoring": settings.scoring.model_copy(update={"model_dir": args.model_dir})}
        )
    limit_blas_threads(settings.scoring.blas_threads)  # as the worker runs
    model_dir = settings.scoring.model_dir
    catalog = Catalog.load(model_dir)
    scorer = OnnxScorer.load(model_dir, device="cpu", intra_op_threads=settings.scoring.intra_op_threads)
    events = simulated(Path(model_dir), args.events, args.users, args.seed).events
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        processor = Processor(  # a fresh store per size: every size starts from the same empty states
            catalog,
            build_rescorer(settings, catalog, scorer),
            MemoryStore(),
            Metrics.create(CollectorRegistry()),
            scorer.provider,
            dynamics_from(settings),
            model_batch=settings.scoring.model_batch,
            slot_users=settings.scoring.slot_users,
        )
        batches = messages(events, size, now_ms())
        rows.append(measure(processor, batches, size, warmup=max(1, len(batches) // 20), progress=sys.stderr.isatty()))
    explain = settings.scoring.explain
    print(
        f"model {catalog.model_version}, {args.events} events of {args.users} users, explanations {explain}, "
        f"BLAS threads {settings.scoring.blas_threads or 'as the environment says'}"
    )
    print("| events per batch | events per CPU-s | CPU ms per ranked user | CPU ms per batch | events per ranking |")
    print("|---:|---:|---:|---:|---:|")
    for c in rows:
        print(
            f"| {c.size} | {c.events_per_cpu_s:,.0f} | {c.ms_per_ranked:.3f} | {c.ms_per_batch:.2f} "
            f"| {c.events / c.ranked:.2f} |"
        )
    if args.out is not None:
        args.out.write_text(json.dumps([c.__dict__ for c in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
