"""The item catalog of a model bundle: track ids, their index, embeddings and metadata (read-only).

Track index ``i`` is row ``i`` of ``embeddings`` and the ``i``-th entry of every list here; session
state (``SessionState.recent``) and retrieval speak in these indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models_onnx.bundle import read_items, read_manifest, read_tracks


@dataclass(frozen=True, eq=False)
class Catalog:
    """Tracks of one bundle. ``embeddings`` float32 [N, dim] is L2-normalised and not writeable."""

    track_ids: list[str]
    index: dict[str, int]
    embeddings: np.ndarray  # float32 [N, dim]
    artist_of: list[str]  # per track index
    genre_of: list[str]  # per track index
    popularity: np.ndarray  # float32 [N]
    model_version: str
    dim: int

    @staticmethod
    def load(bundle_dir: Path | str) -> Catalog:
        """Load the catalog of the bundle at ``bundle_dir``; ModelError if it is missing or inconsistent."""
        manifest = read_manifest(bundle_dir)
        items = read_items(bundle_dir, manifest)
        tracks = read_tracks(bundle_dir, manifest)
        return Catalog.from_arrays(
            track_ids=[t["track_id"] for t in tracks],
            embeddings=items,
            artist_of=[str(t.get("artist_id", "")) for t in tracks],
            genre_of=[str(t.get("genre", "")) for t in tracks],
            popularity=np.asarray([float(t.get("popularity", 0.0)) for t in tracks], dtype=np.float32),
            model_version=str(manifest["model_version"]),
        )

    @staticmethod
    def from_arrays(
        track_ids: list[str],
        embeddings: np.ndarray,
        artist_of: list[str] | None = None,
        genre_of: list[str] | None = None,
        popularity: np.ndarray | None = None,
        model_version: str = "",
    ) -> Catalog:
        """Build a catalog from in-memory values (tests, tools). ValueError on inconsistent sizes."""
        emb = np.array(embeddings, dtype=np.float32, copy=True, order="C")
        n = len(track_ids)
        if emb.ndim != 2 or emb.shape[0] != n:
            raise ValueError(f"embeddings {emb.shape} do not match {n} track ids")
        index = {t: i for i, t in enumerate(track_ids)}
        if len(index) != n:
            raise ValueError("track ids must be unique")
        emb.setflags(write=False)
        pop = np.zeros(n, np.float32) if popularity is None else np.asarray(popularity, np.float32).copy()
        pop.setflags(write=False)
        return Catalog(
            track_ids=list(track_ids),
            index=index,
            embeddings=emb,
            artist_of=list(artist_of) if artist_of is not None else [""] * n,
            genre_of=list(genre_of) if genre_of is not None else [""] * n,
            popularity=pop,
            model_version=model_version,
            dim=int(emb.shape[1]),
        )

    def __len__(self) -> int:
        return len(self.track_ids)

    def lookup(self, track_id: str) -> int | None:
        """The index of ``track_id``, or None if the catalog does not have it."""
        return self.index.get(track_id)
