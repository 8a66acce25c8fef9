"""The closed loop's listeners: a taste model of its own, defined only in what the catalog publishes.

This is deliberately NOT the model that generated segue's training data (``models_onnx.listener``, which
scores tracks by a hidden latent style vector). These listeners see a track only through the fields of the
bundle's ``tracks.json``: its genre, its artist, its popularity and its four audio features (energy,
valence, acousticness, danceability). They never read a latent vector or an embedding.

A listener (``TasteListener``, deterministic from ``(seed, i)``) has a hidden long-term taste:

* ``genre_pref`` float64 [G] in [0, 1]: 2-4 liked genres (the favourite at 1.0), every other genre at 0;
* ``ideal`` float64 [4]: the audio-feature point it likes best (near its liked genres' centroids);
* ``fav_artist`` bool [A]: a few favourite artists in its liked genres;
* ``pop_taste``: how much it leans toward (or away from) popular tracks; ``pickiness``: its skip threshold shift.

Within a session it has a *mood* (``Mood``) that drifts: a focus genre (one of its liked genres, drawn by
preference; with probability ``switch_prob`` per track it moves to another liked genre) and an audio-feature
target that starts between the focus genre's centroid and the listener's ideal and then takes a small random
step after every track, pulled back toward that anchor. The mood decides most of what the listener keeps:

    u(t) = genre_weight * (focus_share * [g(t) == focus] + (1 - focus_share) * genre_pref[g(t)])
         + feature_weight * exp(-|f(t) - target|^2 / (2 feature_width^2))
         + artist_bonus * fav_artist[a(t)] + pop_taste * popularity(t)
         - repeat_penalty * (times a(t) is among the last 3 artists heard)

    P(skip) = sigmoid(skip_slope * (skip_threshold + pickiness - u));  a track not skipped is liked with
    P = like_max * sigmoid(like_slope * (u - like_threshold)), else played (mostly to the end).

All randomness comes from the ``numpy.random.Generator`` passed in, so the same listener with the same
generators reacts identically whatever recommender it hears.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from models_onnx.bundle import read_manifest, read_tracks

FEATURES: Final = ("energy", "valence", "acousticness", "danceability")
PLAY, SKIP, LIKE = "play", "skip", "like"


@dataclass(frozen=True)
class SimParams:
    """The constants of the listener model (see the module docstring for the formulas)."""

    genre_weight: float = 1.6
    focus_share: float = 0.7
    feature_weight: float = 1.0
    feature_width: float = 0.3
    artist_bonus: float = 0.3
    repeat_penalty: float = 0.35
    skip_threshold: float = 1.2
    skip_slope: float = 4.5
    like_threshold: float = 2.2
    like_slope: float = 5.0
    like_max: float = 0.5
    switch_prob: float = 0.06
    feature_step: float = 0.05
    feature_pull: float = 0.1
    start_noise: float = 0.08


@dataclass(frozen=True, eq=False)
class TrackSpace:
    """The observable catalog: per-track genre, artist, audio features and popularity (index order).

    ``genre`` int64 [N], ``artist`` int64 [N], ``features`` float64 [N, 4] in [0, 1], ``popularity`` float64 [N]
    in (0, 1], ``duration_ms`` int64 [N] (drawn here: the catalog does not publish durations),
    ``centroids`` float64 [G, 4]: the mean features of each genre.
    """

    track_ids: tuple[str, ...]
    genre_names: tuple[str, ...]
    genre: np.ndarray
    artist: np.ndarray
    features: np.ndarray
    popularity: np.ndarray
    duration_ms: np.ndarray
    centroids: np.ndarray
    n_artists: int

    @staticmethod
    def from_records(records: Sequence[dict[str, Any]], seed: int = 0) -> TrackSpace:
        """Build from ``tracks.json`` records (track_id, artist_id, genre, popularity, features)."""
        genre_names = tuple(sorted({str(r["genre"]) for r in records}))
        artists = {a: i for i, a in enumerate(sorted({str(r["artist_id"]) for r in records}))}
        gi = {g: i for i, g in enumerate(genre_names)}
        genre = np.array([gi[str(r["genre"])] for r in records], dtype=np.int64)
        feats = np.array([[float(r["features"][k]) for k in FEATURES] for r in records], dtype=np.float64)
        centroids = np.stack([feats[genre == g].mean(axis=0) for g in range(len(genre_names))])
        rng = np.random.default_rng([seed, 41])
        return TrackSpace(
            track_ids=tuple(str(r["track_id"]) for r in records),
            genre_names=genre_names,
            genre=genre,
            artist=np.array([artists[str(r["artist_id"])] for r in records], dtype=np.int64),
            features=feats,
            popularity=np.array([float(r["popularity"]) for r in records], dtype=np.float64),
            duration_ms=rng.integers(120_000, 360_000, size=len(records)).astype(np.int64),
            centroids=centroids,
            n_artists=len(artists),
        )

    @staticmethod
    def from_bundle(bundle_dir: Path | str, seed: int = 0) -> TrackSpace:
        """The observable catalog of a model bundle (its ``tracks.json``)."""
        return TrackSpace.from_records(read_tracks(bundle_dir, read_manifest(bundle_dir)), seed)

    @property
    def n_tracks(self) -> int:
        return len(self.track_ids)

    @property
    def n_genres(self) -> int:
        return len(self.genre_names)


@dataclass(frozen=True, eq=False)
class TasteListener:
    """One simulated listener's hidden long-term taste (immutable). Build with ``TasteListener.create``."""

    index: int
    genre_pref: np.ndarray  # float64 [G] in [0, 1]
    liked: np.ndarray  # int64 [m] liked genres, 2 <= m <= 4
    liked_weights: np.ndarray  # float64 [m], sums to 1
    ideal: np.ndarray  # float64 [4]
    fav_artist: np.ndarray  # bool [A]
    pop_taste: float
    pickiness: float

    @staticmethod
    def create(space: TrackSpace, seed: int, i: int) -> TasteListener:
        """Listener ``i``: deterministic from ``(seed, i)`` and independent of any other listener model."""
        rng = np.random.default_rng([seed, 43, i])
        g = space.n_genres
        m = int(rng.integers(2, min(4, g) + 1))
        liked = rng.choice(g, size=m, replace=False)
        weights = np.sort(rng.dirichlet(np.full(m, 1.5)))[::-1]
        pref = np.zeros(g)
        pref[liked] = weights / weights[0]
        ideal = np.clip(weights @ space.centroids[liked] + rng.normal(0.0, 0.1, size=len(FEATURES)), 0.0, 1.0)
        fav = np.zeros(space.n_artists, dtype=bool)
        pool = np.unique(space.artist[np.isin(space.genre, liked)])
        fav[rng.choice(pool, size=min(len(pool), int(rng.integers(2, 6))), replace=False)] = True
        return TasteListener(
            index=i,
            genre_pref=pref,
            liked=liked.astype(np.int64),
            liked_weights=weights,
            ideal=ideal,
            fav_artist=fav,
            pop_taste=float(rng.normal(0.1, 0.15)),
            pickiness=float(rng.normal(0.0, 0.1)),
        )


