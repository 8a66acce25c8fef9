"""The load generator: pre-encoded events sent by an aiokafka producer in a process of its own.

Payloads (JSON values, keys, partitions by the Kafka default murmur2 partitioner) are encoded before the
clock starts, so the generator spends its time producing, not encoding. It paces by a schedule of send
offsets (seconds from its start): ``i / rate`` for a target rate, the compressed replay clock for a
replay, or all zeros for as fast as possible. The broker timestamp of each message is its send time,
which is what the worker's latency histogram and the recommendations' ``event_ms`` start from.

With ``per_message > 1`` events are packed as an ingest gateway would: per partition, the events due within
``window_s`` of the first one (at most ``per_message``) go out as one batch message (a JSON array, see
docs/events.md), sent when its last event is due. At a paced rate that is small batches (the window
bounds the added latency); as fast as possible, full ones.
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
    keys: list[bytes | None]
    values: list[bytes]
    partitions: list[int]
    offsets_s: np.ndarray  # float64 [n], when to send each message, seconds from the start
    ends: np.ndarray  # int64 [n], events sent up to and including each message (cumulative)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def events(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    @property
    def mean_bytes(self) -> float:
        """Payload bytes per event (a batch message's bytes are shared by its events)."""
        return sum(map(len, self.values)) / max(1, self.events)


def encode(
    events: list[dict[str, Any]],
    topic: str,
    partitions: int,
    offsets_s: np.ndarray,
    per_message: int = 1,
    window_s: float = 0.005,
) -> Payloads:
    """Encode ``events`` (already in send order) for ``topic`` with ``partitions`` partitions, ``per_message``
    events at most per message (see the module docstring)."""
    enc = msgspec.json.Encoder()
    keys = [e["user_id"].encode() for e in events]
    by_key: dict[bytes, int] = {}
    parts = [by_key.setdefault(k, (murmur2(k) & 0x7FFFFFFF) % partitions) for k in keys]
    values = [enc.encode(e) for e in events]
    offsets = np.asarray(offsets_s, dtype=np.float64)
    if per_message <= 1:
        return Payloads(topic, list(keys), values, parts, offsets, np.arange(1, len(events) + 1, dtype=np.int64))
    messages: list[tuple[float, int, list[int]]] = []  # (send offset, partition, event indices)
    open_: dict[int, tuple[float, list[int]]] = {}
    for i, part in enumerate(parts):
        first, members = open_.get(part, (offsets[i], []))
        if members and (len(members) >= per_message or offsets[i] - first > window_s):
            messages.append((offsets[members[-1]], part, members))
            first, members = offsets[i], []
        members.append(i)
        open_[part] = (first, members)
    messages.extend((offsets[m[-1]], part, m) for part, (_, m) in open_.items() if m)
    messages.sort(key=lambda m: (m[0], m[2][0]))
    counts = np.cumsum([len(m[2]) for m in messages], dtype=np.int64)
    return Payloads(
        topic,
        [None] * len(messages),
        [b"[" + b",".join(values[i] for i in m[2]) + b"]" for m in messages],
        [m[1] for m in messages],
        np.asarray([m[0] for m in messages], dtype=np.float64),
        counts,
    )


def schedule(n: int, rate: float | None, replay_ms: np.ndarray | None = None) -> np.ndarray:
    """Send offsets: ``i / rate``, or the replay clock (ms -> s), or zeros (as fast as possible)."""
    if rate:
        return np.arange(n, dtype=np.float64) / rate
    if replay_ms is not None:
        return np.asarray(replay_ms, dtype=np.float64) / 1000.0
    return np.zeros(n, dtype=np.float64)


@dataclass(frozen=True)
class GeneratorResult:
    sent: int  # events (a batch message counts its events)
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
            sent.value = int(p.ends[i - 1])
            if len(pending) >= 20_000:
                done = await asyncio.gather(*pending, return_exceptions=True)
                errors += sum(isinstance(d, BaseException) for d in done)
                pending = []
        done = await asyncio.gather(*pending, return_exceptions=True)
        errors += sum(isinstance(d, BaseException) for d in done)
        return GeneratorResult(p.events, time.perf_counter() - start, errors, time.process_time() - cpu0)
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
