"""The load generator: pre-encoded events sent by an aiokafka producer in a process of its own.

Payloads (JSON values, keys, partitions by the Kafka default murmur2 partitioner) are encoded before the
clock starts, so the generator spends its time producing, not encoding. It paces by a schedule of send
offsets (seconds from its start): ``i / rate`` for a target rate, the compressed replay clock for a
replay, or all zeros for as fast as possible. The broker timestamp of each message is its send time,
which is what the worker's latency histogram and the recommendations' ``event_ms`` start from.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import msgspec
import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2


@dataclass(frozen=True)
class Payloads:
    """Everything the producer sends, ready to go."""

    topic: str
    keys: list[bytes]
    values: list[bytes]
    partitions: list[int]
    offsets_s: np.ndarray  # float64 [n], when to send each message, seconds from the start

    def __len__(self) -> int:
        return len(self.values)

    @property
    def mean_bytes(self) -> float:
        return sum(map(len, self.values)) / max(1, len(self.values))


def encode(events: list[dict[str, Any]], topic: str, partitions: int, offsets_s: np.ndarray) -> Payloads:
    """Encode ``events`` (already in send order) for ``topic`` with ``partitions`` partitions."""
    enc = msgspec.json.Encoder()
    keys = [e["user_id"].encode() for e in events]
    by_key: dict[bytes, int] = {}
    parts = [by_key.setdefault(k, (murmur2(k) & 0x7FFFFFFF) % partitions) for k in keys]
    return Payloads(topic, keys, [enc.encode(e) for e in events], parts, np.asarray(offsets_s, dtype=np.float64))


def schedule(n: int, rate: float | None, replay_ms: np.ndarray | None = None) -> np.ndarray:
    """Send offsets: ``i / rate``, or the replay clock (ms -> s), or zeros (as fast as possible)."""
    if rate:
        return np.arange(n, dtype=np.float64) / rate
    if replay_ms is not None:
        return np.asarray(replay_ms, dtype=np.float64) / 1000.0
    return np.zeros(n, dtype=np.float64)


@dataclass(frozen=True)
class GeneratorResult:
    sent: int
    seconds: float  # from the first send to the last acknowledgement
    errors: int
    cpu_s: float  # the generator process's CPU time while sending

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


async def _produce(servers: list[str], p: Payloads, sent: Synchronized, chunk: int = 500) -> GeneratorResult:
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks=1, linger_ms=2, max_batch_size=262_144)
    await producer.start()
    errors = 0
    try:
        n, i = len(p), 0
        offsets = p.offsets_s
        pending: list[asyncio.Future] = []
        start, cpu0 = time.perf_counter(), time.process_time()
        while i < n:
            due = int(np.searchsorted(offsets, time.perf_counter() - start, side="right"))
            if due <= i:
                await asyncio.sleep(min(0.002, max(0.0, offsets[i] - (time.perf_counter() - start))))
                continue
            stop = min(due, i + chunk)
            for k in range(i, stop):
                pending.append(await producer.send(p.topic, p.values[k], key=p.keys[k], partition=p.partitions[k]))
            i = stop
            sent.value = i
            if len(pending) >= 20_000:
                done = await asyncio.gather(*pending, return_exceptions=True)
                errors += sum(isinstance(d, BaseException) for d in done)
                pending = []
        done = await asyncio.gather(*pending, return_exceptions=True)
        errors += sum(isinstance(d, BaseException) for d in done)
        return GeneratorResult(n, time.perf_counter() - start, errors, time.process_time() - cpu0)
    finally:
        await producer.stop()


def _child(servers: list[str], p: Payloads, sent: Synchronized, out: mp.Queue) -> None:
    result = asyncio.run(_produce(servers, p, sent))
    out.put(result)


class Generator:
    """The producer process. ``start()``, then ``sent`` (messages handed to the producer so far) while it
    runs, and ``result()`` for the figures once it is done. Forked, so the payloads are not copied."""

    def __init__(self, servers: list[str], payloads: Payloads) -> None:
        ctx = mp.get_context("fork")
        self._sent = ctx.Value("q", 0, lock=False)
        self._out: mp.Queue = ctx.Queue()
        self._proc = ctx.Process(target=_child, args=(servers, payloads, self._sent, self._out), name="generator")

    def start(self) -> None:
        self._proc.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def sent(self) -> int:
        return int(self._sent.value)

    def result(self, timeout_s: float = 600.0) -> GeneratorResult:
        result = self._out.get(timeout=timeout_s)
        self._proc.join(timeout=10)
        return result

    def stop(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5)