@dataclass
class Mood:
    """A listener's within-session state: focus genre, audio-feature target and its anchor, recent artists."""

    focus: int
    target: np.ndarray  # float64 [4]
    anchor: np.ndarray  # float64 [4]
    recent_artists: list[int] = field(default_factory=list)

    @staticmethod
    def start(space: TrackSpace, listener: TasteListener, rng: np.random.Generator, p: SimParams) -> Mood:
        """The mood at the start of a session: a liked genre drawn by preference, a target near it."""
        focus = int(rng.choice(listener.liked, p=listener.liked_weights))
        anchor = 0.5 * space.centroids[focus] + 0.5 * listener.ideal
        target = np.clip(anchor + rng.normal(0.0, p.start_noise, size=anchor.shape), 0.0, 1.0)
        return Mood(focus=focus, target=target, anchor=anchor)

    def drift(self, space: TrackSpace, listener: TasteListener, rng: np.random.Generator, p: SimParams) -> None:
        """One track later: maybe a new focus genre, and a small step of the target toward its anchor."""
        if rng.random() < p.switch_prob and len(listener.liked) > 1:
            others = listener.liked[listener.liked != self.focus]
            w = listener.genre_pref[others]
            self.focus = int(rng.choice(others, p=w / w.sum()))
            self.anchor = 0.5 * space.centroids[self.focus] + 0.5 * listener.ideal
        step = rng.normal(0.0, p.feature_step, size=self.target.shape)
        self.target = np.clip(self.target + step + p.feature_pull * (self.anchor - self.target), 0.0, 1.0)


