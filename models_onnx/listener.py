"""Simulated listeners of the synthetic world and the sessions they listen to.

A listener's hidden taste is a mixture of 1-3 genre centres plus a personal noise vector (unit length).
Within a session the listener's *mood* starts near the taste, leans toward or away from energetic music
with the hour of day, and drifts a little after every track. The affinity for a track is mood · latent
(cosine, both unit length): a low affinity makes a skip likely, a very high one a like, else a play.

The next track of a session comes from a realistic mix: the same artist or genre as the last track the
listener kept, popular tracks, the listener's favourite genres, or anything at all. That mix gives skip
rates of roughly 25-40%.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

if TYPE_CHECKING:
    from models_onnx.generate import SyntheticWorld

DEVICES: Final = ("mobile", "desktop", "speaker", "web", "car")
SKIP_THRESHOLD: Final = 0.23  # affinity at which skipping is a coin flip
SKIP_SLOPE: Final = 9.0
LIKE_THRESHOLD: Final = 0.75
SESSION_GAP_MS: Final = (4 * 3_600_000, 40 * 3_600_000)  # between two sessions of a listener


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True, eq=False)
class SimListener:
    """One simulated listener. Immutable; all randomness comes from the ``rng`` arguments."""

    world: SyntheticWorld
    index: int
    user_id: str
    taste: np.ndarray  # float32 [L], unit length (hidden)
    genres: np.ndarray  # int64 [m], 1 <= m <= 3 favourite genres
    genre_weights: np.ndarray  # float64 [m], sums to 1
    device: str
    home_hour: float  # usual hour of day (UTC) a session starts
    pickiness: float  # added to the skip threshold

    @staticmethod
    def create(world: SyntheticWorld, i: int) -> SimListener:
        """Listener ``i`` of ``world``: deterministic from (world.seed, i)."""
        rng = np.random.default_rng([world.seed, 1, i])
        n_genres = len(world.genre_names)
        m = int(rng.integers(1, min(3, n_genres) + 1))
        genres = rng.choice(n_genres, size=m, replace=False)
        weights = rng.dirichlet(np.full(m, 3.0))
        dim = world.latent_dim
        mix = weights @ world.genre_centres[genres]  # [L]
        taste = _unit(_unit(mix) + 0.45 * rng.normal(size=dim) / math.sqrt(dim))
        return SimListener(
            world=world,
            index=i,
            user_id=f"user-{i:04d}",
            taste=taste.astype(np.float32),
            genres=genres.astype(np.int64),
            genre_weights=weights,
            device=DEVICES[int(rng.integers(len(DEVICES)))],
            home_hour=float(rng.uniform(0.0, 24.0)),
            pickiness=float(rng.normal(0.0, 0.05)),
        )

    def session_mood(self, ts_ms: int, rng: np.random.Generator) -> np.ndarray:
        """The mood at the start of a session at ``ts_ms``: float32 [L], unit length."""
        hour = (ts_ms / 3_600_000.0) % 24.0
        lean = 0.3 * math.cos(2.0 * math.pi * (hour - 18.0) / 24.0)  # energetic evenings, calm nights
        noise = rng.normal(size=self.taste.shape[0]) / math.sqrt(self.taste.shape[0])
        return _unit(self.taste + lean * self.world.energy_axis + 0.25 * noise).astype(np.float32)

    def drift(self, mood: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The mood one track later: a small random step, pulled back toward the taste."""
        step = rng.normal(size=mood.shape[0]) / math.sqrt(mood.shape[0])
        return _unit(mood + 0.06 * step + 0.03 * self.taste).astype(np.float32)

    def affinity(self, track_index: int, mood: np.ndarray | None = None) -> float:
        """Cosine of the track's latent with the mood (default: the taste), in [-1, 1]."""
        ref = self.taste if mood is None else mood
        return float(ref @ self.world.latent[track_index])

    def react(
        self,
        track_id: str,
        ts_ms: int,
        rng: np.random.Generator,
        *,
        session_id: str | None = None,
        mood: np.ndarray | None = None,
        source: str = "radio",
    ) -> dict[str, Any]:
        """The listener's reaction to ``track_id`` at ``ts_ms``: one v1 event as a JSON-able dict.

        ``skip`` when affinity is low, ``like`` when it is very high, else ``play`` (to the end, mostly).
        Raises ``KeyError`` for a track that is not in the catalog.
        """
        ti = self.world.index[track_id]
        a = self.affinity(ti, mood) + 0.1 * float(self.world.popularity[ti])
        duration = int(self.world.duration_ms[ti])
        device = self.device if rng.random() < 0.9 else DEVICES[int(rng.integers(len(DEVICES)))]
        event: dict[str, Any] = {
            "v": 1,
            "type": "play",
            "event_id": f"ev-{rng.bytes(12).hex()}",
            "user_id": self.user_id,
            "track_id": track_id,
            "ts_ms": int(ts_ms),
            "context": {"device": device, "source": source},
        }
        if session_id is not None:
            event["session_id"] = session_id
        if rng.random() < _sigmoid(SKIP_SLOPE * (SKIP_THRESHOLD + self.pickiness - a)):
            played = int(rng.uniform(2_000, min(40_000, duration)))
            event.update(type="skip", played_ms=played, position_ms=played, duration_ms=duration)
        elif rng.random() < 0.5 * _sigmoid(12.0 * (a - LIKE_THRESHOLD)):
            event["type"] = "like"
        else:
            played = duration if rng.random() < 0.85 else int(duration * rng.uniform(0.6, 1.0))
            event.update(played_ms=played, position_ms=played, duration_ms=duration)
        return event


