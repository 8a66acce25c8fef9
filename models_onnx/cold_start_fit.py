"""Fit the cold-start data of a bundle (``serving.cold_start.ColdStart``) on generated listening data.

    python -m models_onnx.cold_start_fit --bundle .segue/models/default

Training (``models_onnx.train``) calls ``fit_cold_start`` with its own events; this command adds the file to a
bundle trained before cold start existed, by simulating the bundle's world again (numpy only, no torch).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from models_onnx.bundle import read_items, read_manifest
from models_onnx.generate import SyntheticWorld, world_from_manifest
from models_onnx.listener import DEVICES
from serving.cold_start import DAYPARTS, FEATURES, ColdStart, daypart, write_cold_start
from streams.errors import ModelError


def fit_prior(
    events: Iterable[Mapping[str, Any]],
    index: Mapping[str, int],
    items: np.ndarray,
    users: Collection[str] | None = None,
    shrink: float = 20.0,
) -> np.ndarray:
    """Context prior float32 [len(DEVICES) + 1, len(DAYPARTS), D]: mean embedding of kept tracks per device and
    daypart, shrunk toward the all-device row of the same daypart and that toward the overall mean; unit rows.

    ``events``: v1 event dicts; only plays and likes of ``users`` (all if None) count."""
    n_dev, dim = len(DEVICES), items.shape[1]
    sums = np.zeros((n_dev + 1, len(DAYPARTS), dim))
    counts = np.zeros((n_dev + 1, len(DAYPARTS)))
    for e in events:
        if e["type"] == "skip" or (users is not None and e["user_id"] not in users):
            continue
        device = (e.get("context") or {}).get("device")
        row = DEVICES.index(device) if device in DEVICES else n_dev
        part = daypart(int(e["ts_ms"]))
        vec = items[index[e["track_id"]]]
        sums[row, part] += vec
        counts[row, part] += 1
        if row != n_dev:
            sums[n_dev, part] += vec
            counts[n_dev, part] += 1
    overall = sums[n_dev].sum(axis=0) / max(counts[n_dev].sum(), 1.0)
    any_device = (sums[n_dev] + shrink * overall) / (counts[n_dev] + shrink)[:, None]  # [P, D]
    prior = (sums + shrink * any_device[None]) / (counts + shrink)[..., None]
    prior[n_dev] = any_device
    prior /= np.maximum(np.linalg.norm(prior, axis=-1, keepdims=True), 1e-12)
    return prior.astype(np.float32)


def fit_content_map(
    features: np.ndarray, genres: list[str], items: np.ndarray, ridge: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Ridge regression features [N, 4] + genre one-hot + 1 -> embeddings [N, D].

    Returns (coef float32 [4 + G + 1, D], feature mean [4], feature std [4], genre names)."""
    names = tuple(sorted(set(genres) - {""}))
    mean = features.mean(axis=0).astype(np.float32)
    std = np.maximum(features.std(axis=0), 1e-6).astype(np.float32)
    probe = ColdStart(
        devices=(),
        prior=np.zeros((1, len(DAYPARTS), items.shape[1]), np.float32),
        genres=names,
        feature_mean=mean,
        feature_std=std,
        content_coef=np.zeros((len(FEATURES) + len(names) + 1, items.shape[1]), np.float32),
    )
    x = probe.content_inputs(features, genres).astype(np.float64)  # [N, F]
    reg = ridge * np.eye(x.shape[1])
    reg[-1, -1] = 0.0  # the constant is not shrunk
    coef = np.linalg.solve(x.T @ x + reg, x.T @ items.astype(np.float64))
    return coef.astype(np.float32), mean, std, names


def fit_cold_start(
    world: SyntheticWorld,
    events: Iterable[Mapping[str, Any]],
    items: np.ndarray,
    users: Collection[str] | None = None,
) -> ColdStart:
    """The cold-start data for ``world``'s catalog with ``items`` float32 [N, D] from training ``events``."""
    genres = [world.genre_names[int(g)] for g in world.track_genre]
    coef, mean, std, names = fit_content_map(world.features, genres, items)
    return ColdStart(
        devices=tuple(DEVICES),
        prior=fit_prior(events, world.index, items, users),
        genres=names,
        feature_mean=mean,
        feature_std=std,
        content_coef=coef,
    )


def content_map_quality(
    world: SyntheticWorld, items: np.ndarray, holdout: float = 0.1, seed: int = 0
) -> dict[str, float]:
    """Mean cosine of the content-map embedding with the learned one on held-out tracks, and the same for the
    genre's mean embedding alone (what a track would get from its genre only)."""
    rng = np.random.default_rng(seed)
    n = world.n_tracks
    test = rng.permutation(n)[: int(n * holdout)]
    train = np.setdiff1d(np.arange(n), test)
    genres = [world.genre_names[int(g)] for g in world.track_genre]
    coef, mean, std, names = fit_content_map(world.features[train], [genres[i] for i in train], items[train])
    cold = ColdStart((), np.zeros((1, 4, items.shape[1]), np.float32), names, mean, std, coef)
    pred = cold.content_embedding(world.features[test], [genres[i] for i in test])
    genre_mean = {g: items[train][[genres[i] == g for i in train]].mean(axis=0) for g in names}
    gm = np.stack([genre_mean[genres[i]] for i in test])
    gm /= np.linalg.norm(gm, axis=1, keepdims=True)
    return {
        "content_map_cosine": float(np.mean(np.sum(pred * items[test], axis=1))),
        "genre_mean_cosine": float(np.mean(np.sum(gm * items[test], axis=1))),
    }


def main(argv: list[str] | None = None) -> int:
    """Add ``cold_start.npz`` to an existing bundle trained on generated data."""
    p = argparse.ArgumentParser(prog="python -m models_onnx.cold_start_fit", description=main.__doc__)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--users", type=int, default=1000, help="simulated listeners to fit the context prior on")
    args = p.parse_args(argv)
    try:
        manifest = read_manifest(args.bundle)
        world = world_from_manifest(manifest)
        items = read_items(args.bundle, manifest)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rng = np.random.default_rng([world.seed, 9])
    events: list[dict[str, Any]] = []
    for first in tqdm(range(0, args.users, 50), desc="simulate", unit="x50 users"):
        events.extend(world.simulate_sessions(min(50, args.users - first), 4, 20, rng, first))
    path = write_cold_start(args.bundle, fit_cold_start(world, events, items))
    q = content_map_quality(world, items)
    print(
        f"wrote {path}: context prior from {len(events)} events; content map held-out cosine "
        f"{q['content_map_cosine']:.3f} (genre mean alone {q['genre_mean_cosine']:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
