"""Cold start: useful recommendations before a listener has a history, and embeddings for never-played tracks.

Both parts are fitted at training time (``models_onnx.cold_start_fit``) and shipped in the model bundle as the
optional file ``cold_start.npz`` (format 1; a bundle without it still loads and falls back to popularity):

* **Context prior** ``prior`` float32 [len(devices) + 1, len(DAYPARTS), D]: the mean embedding of the tracks
  listeners kept on that device in that part of the day (last device row: any device), shrunk toward the
  overall mean. A listener with no events at all is ranked by ``ColdStart.new_listener_ranking`` (the prior's
  similarity plus ``popularity_weight`` times popularity). Once events arrive, ``ColdStart.ranking_state`` uses
  the prior as the long-term taste of a listener who has none yet and hands over to their own taste as it grows:
  ``taste' = taste + w * prior_scale * unit(prior)`` with ``w = max(0, 1 - |taste| / own_taste_full)``. After
  one kept track ``pos`` already dominates the query, so the list follows the first events at once while the
  prior still fills in what they do not say.
* **Content map** ``content_coef`` float32 [4 + G + 1, D]: ridge regression from a track's standardised audio
  features (``FEATURES``), its genre (one-hot over ``genres``) and a constant to its item embedding.
  ``ColdStart.content_embedding`` gives a track known only by its content an embedding (blended with its
  artist's mean embedding when the catalog knows the artist), so it can be retrieved and recommended
  (``add_tracks``; ``python -m serving.cold_start add-tracks``, docs/cold-start.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from models_onnx.bundle import MODEL, read_items, read_manifest, read_tracks, write_bundle
from streams.errors import ModelError
from streams.session import SessionState

COLD_START_FILE: Final = "cold_start.npz"
COLD_START_FORMAT: Final = 1
FEATURES: Final = ("energy", "valence", "acousticness", "danceability")
DAYPARTS: Final = ("night", "morning", "afternoon", "evening")  # UTC hours 0-6, 6-12, 12-18, 18-24


def daypart(ts_ms: int) -> int:
    """Index into ``DAYPARTS`` of a timestamp (ms since the epoch, UTC)."""
    return int((ts_ms // 3_600_000) % 24) // 6


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


@dataclass(frozen=True, eq=False)
class ColdStart:
    """The context prior and the content map of one bundle."""

    devices: tuple[str, ...]
    prior: np.ndarray  # float32 [len(devices) + 1, len(DAYPARTS), D], rows unit length
    genres: tuple[str, ...]
    feature_mean: np.ndarray  # float32 [4]
    feature_std: np.ndarray  # float32 [4]
    content_coef: np.ndarray  # float32 [4 + len(genres) + 1, D]
    prior_scale: float = 0.3
    own_taste_full: float = 0.3
    artist_blend: float = 0.5
    popularity_weight: float = 0.3

    @property
    def dim(self) -> int:
        return int(self.prior.shape[-1])

    def prior_for(self, device: str | None, ts_ms: int) -> np.ndarray:
        """The prior taste float32 [D] (unit) for a device (None or unknown: any device) at ``ts_ms``."""
        row = self.devices.index(device) if device in self.devices else len(self.devices)
        return self.prior[row, daypart(ts_ms)]

    def new_listener_ranking(
        self, embeddings: np.ndarray, popularity: np.ndarray, device: str | None, ts_ms: int, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top ``n`` for a listener with no events yet: (indices int64 [n], scores float32 [n]) by
        ``prior · item + popularity_weight * popularity`` (embeddings float32 [N, D], popularity float32 [N])."""
        scores = embeddings @ self.prior_for(device, ts_ms) + self.popularity_weight * popularity  # [N]
        top = np.argsort(-scores, kind="stable")[:n]
        return top.astype(np.int64), scores[top].astype(np.float32)

    def ranking_state(self, state: SessionState, device: str | None, ts_ms: int) -> SessionState:
        """The state the ranking sees: the prior fills in the long-term taste the listener does not have yet."""
        own = float(np.linalg.norm(state.taste))
        w = max(0.0, 1.0 - own / self.own_taste_full)
        if w <= 0.0 or state.dim != self.dim:
            return state
        taste = state.taste + w * self.prior_scale * self.prior_for(device, ts_ms)
        return replace(state, taste=taste.astype(np.float32))

    def content_inputs(self, features: np.ndarray, genres: Sequence[str]) -> np.ndarray:
        """Regression inputs float32 [N, 4 + G + 1] from features float32 [N, 4] and genre names (unknown: 0)."""
        z = (np.asarray(features, np.float32) - self.feature_mean) / self.feature_std  # [N, 4]
        onehot = np.zeros((len(z), len(self.genres)), np.float32)
        for i, g in enumerate(genres):
            if g in self.genres:
                onehot[i, self.genres.index(g)] = 1.0
        return np.concatenate([z, onehot, np.ones((len(z), 1), np.float32)], axis=1)

    def content_embedding(
        self, features: np.ndarray, genres: Sequence[str], artist_means: Sequence[np.ndarray | None] | None = None
    ) -> np.ndarray:
        """Unit embeddings float32 [N, D] for tracks known by features [N, 4], genre and (optionally) the mean
        embedding of their artist's catalog tracks (None where the artist is new)."""
        emb = self.content_inputs(features, genres) @ self.content_coef  # [N, D]
        emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        if artist_means is not None:
            for i, m in enumerate(artist_means):
                if m is not None:
                    emb[i] = _unit((1.0 - self.artist_blend) * emb[i] + self.artist_blend * _unit(m))
        return emb.astype(np.float32)

    def save(self, path: Path) -> None:
        np.savez(
            path,
            format=np.int64(COLD_START_FORMAT),
            devices=np.asarray(self.devices, dtype=np.str_),
            prior=self.prior,
            genres=np.asarray(self.genres, dtype=np.str_),
            feature_mean=self.feature_mean,
            feature_std=self.feature_std,
            content_coef=self.content_coef,
            scales=np.asarray(
                [self.prior_scale, self.own_taste_full, self.artist_blend, self.popularity_weight], np.float64
            ),
        )


