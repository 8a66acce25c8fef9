"""How useful are a brand-new listener's first recommendations? Measured on simulated listeners never trained on.

    python -m loadtests.cold_start [--bundle .segue/models/default] [--users 500]

Each listener (indices from ``--first-user``, beyond the training listeners) starts a session at a random hour
with a hidden mood (``SimListener.session_mood``) and reacts to three tracks the usual way. After 0, 1, 2 and 3
events the top-10 is ranked by

* **cold start**: before any event, ``ColdStart.new_listener_ranking`` (context prior of the device and hour, plus
  popularity), what the API serves a listener it has never seen; after events, the serving ranking (retrieval +
  ONNX model) of the state seen through the context prior (``ColdStart.ranking_state``), what the worker serves;
* **no prior**: the same ranking of the bare state (after 0 events that is the popularity list, what the API
  served before);
* **popularity**: the most popular tracks not yet heard.

Usefulness is judged by the listener's hidden mood: the expected share of the 10 tracks they would keep (not
skip), from the simulator's own skip model, and the mean affinity (mood · track style). Markdown and a PNG go
to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models_onnx.bundle import read_manifest
from models_onnx.generate import SyntheticWorld, world_from_manifest
from models_onnx.listener import SKIP_SLOPE, SKIP_THRESHOLD, SimListener, next_track
from serving.catalog import Catalog
from serving.cold_start import ColdStart, read_cold_start
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from streams.errors import ModelError
from streams.records import decode_event
from streams.session import SessionState, apply_event

METHODS = ("cold start", "no prior", "popularity")


@dataclass(frozen=True)
class ColdStartResult:
    """Per method and number of events (0..max): expected keep rate and mean affinity of the top-k."""

    keep: dict[str, list[float]]
    affinity: dict[str, list[float]]
    users: int
    k: int


def keep_probability(listener: SimListener, track: int, mood: np.ndarray) -> float:
    """The simulator's probability that ``listener`` in ``mood`` does not skip ``track``."""
    a = listener.affinity(track, mood) + 0.1 * float(listener.world.popularity[track])
    return 1.0 - 1.0 / (1.0 + math.exp(-SKIP_SLOPE * (SKIP_THRESHOLD + listener.pickiness - a)))


def first_events(
    world: SyntheticWorld, listener: SimListener, start_ms: int, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[dict]]:
    """The hidden mood of a session starting at ``start_ms`` and the listener's first ``n`` events in it."""
    mood = listener.session_mood(start_ms, rng)
    events, anchor, ts = [], -1, start_ms
    for _ in range(n):
        ti, source = next_track(world, listener, anchor, rng)
        e = listener.react(
            world.track_ids[ti], ts, rng, session_id=f"cold-{listener.user_id}", mood=mood, source=source
        )
        events.append(e)
        anchor = ti if e["type"] != "skip" else anchor
        ts += e.get("played_ms", int(world.duration_ms[ti])) + 1000
    return mood, events


def measure(
    world: SyntheticWorld,
    catalog: Catalog,
    rescorer: Rescorer,
    cold: ColdStart,
    users: range,
    max_events: int = 3,
    k: int = 10,
    seed: int = 5,
    progress: bool = False,
) -> ColdStartResult:
    """Keep rate and affinity of each method's top-``k`` after 0..``max_events`` events, averaged over users."""
    rng = np.random.default_rng(seed)
    keep = {m: np.zeros(max_events + 1) for m in METHODS}
    aff = {m: np.zeros(max_events + 1) for m in METHODS}
    by_pop = np.argsort(-catalog.popularity, kind="stable")
    for u in tqdm(users, desc="listeners", disable=not progress):
        listener = world.listener(u)
        start = 1_704_067_200_000 + int(rng.integers(0, 7 * 86_400_000))
        mood, events = first_events(world, listener, start, max_events, rng)
        state = SessionState.empty(catalog.dim)
        for n in range(max_events + 1):
            if n > 0:
                e = decode_event(json.dumps(events[n - 1]))
                i = catalog.index[e.track_id]
                state = apply_event(state, e, i, catalog.embeddings[i])
            device = events[n - 1]["context"]["device"] if n > 0 else listener.device
            now = state.last_ts_ms if n > 0 else start
            heard = set(state.recent)
            lists = {"popularity": [int(t) for t in by_pop if int(t) not in heard][:k]}
            if n == 0:  # what the API serves a listener with no state (SessionBias.new_listener)
                idx, _ = cold.new_listener_ranking(catalog.embeddings, catalog.popularity, device, now, k)
                lists["cold start"] = [int(t) for t in idx]
                lists["no prior"] = lists["popularity"]
            else:  # what the worker serves after each event (SessionBias.apply, then the model)
                (ranked,) = rescorer.rank([cold.ranking_state(state, device, now)], [now])
                lists["cold start"] = [int(t) for t in ranked.indices[:k]]
                (bare,) = rescorer.rank([state], [now])
                lists["no prior"] = [int(t) for t in bare.indices[:k]]
            for m, tracks in lists.items():
                keep[m][n] += np.mean([keep_probability(listener, t, mood) for t in tracks])
                aff[m][n] += np.mean([listener.affinity(t, mood) for t in tracks])
    n_users = len(users)
    return ColdStartResult(
        {m: (v / n_users).round(4).tolist() for m, v in keep.items()},
        {m: (v / n_users).round(4).tolist() for m, v in aff.items()},
        n_users,
        k,
    )


def report(r: ColdStartResult, header: str) -> str:
    n = len(r.keep["popularity"])
    lines = [
        header,
        "",
        "| events so far | " + " | ".join(f"keep rate: {m}" for m in METHODS) + " | "
        + " | ".join(f"affinity: {m}" for m in METHODS) + " |",
        "|---:|" + "---:|" * (2 * len(METHODS)),
    ]  # fmt: skip
    for i in range(n):
        cells = [f"{r.keep[m][i]:.3f}" for m in METHODS] + [f"{r.affinity[m][i]:+.3f}" for m in METHODS]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(r: ColdStartResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for m in METHODS:
        ax.plot(range(len(r.keep[m])), r.keep[m], marker="o", label=m)
    ax.set_xlabel("events the new listener has sent")
    ax.set_ylabel(f"expected share of the top-{r.k} kept (not skipped)")
    ax.set_xticks(range(len(r.keep["popularity"])))
    ax.set_title(f"Cold start: {r.users} new simulated listeners")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.cold_start", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=Path(".segue/models/default"))
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--first-user", type=int, default=5000, help="first listener index (beyond training's)")
    p.add_argument("--out", type=Path, default=Path(".segue/reports/cold-start"))
    args = p.parse_args(argv)
    try:
        cold = read_cold_start(args.bundle)
        if cold is None:
            raise ModelError(f"{args.bundle} has no cold-start data: python -m models_onnx.cold_start_fit --bundle DIR")
        catalog = Catalog.load(args.bundle)
        scorer = OnnxScorer.load(args.bundle, device="cpu")
        world = world_from_manifest(read_manifest(args.bundle))
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rescorer = Rescorer(catalog.embeddings, ExactRetriever(catalog.embeddings), scorer)
    users = range(args.first_user, args.first_user + args.users)
    result = measure(world, catalog, rescorer, cold, users, progress=True)
    args.out.mkdir(parents=True, exist_ok=True)
    text = report(result, f"{result.users} new simulated listeners, top-{result.k}, model {catalog.model_version}")
    (args.out / "cold-start.md").write_text(text + "\n")
    plot(result, args.out / "cold-start.png")
    print(text)
    print(f"\nwrote {args.out / 'cold-start.md'} and {args.out / 'cold-start.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
