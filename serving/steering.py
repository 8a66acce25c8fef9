"""Steering by prompt: a text prompt becomes a bias of a listener's session for a while.

1. **Read the prompt** (``PromptReader.read``): the prompt and each of its words are embedded by the text model
   (``serving.text_encoder``) and compared with a table of descriptor phrases (``DESCRIPTORS``), each with a
   known direction in audio-feature space (energy, valence, acousticness, danceability). Descriptors whose best
   cosine similarity reaches ``threshold`` and is within ``margin`` of the best descriptor's are matched (at
   most ``max_matches``); their directions, weighted by similarity, sum to the target feature direction
   float32 [4] (unit length).
2. **Map it into the item space** (``FeatureMap``, fitted once per catalog): a least-squares map from the
   catalog's standardised audio features float32 [N, 4] to its item embeddings float32 [N, D]; the steering
   vector is ``unit(direction @ B)`` float32 [D].
3. **Store it per user** (``Steer``, format v1, in a ``streams.steer_store.SteerStore`` with an expiry).
4. **Apply it at ranking** (``steer_state``): the ranking sees the session's positive vector turned toward the
   steering vector, ``pos' = |pos| * (unit(pos) + strength * v)`` (``strength * v`` for an empty session), so
   both retrieval (``query_vector``) and the session model follow it. The stored state is never changed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Protocol

import msgspec
import numpy as np

from models_onnx.bundle import read_manifest, read_tracks
from streams.errors import InvalidSteer, ModelError
from streams.session import SessionState

FEATURES: Final = ("energy", "valence", "acousticness", "danceability")
STEER_FORMAT: Final = 1

# Descriptor phrase -> direction in (energy, valence, acousticness, danceability). Hand-written from what the
# words say about the audio features (Spotify's definitions of them); unit length after normalisation.
DESCRIPTORS: Final[Mapping[str, tuple[float, float, float, float]]] = {
    "upbeat": (0.7, 0.7, 0.0, 0.3),
    "energetic": (1.0, 0.2, -0.2, 0.2),
    "workout": (1.0, 0.2, -0.3, 0.4),
    "running": (1.0, 0.2, -0.3, 0.3),
    "intense": (1.0, -0.2, -0.3, 0.0),
    "loud": (1.0, 0.0, -0.4, 0.0),
    "aggressive": (1.0, -0.5, -0.3, 0.0),
    "party": (0.6, 0.5, -0.2, 1.0),
    "danceable": (0.4, 0.3, -0.2, 1.0),
    "groovy": (0.3, 0.4, 0.0, 1.0),
    "happy": (0.3, 1.0, 0.0, 0.3),
    "cheerful": (0.3, 1.0, 0.0, 0.2),
    "sad": (-0.4, -1.0, 0.2, -0.2),
    "melancholic": (-0.5, -1.0, 0.3, -0.2),
    "dark": (0.0, -1.0, -0.2, 0.0),
    "calm": (-1.0, 0.0, 0.4, -0.3),
    "relaxing": (-1.0, 0.2, 0.5, -0.3),
    "chill": (-0.7, 0.2, 0.3, 0.0),
    "sleep": (-1.0, 0.0, 0.6, -0.5),
    "quiet": (-1.0, 0.0, 0.5, -0.2),
    "focus": (-0.6, 0.0, 0.4, -0.3),
    "acoustic": (-0.3, 0.0, 1.0, -0.2),
    "piano": (-0.6, 0.0, 1.0, -0.3),
    "guitar": (-0.2, 0.1, 0.8, 0.0),
    "electronic": (0.4, 0.0, -1.0, 0.4),
    "rainy": (-0.6, -0.5, 0.5, -0.2),
    "evening": (-0.4, 0.0, 0.3, 0.0),
    "morning": (0.2, 0.6, 0.2, 0.0),
    "romantic": (-0.4, 0.5, 0.5, 0.0),
    "mellow": (-0.8, 0.1, 0.4, -0.2),
    "study": (-0.6, 0.0, 0.4, -0.3),
    "gym": (1.0, 0.2, -0.3, 0.4),
    "night": (-0.5, -0.2, 0.3, 0.0),
    "lullaby": (-1.0, 0.2, 0.8, -0.5),
    "summer": (0.5, 0.8, -0.1, 0.6),
    "angry": (1.0, -0.8, -0.3, 0.0),
    "peaceful": (-1.0, 0.4, 0.6, -0.3),
}
# Words that say nothing about the sound; they are not matched on their own (the whole prompt still is).
STOPWORDS: Final = frozenset(
    "a an and at for from i in it me music my of on playlist please play some something song songs the to "
    "track tracks tunes vibe vibes with".split()
)
_WORD: Final = re.compile(r"[a-z0-9']+")


class Encoder(Protocol):
    """Text -> unit vectors float32 [len(texts), E] (``serving.text_encoder.TextEncoder``)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Match:
    """A descriptor the prompt matched, with its cosine similarity (best over the prompt and its words)."""

    descriptor: str
    similarity: float
    direction: tuple[float, ...]


