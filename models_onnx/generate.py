"""The synthetic world: a generated music catalog and simulated listeners that emit v1 events.

Used by the demo, the tests and training; the shipped default model is trained on this data only.
Everything is deterministic: the catalog from ``seed``, each listener from ``(seed, i)``, and every
stream of events from the ``numpy.random.Generator`` passed in.

Catalog (``SyntheticWorld``): ``n_tracks`` tracks (``trk-00042``) by ``n_artists`` artists (``art-0007``),
each artist in one genre from ``GENRES``. A track's hidden latent style vector (float32 [latent_dim],
unit length) is its artist's style plus noise, and an artist's style is its genre's centre plus noise,
so styles cluster by genre and, more tightly, by artist. Popularity is Zipf-like with the maximum 1.0.
Four audio-like features in [0, 1] (energy, valence, acousticness, danceability) are a fixed random
projection of the latent through a sigmoid. Listeners live in ``models_onnx.listener``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from models_onnx.listener import SimListener, simulate_user
from streams.errors import ModelError

GENRES: Final = (
    "ambient",
    "techno",
    "jazz",
    "classical",
    "hip-hop",
    "rock",
    "pop",
    "folk",
    "house",
    "metal",
    "reggae",
    "soul",
    "blues",
    "drum-and-bass",
    "country",
    "latin",
)
FEATURES: Final = ("energy", "valence", "acousticness", "danceability")
# 2024-01-01T00:00:00Z: simulated listening starts here.
EPOCH_MS: Final = 1_704_067_200_000


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass(frozen=True, eq=False)
class SyntheticWorld:
    """A generated catalog plus the recipe for its listeners. Build with ``SyntheticWorld.create``.

    Arrays are indexed by track index (the position in ``track_ids``) and must not be modified.
    """

    seed: int
    track_ids: tuple[str, ...]
    artist_ids: tuple[str, ...]  # per artist
    genre_names: tuple[str, ...]  # per genre
    track_artist: np.ndarray  # int64 [N] artist index of each track
    track_genre: np.ndarray  # int64 [N] genre index of each track
    latent: np.ndarray  # float32 [N, L] unit-length style vectors
    genre_centres: np.ndarray  # float32 [G, L] unit length
    energy_axis: np.ndarray  # float32 [L] unit: the latent direction that raises ``energy``
    popularity: np.ndarray  # float64 [N] in (0, 1], max 1
    features: np.ndarray  # float32 [N, 4] in [0, 1], columns in FEATURES order
    duration_ms: np.ndarray  # int64 [N]
    index: dict[str, int]
    # Sampling tables: cumulative popularity weights (normalised to end at 1) over all tracks, per genre
    # and per artist, with the track indices they cover.
    pop_cdf: np.ndarray
    genre_tracks: tuple[np.ndarray, ...]
    genre_cdf: tuple[np.ndarray, ...]
    artist_tracks: tuple[np.ndarray, ...]
    artist_cdf: tuple[np.ndarray, ...]

    @staticmethod
    def create(
        seed: int, n_tracks: int = 2000, n_genres: int = 12, n_artists: int = 300, latent_dim: int = 16
    ) -> SyntheticWorld:
        """The catalog for ``seed``; needs n_genres <= len(GENRES) and n_tracks >= n_artists >= n_genres."""
        if not 1 <= n_genres <= len(GENRES):
            raise ValueError(f"n_genres must be in 1..{len(GENRES)}, got {n_genres}")
        if n_artists < n_genres or n_tracks < n_artists:
            raise ValueError("need n_tracks >= n_artists >= n_genres")
        rng = np.random.default_rng([seed, 0])
        scale = 1.0 / np.sqrt(latent_dim)  # a normal vector times this has norm ~1
        centres = _unit_rows(rng.normal(size=(n_genres, latent_dim)))  # [G, L]
        # Every genre gets at least one artist; the rest are spread unevenly.
        artist_genre = np.concatenate(
            [
                np.arange(n_genres),
                rng.choice(n_genres, size=n_artists - n_genres, p=_dirichlet(rng, n_genres)),
            ]
        )
        artist_style = _unit_rows(centres[artist_genre] + 0.55 * scale * rng.normal(size=(n_artists, latent_dim)))
        # Every artist gets at least one track; prolific artists get more (lognormal weights).
        artist_w = rng.lognormal(0.0, 0.8, size=n_artists)
        track_artist = np.concatenate(
            [
                np.arange(n_artists),
                rng.choice(n_artists, size=n_tracks - n_artists, p=artist_w / artist_w.sum()),
            ]
        )
        track_artist = rng.permutation(track_artist)
        track_genre = artist_genre[track_artist]
        latent = _unit_rows(artist_style[track_artist] + 0.4 * scale * rng.normal(size=(n_tracks, latent_dim)))
        ranks = rng.permutation(n_tracks)
        popularity = (ranks + 1.0) ** -0.8  # Zipf-like, max 1
        proj = rng.normal(size=(latent_dim, len(FEATURES))) * 1.5
        features = 1.0 / (1.0 + np.exp(-(latent @ proj + rng.normal(0.0, 0.3, size=(n_tracks, len(FEATURES))))))
        duration = rng.integers(120_000, 420_000, size=n_tracks)

        weights = popularity**0.7  # how often a track is put in front of listeners
        genre_tracks = tuple(np.flatnonzero(track_genre == g) for g in range(n_genres))
        artist_tracks = tuple(np.flatnonzero(track_artist == a) for a in range(n_artists))
        track_ids = tuple(f"trk-{i:05d}" for i in range(n_tracks))
        return SyntheticWorld(
            seed=seed,
            track_ids=track_ids,
            artist_ids=tuple(f"art-{a:04d}" for a in range(n_artists)),
            genre_names=GENRES[:n_genres],
            track_artist=track_artist.astype(np.int64),
            track_genre=track_genre.astype(np.int64),
            latent=latent.astype(np.float32),
            genre_centres=centres.astype(np.float32),
            energy_axis=(proj[:, 0] / np.linalg.norm(proj[:, 0])).astype(np.float32),
            popularity=popularity,
            features=features.astype(np.float32),
            duration_ms=duration.astype(np.int64),
            index={t: i for i, t in enumerate(track_ids)},
            pop_cdf=_cdf(weights),
            genre_tracks=genre_tracks,
            genre_cdf=tuple(_cdf(weights[t]) for t in genre_tracks),
            artist_tracks=artist_tracks,
            artist_cdf=tuple(_cdf(weights[t]) for t in artist_tracks),
        )

    @property
    def n_tracks(self) -> int:
        return len(self.track_ids)

    @property
    def latent_dim(self) -> int:
        return int(self.latent.shape[1])

    def listener(self, i: int) -> SimListener:
        """Simulated listener ``i`` (``user-0003``): the same taste for the same (seed, i)."""
        return SimListener.create(self, i)

    def track_records(self) -> list[dict[str, Any]]:
        """The catalog as plain dicts in index order (the bundle's ``tracks.json``)."""
        feats = np.round(self.features.astype(np.float64), 4).tolist()
        pops = np.round(self.popularity, 6).tolist()
        return [
            {
                "track_id": tid,
                "artist_id": self.artist_ids[int(self.track_artist[i])],
                "genre": self.genre_names[int(self.track_genre[i])],
                "popularity": pops[i],
                "features": dict(zip(FEATURES, feats[i], strict=True)),
            }
            for i, tid in enumerate(self.track_ids)
        ]

    def simulate_sessions(
        self,
        n_users: int,
        sessions_per_user: int,
        events_per_session: int,
        rng: np.random.Generator,
        first_user: int = 0,
    ) -> list[dict[str, Any]]:
        """Listening sessions of listeners ``first_user .. first_user + n_users - 1`` as v1 event dicts.

        Grouped by user (in user order) and in time order within each user; sessions of one user are
        hours apart (well over the 30-minute session gap). Use ``by_time`` for one time-ordered stream.
        """
        events: list[dict[str, Any]] = []
        for u in range(first_user, first_user + n_users):
            start = EPOCH_MS + int(rng.integers(0, 3 * 86_400_000))
            events.extend(simulate_user(self, self.listener(u), sessions_per_user, events_per_session, start, rng))
        return events


def by_time(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events of many users merged into one stream in timestamp order (stable for equal timestamps)."""
    return sorted(events, key=lambda e: e["ts_ms"])


def _cdf(weights: np.ndarray) -> np.ndarray:
    c = np.cumsum(weights, dtype=np.float64)
    return c / c[-1]


def _dirichlet(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.dirichlet(np.full(n, 2.0))


def world_from_manifest(manifest: dict[str, Any]) -> SyntheticWorld:
    """The synthetic world a bundle was trained in (for demos and tests that simulate its listeners).

    Raises ``ModelError`` for a bundle not trained on generated data or whose catalog does not match.
    """
    training = manifest.get("training", {})
    if training.get("data") != "generated" or "seed" not in training:
        raise ModelError("this model bundle was not trained on generated data: it has no synthetic world")
    world = SyntheticWorld.create(int(training["seed"]), **training.get("world", {}))
    if world.n_tracks != manifest.get("n_tracks"):
        raise ModelError(f"the bundle has {manifest.get('n_tracks')} tracks, its world {world.n_tracks}")
    return world
