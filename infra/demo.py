"""The live demo: ``make demo`` (``python -m infra.demo``).

Starts the embedded broker and Redis on loopback, creates the topics, starts the worker and the API as
their own processes, then lets simulated listeners play what segue recommends: each listener takes the top
recommendation, skips or likes it by its hidden taste, and the terminal shows, for a few listeners, how
the next recommendations change, with the worker's event -> recommendations latency percentiles.
Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infra.prom_text import quantile_from_text, total
from infra.services import ApiService, WorkerService
from infra.stack import EmbeddedStack
from models_onnx.bundle import read_manifest
from models_onnx.generate import SyntheticWorld, world_from_manifest
from models_onnx.listener import SimListener
from serving.settings import ApiSettings
from streams.errors import SegueError
from streams.sdk import EventProducer
from streams.settings import DEFAULT_MODEL_DIR, ScoringSettings, WorkerSettings
from streams.topics import ensure_topics

EVENT_LABEL = {"play": "PLAY", "skip": "SKIP", "like": "LIKE"}


@dataclass
class Listener:
    """A simulated listener and what it is hearing."""

    sim: SimListener
    mood: np.ndarray
    session_id: str
    heard: list[str] = field(default_factory=list)
    last_top: list[str] = field(default_factory=list)


# Set by Ctrl-C (or SIGTERM) while listeners play: the loop ends between two events and the services are stopped
# in order. An interrupt raised at an arbitrary point (inside the Kafka client, say) could leave one of its locks
# held and hang the shutdown.
STOP = threading.Event()
STOPPED = "\nstopped; the broker, Redis, worker and API are shut down."


def _request_stop(signum: int, frame: object) -> None:
    STOP.set()


def get_json(url: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback only
            return json.loads(response.read())
    except (OSError, urllib.error.HTTPError, ValueError):
        return None


def choose_next(
    world: SyntheticWorld, listener: Listener, recs: dict[str, Any] | None, rng: np.random.Generator
) -> str:
    """The top recommendation the listener has not heard this session; a popular track to start with."""
    if recs:
        for item in recs["items"]:
            if item["track_id"] not in listener.heard[-50:]:
                return str(item["track_id"])
    i = int(np.searchsorted(world.pop_cdf, rng.random()))
    return world.track_ids[min(i, world.n_tracks - 1)]


def describe(world: SyntheticWorld, track_id: str) -> str:
    return f"{track_id} ({world.genre_names[int(world.track_genre[world.index[track_id]])]})"


def wait_fresh(api: str, user: str, event_id: str, timeout_s: float = 3.0) -> tuple[dict[str, Any] | None, float]:
    """Poll the API until the user's recommendations answer ``event_id``; return them and the wait."""
    start = time.perf_counter()
    deadline = start + timeout_s
    while time.perf_counter() < deadline and not STOP.is_set():
        recs = get_json(f"{api}/v1/users/{user}/recommendations?limit=5")
        if recs and recs.get("event_id") == event_id:
            return recs, time.perf_counter() - start
        time.sleep(0.005)
    return None, time.perf_counter() - start


def summary(worker: WorkerService, sent: int, elapsed: float) -> str:
    text = worker.metrics()
    q = {p: quantile_from_text(text, "segue_event_to_recommendations_seconds", p / 100) * 1000 for p in (50, 95, 99)}
    misses = total(text, "segue_budget_misses_total")
    dead = total(text, "segue_dead_letters_total")
    applied = total(text, "segue_events_total", outcome="applied")
    return (
        f"-- {sent} events sent ({sent / max(elapsed, 1e-9):.0f}/s), {applied:.0f} applied | "
        f"event->recommendations p50 {q[50]:.1f} ms  p95 {q[95]:.1f} ms  p99 {q[99]:.1f} ms | "
        f"budget misses {misses:.0f} | dead letters {dead:.0f}"
    )


