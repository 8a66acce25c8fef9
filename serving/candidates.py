"""Candidate generation: which tracks the session model rescores for each user.

Four sources, merged in this order without duplicates, ``k`` tracks per user:

1. repeats (``repeats=True``): the session's recent tracks that were played or liked (not skipped),
   most recent first: real listeners replay what they just heard; with ``skipped=True`` as well the
   session's skipped tracks after them (offline replays of real histories, where a "skip" is any play
   under 30 s and the same track often follows its own interrupted play; online a skip means no, so the
   worker leaves them out);
2. co-occurrence neighbours (``neighbours`` given and ``n_neighbours > 0``): the tracks that co-occur in
   training sessions with the session's last tracks (``serving.features.FeatureBuilder.session_neighbours``,
   the bundle's neighbour table, a session-kNN-like score), best first;
3. history (``history > 0`` and the caller passes ``histories``): the listener's own earlier tracks,
   most recent first, at most ``history`` of them;
4. retrieval: the tracks nearest to ``streams.session.query_vector`` that are neither in the session's
   recent tracks nor already taken.

With ``repeats=False`` and no history this is exactly the plain retrieval (the session's recent tracks
excluded). The order is part of the output: a model may read a candidate's position in the list as
evidence (``models_onnx.realscorer``). Pure apart from the injected retriever.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from serving.features import FeatureBuilder, ListenerHistory
from serving.retrieval import Retriever
from streams.session import SKIPPED, SessionState


def session_repeats(state: SessionState, skipped: bool = False) -> list[int]:
    """The session's recent tracks that were not skipped (last outcome counts), most recent first, distinct;
    with ``skipped`` the skipped ones after them, most recent first."""
    seen: set[int] = set()
    out: list[int] = []
    later: list[int] = []
    for track, outcome in zip(reversed(state.recent), reversed(state.outcomes), strict=True):
        if track in seen:
            continue
        seen.add(track)
        if outcome != SKIPPED:
            out.append(track)
        elif skipped:
            later.append(track)
    return out + later


class CandidateSource:
    """Merges repeats, co-occurrence neighbours, the listener's history and retrieval into ``k`` candidates."""

    def __init__(
        self,
        embeddings: np.ndarray,
        retriever: Retriever,
        repeats: bool = False,
        history: int = 0,
        neighbours: FeatureBuilder | None = None,
        n_neighbours: int = 0,
        skipped: bool = False,
    ) -> None:
        if history < 0 or n_neighbours < 0:
            raise ValueError(f"history and n_neighbours must be >= 0, got {history}, {n_neighbours}")
        self._neighbours = neighbours
        self.n_neighbours = n_neighbours if neighbours is not None else 0
        self._items = embeddings  # float32 [N, D]
        self._retriever = retriever
        self.repeats = repeats
        self.skipped = skipped
        self.history = history

    def fixed(self, state: SessionState, history: Sequence[int] | None) -> list[int]:
        """The candidates that precede retrieval for one user: repeats, neighbours, then history tracks."""
        fixed = session_repeats(state, self.skipped) if self.repeats else []
        taken = set(fixed)
        if self.n_neighbours and self._neighbours is not None:
            for t in self._neighbours.session_neighbours(state, self.n_neighbours):
                if t not in taken:
                    taken.add(t)
                    fixed.append(t)
        if self.history and history is not None:
            if isinstance(history, ListenerHistory):  # its tracks are distinct already
                tracks = history.tracks
            else:
                tracks = np.asarray(list(history), dtype=np.int64)
                tracks = tracks[np.sort(np.unique(tracks, return_index=True)[1])]  # distinct, first occurrence
            head = tracks[: self.history + len(taken)].tolist()
            fixed.extend([t for t in head if t not in taken][: self.history])
        return fixed

    def generate(
        self,
        states: Sequence[SessionState],
        queries: np.ndarray,
        k: int,
        histories: Sequence[Sequence[int] | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """queries float32 [B, D] -> (indices int64 [B, K], query similarities float32 [B, K]), K <= k.

        ``histories[b]``: user b's earlier track indices, most recent first (None: none known). Fixed
        candidates (repeats, history) come first, then retrieval fills up to ``k``.
        """
        hist = histories if histories is not None else [None] * len(states)
        fixed = [self.fixed(s, h)[:k] for s, h in zip(states, hist, strict=True)]
        exclude = [set(s.recent) | set(f) for s, f in zip(states, fixed, strict=True)]
        if not any(fixed):
            return self._retriever.search(queries, exclude, k)
        ret_idx, _ = self._retriever.search(queries, exclude, k)  # [B, k'] best first
        width = min(k, min(len(f) + ret_idx.shape[1] for f in fixed))
        idx = np.empty((len(states), width), np.int64)
        for b, f in enumerate(fixed):
            row = f[:width]
            idx[b, : len(row)] = row
            idx[b, len(row) :] = ret_idx[b, : width - len(row)]
        sims = np.einsum("bkd,bd->bk", self._items[idx], np.asarray(queries, np.float32)).astype(np.float32)
        return idx, sims
