"""Does steering by prompt move recommendations the way the prompt says? Measured across many listeners.

    python -m loadtests.steering [--bundle .segue/models/default] [--users 400] [--strength 1.0]

For simulated listeners of the bundle's world, each with one session of ``--events`` events applied through
``streams.session.apply_event``, the serving ranking (retrieval + the ONNX session model) is computed without
and with each prompt's steer. Per prompt it reports the change of the top-``k`` list's mean audio features
(steered minus unsteered, averaged over listeners), the share of listeners whose mean moved the expected way
for every expected feature, and how the prompt was read. Results: markdown and a PNG in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from tqdm import tqdm

from models_onnx.bundle import read_manifest
from models_onnx.generate import SyntheticWorld, world_from_manifest
from models_onnx.listener import simulate_user
from serving.catalog import Catalog
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from serving.steering import FEATURES, FeatureMap, PromptReader, Reading, catalog_features, make_steer, steer_state
from streams.records import decode_event
from streams.session import SessionState, apply_event

# Prompts with a known direction: feature -> expected sign of the change.
PROMPTS: Final[Mapping[str, Mapping[str, int]]] = {
    "upbeat workout": {"energy": +1},
    "rainy evening piano": {"energy": -1, "acousticness": +1},
    "sad songs": {"valence": -1},
    "happy dance party": {"valence": +1, "danceability": +1},
    "calm acoustic guitar": {"energy": -1, "acousticness": +1},
    "energetic electronic music": {"energy": +1, "acousticness": -1},
}


@dataclass(frozen=True)
class PromptResult:
    prompt: str
    reading: Reading
    expected: Mapping[str, int]
    delta: np.ndarray  # float32 [4]: mean over users of (steered - unsteered) top-k mean features
    moved_share: float  # share of users whose top-k mean moved the expected way on every expected feature
    changed_share: float  # share of users whose top-k changed at all
    unsteered: np.ndarray  # float32 [4]: mean over users of the unsteered top-k mean features

    @property
    def ok(self) -> bool:
        return all(np.sign(self.delta[FEATURES.index(f)]) == s for f, s in self.expected.items())


def session_states(
    world: SyntheticWorld, catalog: Catalog, n_users: int, events: int, rng: np.random.Generator, first_user: int = 0
) -> tuple[list[SessionState], list[int]]:
    """One session of ``events`` events per listener, applied through the session rule; (states, last ts)."""
    states, times = [], []
    for u in range(first_user, first_user + n_users):
        listener = world.listener(u)
        state = SessionState.empty(catalog.dim)
        start = 1_704_067_200_000 + int(rng.integers(0, 86_400_000))
        for raw in simulate_user(world, listener, 1, events, start, rng):
            event = decode_event(json.dumps(raw))
            i = catalog.index[event.track_id]
            state = apply_event(state, event, i, catalog.embeddings[i])
        states.append(state)
        times.append(state.last_ts_ms)
    return states, times


def top_features(rankings: Sequence[np.ndarray], features: np.ndarray, k: int) -> np.ndarray:
    """Mean audio features float32 [B, 4] of each user's top-``k`` tracks."""
    return np.stack([features[r[:k]].mean(axis=0) for r in rankings])


def measure(
    rescorer: Rescorer,
    features: np.ndarray,
    reader: PromptReader,
    fmap: FeatureMap,
    states: Sequence[SessionState],
    times: Sequence[int],
    prompts: Mapping[str, Mapping[str, int]] = PROMPTS,
    strength: float = 1.0,
    k: int = 10,
    model_version: str = "",
    progress: bool = False,
) -> list[PromptResult]:
    """Rank every state without and with each prompt's steer; the change of the top-``k`` mean features."""
    base = top_features([r.indices for r in rescorer.rank(states, times)], features, k)  # [B, 4]
    out = []
    for prompt, expected in tqdm(prompts.items(), desc="prompts", disable=not progress):
        reading = reader.read(prompt)
        steer = make_steer(reading, fmap, strength, now_ms=0, ttl_s=3600, model_version=model_version)
        steered = [steer_state(s, steer, 0, model_version) for s in states]
        moved = top_features([r.indices for r in rescorer.rank(steered, times)], features, k) - base  # [B, 4]
        ok = np.ones(len(states), bool)
        for f, sign in expected.items():
            ok &= np.sign(moved[:, FEATURES.index(f)]) == sign
        changed = np.abs(moved).sum(axis=1) > 0
        out.append(
            PromptResult(
                prompt,
                reading,
                expected,
                moved.mean(axis=0),
                float(ok.mean()),
                float(changed.mean()),
                base.mean(axis=0),
            )
        )
    return out


def report(results: Sequence[PromptResult], header: str) -> str:
    """The results as a markdown table."""
    lines = [
        header,
        "",
        "| prompt | read as | expected | Δ energy | Δ valence | Δ acousticness | Δ danceability "
        "| lists changed | users moved as expected |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        read = ", ".join(f"{m.descriptor} ({m.similarity:.2f})" for m in r.reading.matches)
        exp = ", ".join(f"{f} {'up' if s > 0 else 'down'}" for f, s in r.expected.items())
        deltas = " | ".join(f"{d:+.3f}" for d in r.delta)
        lines.append(f"| {r.prompt} | {read} | {exp} | {deltas} | {r.changed_share:.0%} | {r.moved_share:.0%} |")
    return "\n".join(lines)


def plot(results: Sequence[PromptResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(FEATURES)
    x = np.arange(len(results))
    for j, f in enumerate(FEATURES):
        ax.bar(x + (j - 1.5) * width, [r.delta[j] for r in results], width, label=f)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x, [r.prompt for r in results], rotation=15)
    ax.set_ylabel("change of the top-10 mean feature (steered - unsteered)")
    ax.set_title("Steering by prompt: how the recommendations' audio features move")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.steering", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=Path(".segue/models/default"))
    p.add_argument("--users", type=int, default=400)
    p.add_argument("--events", type=int, default=5, help="events in each listener's session before ranking")
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--k", type=int, default=10, help="length of the list whose mean features are compared")
    p.add_argument("--out", type=Path, default=Path(".segue/reports/steering"))
    args = p.parse_args(argv)

    from serving.text_encoder import TextEncoder

    catalog = Catalog.load(args.bundle)
    scorer = OnnxScorer.load(args.bundle, device="cpu")
    rescorer = Rescorer(catalog.embeddings, ExactRetriever(catalog.embeddings), scorer)
    features = catalog_features(args.bundle)
    world = world_from_manifest(read_manifest(args.bundle))
    states, times = session_states(world, catalog, args.users, args.events, np.random.default_rng(11))
    reader = PromptReader(TextEncoder.load())
    results = measure(
        rescorer,
        features,
        reader,
        FeatureMap.fit(features, catalog.embeddings),
        states,
        times,
        strength=args.strength,
        k=args.k,
        model_version=catalog.model_version,
        progress=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    header = (
        f"{args.users} simulated listeners, {args.events} events each, strength {args.strength}, top-{args.k}, "
        f"model {catalog.model_version}"
    )
    text = report(results, header)
    (args.out / "steering.md").write_text(text + "\n")
    plot(results, args.out / "steering.png")
    print(text)
    print(f"\nwrote {args.out / 'steering.md'} and {args.out / 'steering.png'}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
