"""``segue-send``: send events from a JSON-lines file (or stdin) through the producer SDK.

    segue-send events.jsonl --bootstrap 127.0.0.1:9092
    cat events.jsonl | python -m streams.send - --bootstrap 127.0.0.1:9092

Each line is one event in contract v1 (docs/events.md). Invalid lines are reported with their line number
and reason and not sent; the exit status is 1 if any line was invalid, 2 if the broker is unreachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

from tqdm import tqdm

from streams.errors import BrokerUnavailable, InvalidEvent
from streams.sdk import EventProducer
from streams.settings import TopicSettings, WorkerSettings


def send_lines(producer: EventProducer, lines: Iterable[str], errors: TextIO) -> tuple[int, int]:
    """Send every non-blank line; return (sent, invalid). Invalid lines are described on ``errors``."""
    sent = invalid = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            producer.send(line.strip().encode())
            sent += 1
        except InvalidEvent as exc:
            invalid += 1
            print(f"line {number}: {exc.reason}: {exc.detail}", file=errors)
    return sent, invalid


def main(argv: Sequence[str] | None = None) -> int:
    defaults = WorkerSettings()
    parser = argparse.ArgumentParser(prog="segue-send", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", default="-", help="JSON-lines file, or - for stdin (default)")
    parser.add_argument("--bootstrap", default=defaults.kafka.bootstrap_servers, help="Kafka bootstrap servers")
    parser.add_argument("--topic", default=TopicSettings().events, help="events topic")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    kafka = defaults.kafka.model_copy(update={"bootstrap_servers": args.bootstrap})
    try:
        with EventProducer.connect(kafka, topic=args.topic) as producer:
            stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
            with stream:
                lines = tqdm(stream, unit=" lines", disable=args.quiet, file=sys.stderr)
                sent, invalid = send_lines(producer, lines, sys.stderr)
            producer.flush()
    except BrokerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"sent {sent} events to {args.topic}; {invalid} invalid lines skipped", file=sys.stderr)
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
