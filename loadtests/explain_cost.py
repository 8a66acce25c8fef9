"""What explanations cost: the rescoring call with and without reasons, on a model bundle.

    python -m loadtests.explain_cost --bundle .segue/models/default --users 256 --repeats 30

Builds ``--users`` sessions of 3 to 12 events from the bundle's catalog, then times ``Rescorer.rank`` for the
whole batch with ``explainer=None`` and with an ``Explainer`` (``--events`` citable events), CPU, one thread.
Prints the medians per batch and per user, and the explanation's share of the plain call. Then checks
faithfulness on up to 300 of the users: each session is replayed through ``apply_event`` without the event its
reasons cite, and the cited track must score lower; exit status 1 if one does not.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from serving.catalog import Catalog
from serving.explain import REASON_CODES, Explainer
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from streams.records import Event, Like, Play, Skip
from streams.session import SessionState, apply_event, context_features

T0 = 1_763_900_000_000


def sessions(catalog: Catalog, users: int, seed: int) -> list[SessionState]:
    """Random sessions: plays (partly heard), skips and likes, 3 to 12 events each."""
    return [s for s, _ in sessions_with_events(catalog, users, seed)]


def sessions_with_events(catalog: Catalog, users: int, seed: int) -> list[tuple[SessionState, list[tuple[Event, int]]]]:
    """``sessions`` with the (event, track index) pairs that built each state."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(users):
        state = SessionState.empty(catalog.dim)
        applied: list[tuple[Event, int]] = []
        for j, t in enumerate(rng.choice(len(catalog), size=int(rng.integers(3, 13)), replace=False)):
            common = {"event_id": f"{u}-{j}", "user_id": f"u{u}", "track_id": catalog.track_ids[t], "ts_ms": T0 + j}
            kind = rng.integers(4)
            if kind == 0:
                event = Skip(**common, played_ms=5_000)
            elif kind == 1:
                event = Like(**common)
            else:
                event = Play(**common, played_ms=int(rng.integers(30_000, 200_000)), duration_ms=200_000)
            state = apply_event(state, event, int(t), catalog.embeddings[t])
            applied.append((event, int(t)))
        out.append((state, applied))
    return out


def faithfulness(
    catalog: Catalog, scorer: OnnxScorer, users: int, events: int, seed: int
) -> tuple[Counter[str], int, int, float]:
    """Replay each session without the event its reasons cite and rescore the cited track.

    Returns (reasons per code, cited reasons checked, how many of them scored lower without the event,
    the smallest drop)."""
    built = sessions_with_events(catalog, users, seed)
    states = [s for s, _ in built]
    explainer = Explainer(scorer, catalog.embeddings, events=events)
    rescorer = Rescorer(catalog.embeddings, ExactRetriever(catalog.embeddings), scorer, explainer=explainer)
    rankings = rescorer.rank(states, [T0 + 3_600_000] * len(states))
    codes: Counter[str] = Counter()
    checked = lower = 0
    smallest = float("inf")
    for (state, applied), ranking in zip(built, rankings, strict=True):
        ex = ranking.reasons
        assert ex is not None
        for j, track in enumerate(ranking.indices):
            codes[REASON_CODES[ex.codes[j]]] += 1
            if ex.cited[j] < 0:
                continue
            k = next(i for i, (_, t) in enumerate(applied) if t == ex.cited[j])
            replay = SessionState.empty(catalog.dim)
            for e, t in applied[:k] + applied[k + 1 :]:
                replay = apply_event(replay, e, t, catalog.embeddings[t])
            drop = _score(scorer, catalog, state, int(track)) - _score(scorer, catalog, replay, int(track))
            checked += 1
            lower += drop > 0
            smallest = min(smallest, drop)
    return codes, checked, lower, smallest


def _score(scorer: OnnxScorer, catalog: Catalog, state: SessionState, track: int) -> float:
    ctx = context_features(state, T0 + 3_600_000)[None]
    cand = catalog.embeddings[[track]][None]
    return float(scorer.score(state.pos[None], state.neg[None], state.taste[None], ctx, cand)[0, 0])


def time_ranks(rescorers: dict[str, Rescorer], states: list[SessionState], repeats: int) -> dict[str, float]:
    """Median seconds of one ``rank`` of the whole batch per rescorer, the rescorers taking turns (so a noisy
    machine slows them alike)."""
    now = [T0] * len(states)
    runs: dict[str, list[float]] = {name: [] for name in rescorers}
    for r in rescorers.values():
        r.rank(states, now, sources=states)  # warm-up
    for _ in tqdm(range(repeats), desc="rank", leave=False):
        for name, r in rescorers.items():
            started = time.perf_counter()
            r.rank(states, now, sources=states)  # as the worker calls it
            runs[name].append(time.perf_counter() - started)
    return {name: statistics.median(v) for name, v in runs.items()}


def time_model_call(scorer: OnnxScorer, catalog: Catalog, states: list[SessionState], k: int, repeats: int) -> float:
    """Median seconds of the main model call alone: the batch's users x ``k`` candidates."""
    rng = np.random.default_rng(1)
    inputs = (
        np.stack([s.pos for s in states]),
        np.stack([s.neg for s in states]),
        np.stack([s.taste for s in states]),
        np.stack([context_features(s, T0) for s in states]),
        catalog.embeddings[rng.integers(0, len(catalog), (len(states), k))],
    )
    scorer.score(*inputs)
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        scorer.score(*inputs)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.explain_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=".segue/models/default")
    p.add_argument("--users", type=int, default=256)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--events", type=int, default=2, help="citable events per user (SEGUE_SCORING__EXPLAIN_EVENTS)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    catalog = Catalog.load(args.bundle)
    scorer = OnnxScorer.load(args.bundle, device="cpu")
    states = sessions(catalog, args.users, args.seed)
    retriever = ExactRetriever(catalog.embeddings)
    plain = Rescorer(catalog.embeddings, retriever, scorer)
    explained = Rescorer(
        catalog.embeddings, retriever, scorer, explainer=Explainer(scorer, catalog.embeddings, events=args.events)
    )
    medians = time_ranks({"plain": plain, "explained": explained}, states, args.repeats)
    t_plain, t_explained = medians["plain"], medians["explained"]
    t_model = time_model_call(scorer, catalog, states, plain.n_candidates, args.repeats)
    extra = t_explained - t_plain
    print(
        f"bundle={catalog.model_version} tracks={len(catalog)} dim={catalog.dim} users={args.users} "
        f"events={args.events} repeats={args.repeats} load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n"
        f"rank without reasons: {t_plain * 1e3:.2f} ms per batch ({t_plain / args.users * 1e6:.0f} us per user)\n"
        f"rank with reasons:    {t_explained * 1e3:.2f} ms per batch "
        f"({t_explained / args.users * 1e6:.0f} us per user)\n"
        f"main model call alone: {t_model * 1e3:.2f} ms per batch\n"
        f"explanations add {extra * 1e3:.2f} ms per batch = {extra / t_plain:.0%} of the rank without them, "
        f"{extra / t_model:.0%} of the main model call"
    )
    codes, checked, lower, smallest = faithfulness(catalog, scorer, min(args.users, 300), args.events, args.seed + 1)
    print(
        "reasons: " + ", ".join(f"{c} {n}" for c, n in codes.most_common()) + "\n"
        f"faithfulness: {checked} reasons cite an event; replayed without it, {lower} of them score lower "
        f"(smallest drop {smallest:.4f})"
    )
    return 0 if lower == checked else 1


if __name__ == "__main__":
    sys.exit(main())