def run(args: argparse.Namespace) -> int:
    model_dir = Path(args.model_dir)
    manifest = read_manifest(model_dir)
    world = world_from_manifest(manifest)
    rng = np.random.default_rng(args.seed)
    run_dir = Path(args.run_dir)
    print(f"segue demo: model {manifest['model_version']} ({manifest['n_tracks']} tracks), logs in {run_dir}")
    with EmbeddedStack(run_dir) as stack:
        scoring = ScoringSettings(model_dir=model_dir.resolve(), budget_ms=args.budget_ms)
        wsettings = WorkerSettings(kafka=stack.kafka, redis=stack.redis, scoring=scoring, data_dir=run_dir / "worker")
        ensure_topics(stack.kafka, wsettings.topics)
        worker = WorkerService("worker", run_dir, wsettings)
        api = ApiService("api", run_dir, ApiSettings(kafka=stack.kafka, redis=stack.redis, scoring=scoring))
        try:
            worker.start()
            api.start()
            print(f"broker {stack.kafka.bootstrap_servers} | redis {stack.redis.url} | api {api.url}")
            print("waiting for the worker to join its consumer group ...")
            worker.wait_ready()
            api.wait_ready()
            print(
                f"ready: metrics at {worker.metrics_url}, recommendations at {api.url}/v1/users/<user>/recommendations"
            )
            previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                return listen(args, world, stack, worker, api.url, rng)
            finally:  # a second Ctrl-C during the shutdown interrupts it
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        finally:
            api.stop()
            worker.stop()


def listen(
    args: argparse.Namespace,
    world: SyntheticWorld,
    stack: EmbeddedStack,
    worker: WorkerService,
    api: str,
    rng: np.random.Generator,
) -> int:
    """The listeners take turns at ``args.rate`` until the duration is over or a stop is requested (``STOP``)."""
    now = time.time_ns() // 1_000_000
    listeners = []
    for i in range(args.listeners):
        sim = world.listener(i)
        listeners.append(Listener(sim, sim.session_mood(now, rng), f"{sim.user_id}-{now}"))
    featured = {lst.sim.user_id for lst in listeners[: args.featured]}
    interval = 1.0 / args.rate
    started = time.perf_counter()
    last_summary = started
    sent = 0
    with EventProducer.connect(stack.kafka, linger_ms=1) as producer:
        while not STOP.is_set() and (args.duration <= 0 or time.perf_counter() - started < args.duration):
            lst = listeners[sent % len(listeners)]
            user = lst.sim.user_id
            recs = get_json(f"{api}/v1/users/{user}/recommendations?limit=20") if lst.heard else None
            track = choose_next(world, lst, recs, rng)
            event = lst.sim.react(
                track,
                time.time_ns() // 1_000_000,
                rng,
                session_id=lst.session_id,
                mood=lst.mood,
                source="recommendation" if recs else "search",
            )
            lst.mood = lst.sim.drift(lst.mood, rng)
            lst.heard.append(track)
            producer.send(event)
            sent += 1
            if user in featured:
                producer.flush()
                fresh, waited = wait_fresh(api, user, event["event_id"])
                if STOP.is_set():
                    break
                top = [item["track_id"] for item in fresh["items"]] if fresh else []
                new = len(set(top) - set(lst.last_top)) if lst.last_top else len(top)
                lst.last_top = top or lst.last_top
                shown = ", ".join(describe(world, t) for t in top[:3])
                print(
                    f"{user}  {EVENT_LABEL[event['type']]:4} {describe(world, track):24} -> next: {shown}"
                    f"   [{new} of top 5 new, seen by the app after {waited * 1000:.0f} ms]"
                )
            STOP.wait(max(0.0, started + sent * interval - time.perf_counter()))
            if time.perf_counter() - last_summary >= args.summary_every:
                last_summary = time.perf_counter()
                print(summary(worker, sent, last_summary - started))
        producer.flush()
    time.sleep(0.5)
    print(summary(worker, sent, time.perf_counter() - started))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="segue-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR), help="model bundle (make model builds it)")
    parser.add_argument("--run-dir", default=".segue/run", help="logs of the broker, Redis, worker and API")
    parser.add_argument("--listeners", type=int, default=200, help="simulated listeners")
    parser.add_argument("--featured", type=int, default=3, help="listeners whose recommendations are shown")
    parser.add_argument("--rate", type=float, default=100.0, help="events per second, all listeners together")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 runs until Ctrl-C")
    parser.add_argument("--budget-ms", type=float, default=50.0, help="event -> recommendations budget")
    parser.add_argument("--summary-every", type=float, default=5.0, help="seconds between latency summaries")
    parser.add_argument("--seed", type=int, default=1, help="seed of the listeners' randomness")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        code = run(args)
        if STOP.is_set():
            print(STOPPED)
        return code
    except KeyboardInterrupt:
        print(STOPPED)
        return 0
    except SegueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
