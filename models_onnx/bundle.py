"""Model bundle format v1: a directory with everything the worker and the API need to score.

* ``manifest.json`` - {"format": "segue-model-bundle", "format_version": 1, "signature": 1 or 2,
  "model_version", "dim", "context_features", "n_tracks", "created_utc", "training": {...}}; a signature-2
  bundle adds "candidate_features" (names, ``models_onnx.signature.CANDIDATE_FEATURES``) and
  "track_stats": {"file": "features.npz", "format_version": 1, "neighbours": M}; a bundle may add
  "session_index": {"file": "sessions.npz", "format_version": 1, "sessions": S, "pairs": P}
* ``model.onnx``    - the session scorer, ONNX signature v1 or v2 (``models_onnx.signature``)
* ``items.npy``     - float32 [n_tracks, dim], L2-normalised item embeddings, row i = track i
* ``tracks.json``   - list in index order of {"track_id", "artist_id", "genre", "popularity", "features"}
* ``features.npz``  - signature 2 only (``serving.features.TrackStats``): ``neighbour_idx`` int32 [N, M]
  (-1 padding) and ``neighbour_val`` float32 [N, M] (the top-M co-occurrence neighbours of each track, best
  first), ``popularity`` and ``skip_rate`` float32 [N], ``skip_prior`` float32 []
* ``sessions.npz``  - optional (``models_onnx.session_knn.SessionIndex``): the training sessions' distinct tracks,
  ``session_ptr`` int64 [S + 1], ``session_items`` int32 [P], ``item_ptr`` int64 [N + 1], ``item_sessions``
  int32 [P] (per track, the most recent session first); where present the rescorer blends session-kNN's tracks
  into the list (``serving.session_blend``)

``write_bundle`` writes into a fresh sibling directory and renames it into place, so readers never see a
half-written bundle. Every reader raises ``ModelError`` with a message that says how to fix the problem.
Torch-free: serving imports this module.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from models_onnx.session_knn import SessionIndex
from models_onnx.signature import CANDIDATE_FEATURES, SIGNATURE, SIGNATURES
from serving.features import TrackStats
from streams.errors import ModelError
from streams.session import CONTEXT_FEATURES

FORMAT: Final = "segue-model-bundle"
FORMAT_VERSION: Final = 1
MANIFEST: Final = "manifest.json"
MODEL: Final = "model.onnx"
ITEMS: Final = "items.npy"
TRACKS: Final = "tracks.json"
FEATURES: Final = "features.npz"
TRACK_STATS_VERSION: Final = 1
SESSIONS: Final = "sessions.npz"
SESSION_INDEX_VERSION: Final = 1
_REQUIRED: Final = ("model_version", "dim", "context_features", "n_tracks")


def train_hint(path: Path | str) -> str:
    return f"run `python -m models_onnx.train --out {path}`"


def write_bundle(
    out_dir: Path | str,
    model_onnx: bytes,
    items: np.ndarray,
    tracks: Sequence[Mapping[str, Any]],
    model_version: str,
    training: Mapping[str, Any],
    signature: int = SIGNATURE,
    stats: TrackStats | None = None,
    sessions: SessionIndex | None = None,
) -> Path:
    """Write a bundle to ``out_dir``, replacing an existing bundle there; return the directory.

    ``items`` float32 [N, D] must be L2-normalised and ``tracks`` have N entries; a ``signature`` 2 model needs
    ``stats`` for its candidate features. Refuses (ModelError) to replace a non-empty directory that is not a
    bundle.
    """
    if signature not in SIGNATURES:
        raise ModelError(f"signature {signature} is not one of {SIGNATURES}")
    if (signature >= 2) != (stats is not None):
        raise ModelError("a signature-2 bundle needs track stats, and only it carries them")
    if stats is not None and len(stats) != len(tracks):
        raise ModelError(f"track stats cover {len(stats)} tracks, the bundle {len(tracks)}")
    if sessions is not None and sessions.n_tracks != len(tracks):
        raise ModelError(f"the session index covers {sessions.n_tracks} tracks, the bundle {len(tracks)}")
    out = Path(out_dir)
    items = np.ascontiguousarray(items, dtype=np.float32)
    if items.ndim != 2 or items.shape[0] != len(tracks):
        raise ModelError(f"items {items.shape} do not match {len(tracks)} tracks")
    if not np.allclose(np.linalg.norm(items, axis=1), 1.0, atol=1e-3):
        raise ModelError("item embeddings must be L2-normalised")
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise ModelError(f"{out} exists and is not a model bundle; choose another --out")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "signature": signature,
        "model_version": model_version,
        "dim": int(items.shape[1]),
        "context_features": list(CONTEXT_FEATURES),
        "n_tracks": int(items.shape[0]),
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "training": dict(training),
    }
    if stats is not None:
        manifest["candidate_features"] = list(CANDIDATE_FEATURES)
        manifest["track_stats"] = {
            "file": FEATURES,
            "format_version": TRACK_STATS_VERSION,
            "neighbours": int(stats.neighbour_idx.shape[1]),
        }
    if sessions is not None:
        manifest["session_index"] = {
            "file": SESSIONS,
            "format_version": SESSION_INDEX_VERSION,
            "sessions": sessions.n_sessions,
            "pairs": len(sessions),
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o755)
        (tmp / MODEL).write_bytes(model_onnx)
        np.save(tmp / ITEMS, items)
        if stats is not None:
            np.savez(
                tmp / FEATURES,
                neighbour_idx=stats.neighbour_idx.astype(np.int32),
                neighbour_val=stats.neighbour_val.astype(np.float32),
                popularity=stats.popularity.astype(np.float32),
                skip_rate=stats.skip_rate.astype(np.float32),
                skip_prior=np.float32(stats.skip_prior),
            )
        if sessions is not None:
            np.savez(
                tmp / SESSIONS,
                session_ptr=sessions.session_ptr.astype(np.int64),
                session_items=sessions.session_items.astype(np.int32),
                item_ptr=sessions.item_ptr.astype(np.int64),
                item_sessions=sessions.item_sessions.astype(np.int32),
            )
        (tmp / TRACKS).write_text(json.dumps(list(tracks), separators=(",", ":")) + "\n")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"could not write the model bundle to {out}: {exc}") from exc
    return out


def read_manifest(bundle_dir: Path | str) -> dict[str, Any]:
    """The validated manifest of the bundle at ``bundle_dir``; ModelError if absent or not servable."""
    path = Path(bundle_dir)
    if not (path / MANIFEST).is_file():
        raise ModelError(f"no model bundle at {path}: {train_hint(path)}")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable manifest in {path}: {exc}; {train_hint(path)}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelError(f"{path / MANIFEST} is not a segue model bundle manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"model bundle {path} has format_version {manifest.get('format_version')!r}; this code reads "
            f"{FORMAT_VERSION}: {train_hint(path)}"
        )
    if manifest.get("signature") not in SIGNATURES:
        raise ModelError(
            f"model bundle {path} has signature {manifest.get('signature')!r}; this code serves {SIGNATURES}"
        )
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise ModelError(f"manifest of {path} lacks {', '.join(missing)}")
    if list(manifest["context_features"]) != list(CONTEXT_FEATURES):
        raise ModelError(f"model bundle {path} expects context features {manifest['context_features']}")
    if manifest["signature"] >= 2:
        if list(manifest.get("candidate_features", [])) != list(CANDIDATE_FEATURES):
            raise ModelError(f"model bundle {path} expects candidate features {manifest.get('candidate_features')}")
        ts = manifest.get("track_stats")
        if not isinstance(ts, dict) or ts.get("format_version") != TRACK_STATS_VERSION:
            raise ModelError(f"model bundle {path} lacks track stats format {TRACK_STATS_VERSION}")
    return manifest


def _arrays(path: Path, what: str, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of the ``.npz`` file at ``path``, or a ModelError naming ``what`` is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in names}
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"unreadable {what} {path}: {exc}") from exc


def read_track_stats(bundle_dir: Path | str, manifest: Mapping[str, Any]) -> TrackStats:
    """``features.npz`` of a signature-2 bundle, checked against the manifest."""
    path = Path(bundle_dir) / FEATURES
    z = _arrays(path, "track stats", ("neighbour_idx", "neighbour_val", "popularity", "skip_rate", "skip_prior"))
    stats = TrackStats(
        neighbour_idx=z["neighbour_idx"],
        neighbour_val=z["neighbour_val"],
        popularity=z["popularity"],
        skip_rate=z["skip_rate"],
        skip_prior=float(z["skip_prior"]),
    )
    n, m = manifest["n_tracks"], manifest["track_stats"]["neighbours"]
    ok = stats.neighbour_idx.shape == (n, m) and stats.neighbour_val.shape == (n, m)
    ok = ok and stats.popularity.shape == (n,) and stats.skip_rate.shape == (n,)
    ok = ok and bool((stats.neighbour_idx < n).all())
    if not ok:
        raise ModelError(f"{path} does not match the manifest's {n} tracks x {m} neighbours")
    return stats


def read_session_index(bundle_dir: Path | str, manifest: Mapping[str, Any]) -> SessionIndex | None:
    """``sessions.npz`` where the manifest lists it (None where it does not), checked against the manifest."""
    info = manifest.get("session_index")
    if info is None:
        return None
    if info.get("format_version") != SESSION_INDEX_VERSION:
        raise ModelError(
            f"model bundle {bundle_dir} has session index format {info.get('format_version')}, this segue reads "
            f"{SESSION_INDEX_VERSION}; retrain it with this version (`python -m models_onnx.evaluate`)"
        )
    path = Path(bundle_dir) / SESSIONS
    names = ("session_ptr", "session_items", "item_ptr", "item_sessions")
    index = SessionIndex(**_arrays(path, "session index", names))
    n, s_count, pairs = manifest["n_tracks"], info["sessions"], info["pairs"]
    ok = index.n_tracks == n and index.n_sessions == s_count and len(index) == pairs
    ok = ok and index.item_sessions.shape == (pairs,) and int(index.session_ptr[-1]) == pairs
    ok = ok and int(index.item_ptr[-1]) == pairs and bool((index.session_items < n).all())
    if not ok:
        raise ModelError(f"{path} does not match the manifest's {n} tracks, {s_count} sessions, {pairs} pairs")
    return index


def read_items(bundle_dir: Path | str, manifest: Mapping[str, Any]) -> np.ndarray:
    """``items.npy`` as float32 [n_tracks, dim], checked against the manifest."""
    path = Path(bundle_dir) / ITEMS
    try:
        items = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable item embeddings {path}: {exc}") from exc
    expected = (manifest["n_tracks"], manifest["dim"])
    if items.dtype != np.float32 or items.shape != expected:
        raise ModelError(f"{path} is {items.dtype} {items.shape}, the manifest says float32 {expected}")
    return items


def read_tracks(bundle_dir: Path | str, manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``tracks.json`` as a list of dicts in index order, checked against the manifest."""
    path = Path(bundle_dir) / TRACKS
    try:
        tracks = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable track list {path}: {exc}") from exc
    if not isinstance(tracks, list) or len(tracks) != manifest["n_tracks"]:
        raise ModelError(f"{path} does not list the manifest's {manifest['n_tracks']} tracks")
    if not all(isinstance(t, dict) and isinstance(t.get("track_id"), str) for t in tracks):
        raise ModelError(f"{path}: every entry needs a string track_id")
    return tracks
