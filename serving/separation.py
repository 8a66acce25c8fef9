"""Artist separation: tracks by the artists the session has just heard are ranked after every other candidate.

Listeners tire of hearing one artist again and again (radio programming keeps artists apart for the same
reason), and item embeddings put an artist's tracks next to each other, so a session vector that just moved
toward a track also moved toward its artist's other tracks. ``demote_recent_artists`` keeps the candidates'
order within each group and only moves the recent artists' tracks behind the rest: they are still served
when nothing else is left.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np

from streams.session import SessionState

# The artists of this many of the session's most recent tracks (played, liked or skipped) are held back.
ARTIST_WINDOW: Final = 3


def artist_codes(artist_of: Sequence[str]) -> np.ndarray:
    """int64 [N]: one integer per distinct artist id, per track index (``Catalog.artist_of``). An empty
    artist id ("unknown") gets -1 and is never held back."""
    names = sorted({a for a in artist_of if a})
    code = {a: i for i, a in enumerate(names)}
    return np.asarray([code.get(a, -1) for a in artist_of], dtype=np.int64)


def demote_recent_artists(
    states: Sequence[SessionState],
    idx: np.ndarray,
    scores: np.ndarray,
    artists: np.ndarray,
    window: int = ARTIST_WINDOW,
) -> np.ndarray:
    """Scores float32 [B, K] for candidates ``idx`` int [B, K] with every candidate whose artist is among the
    artists of the session's last ``window`` tracks moved below all other candidates of that user (order
    within both groups kept). ``-inf`` scores (not eligible) stay ``-inf``; the input is not modified."""
    if window <= 0 or not states:
        return scores
    out = np.array(scores, dtype=np.float32, copy=True)
    recent = np.full((len(states), window), -2, dtype=np.int64)  # [B, W]; -2 matches no candidate
    for b, state in enumerate(states):
        tail = state.recent[-window:]
        if tail:
            recent[b, : len(tail)] = artists[list(tail)]
    recent[recent < 0] = -2  # an unknown artist (-1) is never held back
    cand = artists[idx]  # [B, K]
    finite = np.isfinite(out)
    held = (cand[:, :, None] == recent[:, None, :]).any(axis=2) & finite  # [B, K]
    rows = held.any(axis=1) & ~held.all(axis=1)  # some held back, and not every candidate
    if not rows.any():
        return out
    lo = np.where(finite, out, np.inf).min(axis=1)
    hi = np.where(finite, out, -np.inf).max(axis=1)
    span = (hi - lo + 1.0).astype(np.float32)  # [B]
    out -= np.where(held & rows[:, None], span[:, None], np.float32(0.0))
    return out