def write_cold_start(bundle_dir: Path | str, cold: ColdStart) -> Path:
    """Add (or replace) ``cold_start.npz`` in a bundle; ModelError if its dimension is not the bundle's."""
    manifest = read_manifest(bundle_dir)
    if cold.dim != manifest["dim"]:
        raise ModelError(f"cold-start data has dim {cold.dim}, the bundle {manifest['dim']}")
    path = Path(bundle_dir) / COLD_START_FILE
    tmp = path.with_name(f".{COLD_START_FILE}.tmp.npz")
    cold.save(tmp)
    tmp.replace(path)
    return path


def read_cold_start(bundle_dir: Path | str) -> ColdStart | None:
    """The bundle's cold-start data, or None if it has none (older bundles); ModelError if unusable."""
    path = Path(bundle_dir) / COLD_START_FILE
    if not path.is_file():
        return None
    manifest = read_manifest(bundle_dir)
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != COLD_START_FORMAT:
                raise ModelError(f"{path} has format {int(z['format'])}; this code reads {COLD_START_FORMAT}")
            scales = z["scales"]
            cold = ColdStart(
                devices=tuple(str(d) for d in z["devices"]),
                prior=z["prior"].astype(np.float32),
                genres=tuple(str(g) for g in z["genres"]),
                feature_mean=z["feature_mean"].astype(np.float32),
                feature_std=z["feature_std"].astype(np.float32),
                content_coef=z["content_coef"].astype(np.float32),
                prior_scale=float(scales[0]),
                own_taste_full=float(scales[1]),
                artist_blend=float(scales[2]),
                popularity_weight=float(scales[3]),
            )
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise ModelError(
            f"unreadable cold-start data {path}: {exc}; refit it with "
            f"`python -m models_onnx.cold_start_fit --bundle {bundle_dir}`"
        ) from exc
    if cold.dim != manifest["dim"] or cold.content_coef.shape != (len(FEATURES) + len(cold.genres) + 1, cold.dim):
        raise ModelError(f"{path} does not match the bundle (dim {manifest['dim']}): refit it")
    return cold