@dataclass(frozen=True)
class Reading:
    """How a prompt was read: the matched descriptors and the target feature direction float32 [4]."""

    prompt: str
    matches: tuple[Match, ...]
    direction: np.ndarray  # float32 [len(FEATURES)], unit length (zeros if nothing matched)

    def as_dict(self) -> dict[str, object]:
        return {
            "prompt": self.prompt,
            "matched": [{"descriptor": m.descriptor, "similarity": round(m.similarity, 3)} for m in self.matches],
            "direction": {f: round(float(x), 3) for f, x in zip(FEATURES, self.direction, strict=True)},
        }


class PromptReader:
    """Reads prompts against ``DESCRIPTORS`` with a text encoder; descriptor vectors are embedded once."""

    def __init__(self, encoder: Encoder, threshold: float = 0.5, margin: float = 0.2, max_matches: int = 4) -> None:
        self._encoder = encoder
        self._names = list(DESCRIPTORS)
        self._desc = encoder.encode(self._names)  # [K, E]
        dirs = np.asarray([DESCRIPTORS[n] for n in self._names], np.float32)
        self._dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)  # [K, 4]
        self.threshold = threshold
        self.margin = margin
        self.max_matches = max_matches

    def read(self, prompt: str) -> Reading:
        """Match ``prompt``; InvalidSteer if it is empty or longer than 200 characters."""
        text = " ".join(prompt.split())
        if not text:
            raise InvalidSteer("the prompt is empty: send a few words such as 'upbeat workout'")
        if len(text) > 200:
            raise InvalidSteer(f"the prompt has {len(text)} characters; keep it under 200")
        words = [w for w in dict.fromkeys(_WORD.findall(text.lower())) if w not in STOPWORDS]
        segments = [text] + [w for w in words if w != text.lower()]
        sims = self._encoder.encode(segments) @ self._desc.T  # [S, K]
        best = sims.max(axis=0)  # [K]
        floor = max(self.threshold, float(best.max()) - self.margin)  # near-misses of a clear match do not count
        order = [k for k in np.argsort(-best, kind="stable") if best[k] >= floor][: self.max_matches]
        matches = tuple(
            Match(self._names[k], float(best[k]), tuple(round(float(x), 3) for x in self._dirs[k])) for k in order
        )
        direction = np.zeros(len(FEATURES), np.float32)
        for k in order:
            direction += float(best[k]) * self._dirs[k]
        norm = float(np.linalg.norm(direction))
        return Reading(text, matches, (direction / norm if norm > 0 else direction).astype(np.float32))


@dataclass(frozen=True, eq=False)
class FeatureMap:
    """Least-squares map from standardised audio features to item embeddings of one catalog.

    ``coef`` float32 [4, D]: embedding change per standard deviation of each feature.
    """

    coef: np.ndarray
    mean: np.ndarray  # float32 [4]
    std: np.ndarray  # float32 [4]

    @staticmethod
    def fit(features: np.ndarray, embeddings: np.ndarray, ridge: float = 1e-3) -> FeatureMap:
        """features float32 [N, 4], embeddings float32 [N, D] -> the map; ModelError if N < 8."""
        f = np.asarray(features, np.float64)
        if f.shape[0] < 8 or f.shape[0] != embeddings.shape[0]:
            raise ModelError(f"need audio features for at least 8 tracks to steer, got {f.shape[0]}")
        mean, std = f.mean(axis=0), np.maximum(f.std(axis=0), 1e-6)
        z = (f - mean) / std  # [N, 4]
        e = np.asarray(embeddings, np.float64)
        e = e - e.mean(axis=0)
        coef = np.linalg.solve(z.T @ z + ridge * len(z) * np.eye(z.shape[1]), z.T @ e)  # [4, D]
        return FeatureMap(coef.astype(np.float32), mean.astype(np.float32), std.astype(np.float32))

    def vector(self, direction: np.ndarray) -> np.ndarray:
        """The unit steering vector float32 [D] for a feature direction float32 [4] (zeros for zeros)."""
        v = np.asarray(direction, np.float32) @ self.coef
        n = float(np.linalg.norm(v))
        return (v / n if n > 0 else v).astype(np.float32)


