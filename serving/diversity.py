"""The exploration and diversity knob: per-user ``Preferences`` and the pure reranking they drive.

``Preferences(exploration, diversity)``, both in [0, 1]:

* ``diversity`` is the strength of an MMR rerank (maximal marginal relevance) of the scored candidates:
  each next pick maximises ``(1 - lambda) * relevance - lambda * max cosine to the picks so far``, with
  ``lambda = diversity`` and relevance the model score min-max scaled to [0, 1] over the user's candidates.
* ``exploration`` is the share of the list replaced by exploratory picks: ``round(exploration * n)`` tracks
  drawn from the candidates ranked below the top ``n`` (the tail of retrieval's list), uniformly, with a
  generator seeded by the user and the minute, and placed at evenly spaced positions.

``Preferences()`` (0, 0) changes nothing: ``rerank`` then returns exactly the plain score order.
Stored per user, format v1 (``encode_preferences``); see docs/api.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import msgspec
import numpy as np

PREFERENCES_VERSION: Final = 1
# MMR looks at the best ``MMR_POOL_FACTOR * n`` candidates only: far enough down to find variety, bounded cost.
MMR_POOL_FACTOR: Final = 4


@dataclass(frozen=True)
class Preferences:
    """One listener's knob. ``exploration``: share of exploratory picks; ``diversity``: MMR strength."""

    exploration: float = 0.0
    diversity: float = 0.0

    def __post_init__(self) -> None:
        for name in ("exploration", "diversity"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= float(value) <= 1.0):
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")

    @property
    def neutral(self) -> bool:
        """True for (0, 0): rankings are exactly as without the knob."""
        return self.exploration == 0.0 and self.diversity == 0.0


NEUTRAL: Final = Preferences()


class _PrefsV1(msgspec.Struct, frozen=True):
    v: int
    exploration: float
    diversity: float


def encode_preferences(prefs: Preferences) -> bytes:
    """The stored form, JSON v1: ``{"v": 1, "exploration": 0.2, "diversity": 0.5}``."""
    return msgspec.json.encode(_PrefsV1(PREFERENCES_VERSION, float(prefs.exploration), float(prefs.diversity)))


def decode_preferences(raw: bytes | str) -> Preferences:
    """Read a stored v1 record; ValueError if it is not one."""
    try:
        rec = msgspec.json.decode(raw, type=_PrefsV1)
    except msgspec.MsgspecError as exc:
        raise ValueError(f"not a preferences record: {exc}") from None
    if rec.v != PREFERENCES_VERSION:
        raise ValueError(f"preferences format v{rec.v}; this code reads v{PREFERENCES_VERSION}")
    return Preferences(rec.exploration, rec.diversity)


def seed_for(user: str, now_ms: int) -> int:
    """A generator seed from the user and the minute: the same user gets the same picks within a minute."""
    digest = hashlib.blake2b(f"{user}|{now_ms // 60_000}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def mmr_order(scores: np.ndarray, vectors: np.ndarray, n: int, strength: float) -> np.ndarray:
    """Indices into ``scores`` of ``n`` picks, best first, by maximal marginal relevance.

    scores float32 [K] (``-inf`` never picked), vectors float32 [K, D] (compared by cosine), ``strength`` in
    [0, 1]: 0 is the plain score order. Only the best ``MMR_POOL_FACTOR * n`` candidates are considered.
    """
    finite = np.isfinite(scores)
    order = np.argsort(-scores, kind="stable")
    order = order[finite[order]]
    if strength <= 0.0 or len(order) <= 1:
        return order[:n]
    pool = order[: MMR_POOL_FACTOR * n]  # [P]
    rel = scores[pool].astype(np.float64)
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
    unit = vectors[pool].astype(np.float64)
    unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T  # [P, P]
    picked: list[int] = [0]  # the best-scored candidate always leads
    closest = sim[0].copy()  # [P] max similarity to the picks so far
    taken = np.zeros(len(pool), dtype=bool)
    taken[0] = True
    for _ in range(min(n, len(pool)) - 1):
        value = (1.0 - strength) * rel - strength * closest
        value[taken] = -np.inf
        j = int(np.argmax(value))
        picked.append(j)
        taken[j] = True
        np.maximum(closest, sim[j], out=closest)
    return pool[np.asarray(picked, dtype=np.int64)]


def exploration_slots(n: int, share: float) -> list[int]:
    """0-based list positions given to exploratory picks: ``round(share * n)`` of them, evenly spaced."""
    m = min(n, int(round(share * n)))
    if m <= 0:
        return []
    if m == n:
        return list(range(n))
    return sorted({int((i + 1) * n / (m + 1)) for i in range(m)})


def rerank(
    scores: np.ndarray, vectors: np.ndarray, n: int, prefs: Preferences, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``n`` of K candidates for one user under ``prefs``.

    scores float32 [K] (``-inf``: not eligible), vectors float32 [K, D]. Returns (positions int64 [n'] into
    the candidates, best first; explored bool [n'], true where the slot is an exploratory pick). With
    ``Preferences()`` this is exactly ``argsort(-scores, stable)[:n]`` restricted to finite scores.
    """
    picks = mmr_order(scores, vectors, n, prefs.diversity)
    explored = np.zeros(len(picks), dtype=bool)
    slots = [s for s in exploration_slots(len(picks), prefs.exploration) if s < len(picks)]
    if not slots:
        return picks, explored
    eligible = np.flatnonzero(np.isfinite(scores))
    tail = np.setdiff1d(eligible, picks, assume_unique=True)  # candidates outside the picks
    if len(tail) == 0:
        return picks, explored
    gen = rng if rng is not None else np.random.default_rng(0)
    chosen = gen.choice(tail, size=min(len(slots), len(tail)), replace=False).tolist()
    slot_set = set(slots[: len(chosen)])
    # Exploratory picks take their slots; the displaced picks of the lowest rank drop off the end.
    rest = iter(picks.tolist())
    out = [chosen.pop(0) if pos in slot_set else next(rest) for pos in range(len(picks))]
    explored = np.asarray([pos in slot_set for pos in range(len(picks))], dtype=bool)
    return np.asarray(out, dtype=np.int64), explored