def next_track(world: SyntheticWorld, listener: SimListener, anchor: int, rng: np.random.Generator) -> tuple[int, str]:
    """Draw the next track of a session and its ``source``; ``anchor`` is the last kept track or -1."""
    u = rng.random()
    if anchor < 0:
        u = 0.42 + 0.58 * u  # nothing to continue from yet
    if u < 0.12:
        a = int(world.track_artist[anchor])
        return _draw(world.artist_tracks[a], world.artist_cdf[a], rng), "artist"
    if u < 0.42:
        g = int(world.track_genre[anchor])
        return _draw(world.genre_tracks[g], world.genre_cdf[g], rng), "radio"
    if u < 0.60:
        return int(np.searchsorted(world.pop_cdf, rng.random(), side="right").clip(0, world.n_tracks - 1)), "charts"
    if u < 0.86:
        g = int(listener.genres[np.searchsorted(np.cumsum(listener.genre_weights), rng.random() * 0.999999)])
        return _draw(world.genre_tracks[g], world.genre_cdf[g], rng), "playlist"
    return int(rng.integers(world.n_tracks)), "discover"


def simulate_user(
    world: SyntheticWorld,
    listener: SimListener,
    n_sessions: int,
    events_per_session: int,
    start_ms: int,
    rng: np.random.Generator,
) -> Iterator[dict[str, Any]]:
    """Yield one listener's sessions, event by event in time order, starting at ``start_ms``."""
    ts = start_ms
    for _ in range(n_sessions):
        session_id = f"ses-{rng.bytes(8).hex()}"
        mood = listener.session_mood(ts, rng)
        anchor, heard = -1, set()
        for _ in range(events_per_session):
            ti, source = next_track(world, listener, anchor, rng)
            for _retry in range(3):  # avoid repeats within a session, mostly
                if ti not in heard:
                    break
                ti, source = next_track(world, listener, anchor, rng)
            heard.add(ti)
            event = listener.react(world.track_ids[ti], ts, rng, session_id=session_id, mood=mood, source=source)
            yield event
            if event["type"] != "skip":
                anchor = ti
            ts += event.get("played_ms", int(world.duration_ms[ti])) + int(rng.integers(0, 3_000))
            mood = listener.drift(mood, rng)
        ts += int(rng.integers(*SESSION_GAP_MS))


def _draw(tracks: np.ndarray, cdf: np.ndarray, rng: np.random.Generator) -> int:
    i = int(np.searchsorted(cdf, rng.random(), side="right"))
    return int(tracks[min(i, len(tracks) - 1)])
