"""The ceiling: a consumer that only reads and decodes the events topic (aiokafka getmany + msgspec).

    python -m loadtests.ceiling --bootstrap 127.0.0.1:9092 --topic segue.events --partitions 8 --events 100000

Reads from the start of every partition until ``--events`` messages or ``--idle-s`` without data and
prints one JSON object: events, decoded, seconds (first record to last), events_per_s, cpu_s.
No worker can be faster than this on the same broker and topic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence

import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.errors import InvalidEvent
from streams.records import decode_message


async def consume(servers: list[str], topic: str, partitions: int, events: int, idle_s: float) -> dict[str, float]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, fetch_max_wait_ms=10, max_partition_fetch_bytes=4 << 20
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        n = decoded = 0
        first = last = idle_since = time.perf_counter()
        cpu0 = psutil.Process().cpu_times()
        while n < events and time.perf_counter() - idle_since < idle_s:
            batch = await consumer.getmany(timeout_ms=100, max_records=10_000)
            if not batch:
                continue
            if n == 0:
                first = time.perf_counter()
                cpu0 = psutil.Process().cpu_times()
            for records in batch.values():
                for r in records:
                    for _, event in decode_message(r.value):  # a batch message holds many events
                        n += 1
                        decoded += not isinstance(event, InvalidEvent)
            last = idle_since = time.perf_counter()
        cpu1 = psutil.Process().cpu_times()
        seconds = max(last - first, 1e-9)
        cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        return {"events": n, "decoded": decoded, "seconds": seconds, "events_per_s": n / seconds, "cpu_s": cpu}
    finally:
        await consumer.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segue-ceiling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--idle-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    servers = [s.strip() for s in args.bootstrap.split(",") if s.strip()]
    print(json.dumps(asyncio.run(consume(servers, args.topic, args.partitions, args.events, args.idle_s))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
