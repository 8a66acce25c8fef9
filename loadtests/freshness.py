"""The independent freshness measurement: read the recommendations topic and time every record.

Per record, with real wall-clock timestamps: ``generated_ms - event_ms`` (the worker's own stamp minus the
broker timestamp of the user's last event in the batch) and ``received_ms - event_ms`` (when this reader
got it). One record covers a user's last event of a micro-batch, so this is a per-record (per user and
batch) view, beside the worker's per-event histogram. It also keeps the topic's high watermark lag.
"""

from __future__ import annotations

import asyncio
import threading
import time

import msgspec
import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition


class _Stamps(msgspec.Struct):
    event_ms: int = 0
    generated_ms: int = 0


class FreshnessReader:
    """Reads ``topic`` from the start in a thread of its own until ``stop()``."""

    def __init__(self, servers: list[str], topic: str, partitions: int) -> None:
        self._servers = servers
        self._topic = topic
        self._partitions = partitions
        self._rows: list[tuple[float, int, int]] = []  # (received_ms, event_ms, generated_ms)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="freshness", daemon=True)
        self.error: BaseException | None = None

    @property
    def seen(self) -> int:
        return len(self._rows)

    def start(self, timeout_s: float = 30.0) -> FreshnessReader:
        self._thread.start()
        self._ready.wait(timeout_s)
        return self

    async def _run(self) -> None:
        decoder = msgspec.json.Decoder(_Stamps)
        consumer = AIOKafkaConsumer(bootstrap_servers=self._servers, enable_auto_commit=False, fetch_max_wait_ms=20)
        try:
            await consumer.start()
            tps = [TopicPartition(self._topic, p) for p in range(self._partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._ready.set()
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=50, max_records=5000)
                now = time.time() * 1000.0
                for records in batch.values():
                    for r in records:
                        s = decoder.decode(r.value)
                        self._rows.append((now, s.event_ms, s.generated_ms))
        except BaseException as exc:  # noqa: BLE001 - reported by the benchmark, not raised in a thread
            self.error = exc
        finally:
            self._ready.set()
            await consumer.stop()

    def stop(self) -> np.ndarray:
        """Stop reading; rows float64 [n, 3]: received_ms, event_ms, generated_ms."""
        self._stop.set()
        self._thread.join(timeout=10)
        return np.array(self._rows, dtype=np.float64).reshape(-1, 3)