def add_tracks(bundle_dir: Path | str, records: Sequence[Mapping[str, Any]], cold: ColdStart | None = None) -> int:
    """Append tracks known only by content to a bundle; return how many were added.

    Each record: {"track_id", "features": {energy, valence, acousticness, danceability}, "genre"?,
    "artist_id"?, "popularity"?}. Existing track indices do not move (stored session states stay valid); the
    bundle is rewritten atomically with the same model and model version, then its cold-start file is put back.
    ModelError for a duplicate id, a missing feature, or a bundle without cold-start data.
    """
    cold = cold if cold is not None else read_cold_start(bundle_dir)
    if cold is None:
        raise ModelError(
            f"{bundle_dir} has no {COLD_START_FILE}: run "
            f"`python -m models_onnx.cold_start_fit --bundle {bundle_dir}` first"
        )
    manifest = read_manifest(bundle_dir)
    items = read_items(bundle_dir, manifest)
    tracks = read_tracks(bundle_dir, manifest)
    known = {t["track_id"] for t in tracks}
    feats, genres, new_tracks = [], [], []
    for r in records:
        tid = r.get("track_id")
        if not isinstance(tid, str) or not tid or tid in known:
            raise ModelError(f"track_id {tid!r} is missing or already in the catalog")
        try:
            feats.append([float(r["features"][f]) for f in FEATURES])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"track {tid}: features need {', '.join(FEATURES)} as numbers ({exc!r})") from exc
        known.add(tid)
        genres.append(str(r.get("genre", "")))
        new_tracks.append(
            {
                "track_id": tid,
                "artist_id": str(r.get("artist_id", "")),
                "genre": str(r.get("genre", "")),
                "popularity": float(r.get("popularity", 0.0)),
                "features": {f: feats[-1][j] for j, f in enumerate(FEATURES)},
                "content_only": True,
            }
        )
    if not new_tracks:
        return 0
    by_artist: dict[str, list[int]] = {}
    for i, t in enumerate(tracks):
        by_artist.setdefault(str(t.get("artist_id", "")), []).append(i)
    means = [
        items[by_artist[t["artist_id"]]].mean(axis=0) if t["artist_id"] and t["artist_id"] in by_artist else None
        for t in new_tracks
    ]
    emb = cold.content_embedding(np.asarray(feats, np.float32), genres, means)
    onnx_bytes = (Path(bundle_dir) / MODEL).read_bytes()
    write_bundle(
        bundle_dir,
        onnx_bytes,
        np.concatenate([items, emb]),
        [*tracks, *new_tracks],
        str(manifest["model_version"]),
        {
            **manifest.get("training", {}),
            "content_only_tracks": manifest.get("training", {}).get("content_only_tracks", 0) + len(new_tracks),
        },
    )
    write_cold_start(bundle_dir, cold)
    return len(new_tracks)


def main(argv: list[str] | None = None) -> int:
    """``python -m serving.cold_start add-tracks --bundle DIR tracks.json``: add content-only tracks."""
    p = argparse.ArgumentParser(prog="python -m serving.cold_start", description=main.__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add-tracks", help="append tracks known only by audio features (+ genre, artist)")
    a.add_argument("--bundle", type=Path, required=True)
    a.add_argument("tracks", type=Path, help="a JSON list of track records (see docs/cold-start.md)")
    args = p.parse_args(argv)
    try:
        records = json.loads(args.tracks.read_text())
        if not isinstance(records, list):
            raise ModelError(f"{args.tracks} must hold a JSON list of track records")
        n = add_tracks(args.bundle, records)
    except (OSError, ValueError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"added {n} tracks to {args.bundle}; restart the worker and the API to serve them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