def catalog_features(bundle_dir: Path | str) -> np.ndarray:
    """Audio features float32 [N, 4] of a bundle's tracks (``tracks.json``, columns in ``FEATURES`` order).

    ModelError if any track lacks them (steering needs every feature of every track)."""
    manifest = read_manifest(bundle_dir)
    tracks = read_tracks(bundle_dir, manifest)
    try:
        return np.asarray([[float(t["features"][f]) for f in FEATURES] for t in tracks], np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(
            f"tracks.json of {bundle_dir} lacks audio features {FEATURES} for some track ({exc!r}): "
            "steering by prompt needs them"
        ) from exc


class Steer(msgspec.Struct, frozen=True, kw_only=True):
    """One user's active steering (format v1, MessagePack in the store). ``vector``: float32 [D] bytes."""

    v: int = STEER_FORMAT
    prompt: str
    strength: float
    expires_ms: int
    model_version: str
    vector: bytes
    direction: tuple[float, ...] = ()

    def array(self) -> np.ndarray:
        return np.frombuffer(self.vector, dtype=np.float32)


def encode_steer(steer: Steer) -> bytes:
    return msgspec.msgpack.encode(steer)


def decode_steer(raw: bytes) -> Steer:
    """The stored steer; InvalidSteer for another format version or damaged bytes."""
    try:
        steer = msgspec.msgpack.decode(raw, type=Steer)
    except msgspec.DecodeError as exc:
        raise InvalidSteer(f"unreadable stored steer: {exc}") from exc
    if steer.v != STEER_FORMAT:
        raise InvalidSteer(f"stored steer has format {steer.v}; this code reads {STEER_FORMAT}")
    return steer


def make_steer(
    reading: Reading, fmap: FeatureMap, strength: float, now_ms: int, ttl_s: int, model_version: str
) -> Steer:
    """The steer to store for a reading; InvalidSteer for a strength outside (0, 4] or ttl_s outside 1..7 days."""
    if not 0.0 < strength <= 4.0:
        raise InvalidSteer(f"strength must be in (0, 4], got {strength}")
    if not 1 <= ttl_s <= 7 * 86_400:
        raise InvalidSteer(f"ttl_s must be 1 to 604800 seconds, got {ttl_s}")
    if not reading.matches:
        raise InvalidSteer(
            f"nothing in {reading.prompt!r} matched a known descriptor; try words such as "
            + ", ".join(f"'{d}'" for d in list(DESCRIPTORS)[:8])
        )
    return Steer(
        prompt=reading.prompt,
        strength=float(strength),
        expires_ms=now_ms + ttl_s * 1000,
        model_version=model_version,
        vector=fmap.vector(reading.direction).tobytes(),
        direction=tuple(round(float(x), 4) for x in reading.direction),
    )


def steer_state(state: SessionState, steer: Steer | None, now_ms: int, model_version: str = "") -> SessionState:
    """The state the ranking sees: ``pos`` turned toward the steering vector. Unchanged when ``steer`` is
    None, expired, for another model version or of another dimension."""
    if steer is None or steer.expires_ms <= now_ms:
        return state
    if model_version and steer.model_version != model_version:
        return state
    v = steer.array()
    if v.shape != state.pos.shape:
        return state
    norm = float(np.linalg.norm(state.pos))
    if norm > 0:
        pos = norm * (state.pos / norm + steer.strength * v)
    else:
        pos = steer.strength * v
    return replace(state, pos=pos.astype(np.float32))