def utility(space: TrackSpace, listener: TasteListener, mood: Mood, tracks: np.ndarray, p: SimParams) -> np.ndarray:
    """u(t) for track indices ``tracks`` int [K] -> float64 [K] (formula in the module docstring)."""
    g = space.genre[tracks]
    genre = p.focus_share * (g == mood.focus) + (1.0 - p.focus_share) * listener.genre_pref[g]
    d2 = ((space.features[tracks] - mood.target) ** 2).sum(axis=-1)
    feat = np.exp(-d2 / (2.0 * p.feature_width**2))
    a = space.artist[tracks]
    recent = np.asarray(mood.recent_artists[-3:], dtype=np.int64)  # [<=3]
    repeats = (a[:, None] == recent[None, :]).sum(axis=1).astype(np.float64)  # [K]
    return (
        p.genre_weight * genre
        + p.feature_weight * feat
        + p.artist_bonus * listener.fav_artist[a]
        + listener.pop_taste * space.popularity[tracks]
        - p.repeat_penalty * repeats
    )


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class Reaction:
    """What the listener did with one track: ``kind`` play, skip or like, and how long it listened."""

    track: int
    kind: str
    played_ms: int
    duration_ms: int


def react(
    space: TrackSpace, listener: TasteListener, mood: Mood, track: int, rng: np.random.Generator, p: SimParams
) -> Reaction:
    """Hear ``track`` in ``mood``: skip, like or play (stochastic, from ``rng``). Records the artist in the mood."""
    u = float(utility(space, listener, mood, np.array([track]), p)[0])
    duration = int(space.duration_ms[track])
    # Always draw the same number of values, so that what happens later does not depend on this outcome's kind.
    r_skip, r_like, r_len = rng.random(3)
    mood.recent_artists.append(int(space.artist[track]))
    if r_skip < _sigmoid(p.skip_slope * (p.skip_threshold + listener.pickiness - u)):
        return Reaction(track, SKIP, int(2_000 + r_len * min(38_000, duration - 2_000)), duration)
    if r_like < p.like_max * _sigmoid(p.like_slope * (u - p.like_threshold)):
        return Reaction(track, LIKE, duration, duration)
    played = duration if r_len < 0.85 else int(duration * (0.6 + 0.4 * r_len))
    return Reaction(track, PLAY, played, duration)


def organic_pick(
    space: TrackSpace,
    listener: TasteListener,
    mood: Mood,
    heard: set[int],
    rng: np.random.Generator,
    p: SimParams,
    temperature: float = 0.35,
) -> int:
    """A track the listener finds on its own (for its listening history): a softmax over u(t) of unheard tracks."""
    tracks = np.arange(space.n_tracks)
    u = utility(space, listener, mood, tracks, p) / temperature
    if heard:
        u[np.fromiter(heard, dtype=np.int64)] = -np.inf
    w = np.exp(u - u.max())
    return int(rng.choice(space.n_tracks, p=w / w.sum()))


def to_event(
    reaction: Reaction, user_id: str, track_id: str, ts_ms: int, session_id: str, event_id: str, source: str
) -> dict[str, Any]:
    """The v1 event for a reaction (a JSON-able dict for ``EventProducer.send``)."""
    event: dict[str, Any] = {
        "v": 1,
        "type": reaction.kind,
        "event_id": event_id,
        "user_id": user_id,
        "track_id": track_id,
        "ts_ms": int(ts_ms),
        "session_id": session_id,
        "context": {"device": "mobile", "source": source},
    }
    if reaction.kind != LIKE:
        event.update(played_ms=reaction.played_ms, position_ms=reaction.played_ms, duration_ms=reaction.duration_ms)
    return event
