"""Session-kNN's tracks blended into the model's list, for bundles that carry a session index.

The model ranks the candidates it is given sharply (the session's repeats, co-occurrence neighbours, the
listener's history, retrieval), but whole training sessions like the current one hold targets those candidates
miss. ``SessionNeighbours.lists`` ranks tracks by V-SKNN (``models_onnx.session_knn``: the ``k`` training
sessions most similar to the session's last ``max_len`` tracks vote for their tracks); ``alternate`` merges the
model's list and that one, place by place, the model's first. Measured on real listening sessions
(docs/offline-evaluation.md): HR@20 above both lists alone.

Pure (states and the index in, track indices out) apart from ``load_neighbours``, which reads the bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models_onnx.bundle import read_manifest, read_session_index
from models_onnx.session_knn import SessionIndex, neighbour_sessions, session_tracks
from streams.session import SessionState


@dataclass(frozen=True, eq=False)
class SessionNeighbours:
    """V-SKNN over a bundle's session index (``models_onnx.bundle.read_session_index``)."""

    index: SessionIndex
    k: int = 100  # neighbour sessions
    sample: int = 500  # the most recent sessions holding each current track, as candidates
    max_len: int = 10  # the session's last tracks that make its query
    n: int = 20  # tracks per list

    def lists(self, states: Sequence[SessionState]) -> list[np.ndarray]:
        """Per state, int64 [<= n]: the tracks with the highest V-SKNN score, best first (ties: the lower
        index, which in a real-data bundle is the more played track); empty for a session with no tracks."""
        out = []
        for state in states:
            current = np.asarray(state.recent[-self.max_len :], dtype=np.int64)
            sessions, sim = neighbour_sessions(self.index, current, self.k, self.sample)
            if not len(sessions):
                out.append(np.zeros(0, np.int64))
                continue
            tracks, lens = session_tracks(self.index, sessions)
            unique, inverse = np.unique(tracks, return_inverse=True)
            score = np.bincount(inverse, weights=np.repeat(sim, lens))
            order = np.lexsort((unique, -score))[: self.n]
            out.append(unique[order].astype(np.int64))
        return out


def load_neighbours(bundle_dir: Path | str) -> SessionNeighbours | None:
    """The bundle's session-kNN (None for a bundle without a session index, such as the generated default)."""
    index = read_session_index(bundle_dir, read_manifest(bundle_dir))
    return None if index is None else SessionNeighbours(index)


def alternate(first: np.ndarray, second: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge two rankings (int track indices, best first) place by place, ``first``'s first, skipping tracks
    already listed, until ``n`` (or both run out): (tracks int64 [<= n], from_second bool [<= n])."""
    listed: list[int] = []
    from_second: list[bool] = []
    seen: set[int] = set()
    lists = (first.tolist(), second.tolist())
    at = [0, 0]
    turn = 0
    while len(listed) < n and (at[0] < len(lists[0]) or at[1] < len(lists[1])):
        if at[turn] >= len(lists[turn]):
            turn ^= 1
        src = lists[turn]
        while at[turn] < len(src) and src[at[turn]] in seen:
            at[turn] += 1
        if at[turn] < len(src):
            t = src[at[turn]]
            listed.append(t)
            from_second.append(turn == 1)
            seen.add(t)
            at[turn] += 1
        turn ^= 1
    return np.asarray(listed, dtype=np.int64), np.asarray(from_second, dtype=bool)
