"""What explanations cost: the rescoring call with and without reasons, on a model bundle.

    python -m loadtests.explain_cost --bundle .segue/models/default --users 256 --repeats 30

Builds ``--users`` sessions of 3 to 12 events from the bundle's catalog, then times ``Rescorer.rank`` for the
whole batch with ``explainer=None`` and with an ``Explainer`` (``--events`` citable events), CPU, one thread.
Prints the medians per batch and per user, and the explanation's share of the plain call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from serving.catalog import Catalog
from serving.explain import Explainer
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from streams.records import Like, Play, Skip
from streams.session import SessionState, apply_event, context_features

T0 = 1_763_900_000_000


def sessions(catalog: Catalog, users: int, seed: int) -> list[SessionState]:
    """Random sessions: plays (partly heard), skips and likes, 3 to 12 events each."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(users):
        state = SessionState.empty(catalog.dim)
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
        out.append(state)
    return out


def time_ranks(rescorers: dict[str, Rescorer], states: list[SessionState], repeats: int) -> dict[str, float]:
    """Median seconds of one ``rank`` of the whole batch per rescorer, the rescorers taking turns (so a noisy
    machine slows them alike)."""
    now = [T0] * len(states)
    runs: dict[str, list[float]] = {name: [] for name in rescorers}
    for r in rescorers.values():
        r.rank(states, now)  # warm-up
    for _ in tqdm(range(repeats), desc="rank", leave=False):
        for name, r in rescorers.items():
            started = time.perf_counter()
            r.rank(states, now)
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
    p.add_argument("--events", type=int, default=3, help="citable events per user (SEGUE_SCORING__EXPLAIN_EVENTS)")
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
        f"events={args.events} repeats={args.repeats}\n"
        f"rank without reasons: {t_plain * 1e3:.2f} ms per batch ({t_plain / args.users * 1e6:.0f} us per user)\n"
        f"rank with reasons:    {t_explained * 1e3:.2f} ms per batch "
        f"({t_explained / args.users * 1e6:.0f} us per user)\n"
        f"main model call alone: {t_model * 1e3:.2f} ms per batch\n"
        f"explanations add {extra * 1e3:.2f} ms per batch = {extra / t_plain:.0%} of the rank without them, "
        f"{extra / t_model:.0%} of the main model call"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
