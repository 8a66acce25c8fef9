"""Session-kNN (V-SKNN) over an index of training sessions: the baseline's scoring, torch-free so serving can share it.

``SessionIndex`` holds every training session's distinct tracks both ways (session -> tracks, track -> sessions
most recent first). ``neighbour_sessions`` finds the ``k`` training sessions most similar to the current one
(its last tracks with linearly decaying weights, most recent 1; similarity = weighted overlap / sqrt(len(current)
* len(neighbour)), candidates = the ``sample`` most recent sessions holding each current track);
``session_tracks`` lists their tracks, whose summed similarities are V-SKNN's scores. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class SessionIndex:
    """Training sessions' distinct tracks; ``P`` (session, track) pairs, ``S`` sessions, ``N`` tracks."""

    session_ptr: np.ndarray  # int64 [S + 1]: session s holds session_items[session_ptr[s] : session_ptr[s + 1]]
    session_items: np.ndarray  # int [P] track indices, by session
    item_ptr: np.ndarray  # int64 [N + 1]: track i is in item_sessions[item_ptr[i] : item_ptr[i + 1]]
    item_sessions: np.ndarray  # int [P] session indices, by track, the most recent (last play) first

    @property
    def n_tracks(self) -> int:
        return int(self.item_ptr.shape[0] - 1)

    @property
    def n_sessions(self) -> int:
        return int(self.session_ptr.shape[0] - 1)

    def __len__(self) -> int:
        return int(self.session_items.shape[0])


def session_index(items: np.ndarray, sessions: np.ndarray, ts_ms: np.ndarray, n: int) -> SessionIndex:
    """The index of plays ``items`` int64 [E] (vocabulary index < ``n``, all >= 0) with their ``sessions`` int64 [E]
    (any ids) and times ``ts_ms`` [E]; a session's recency is its last play."""
    sess_ids, sess = np.unique(sessions, return_inverse=True)
    pairs = np.unique(sess * n + items)  # distinct (session, item), sorted by session
    s_of, i_of = pairs // n, pairs % n
    ends = np.zeros(len(sess_ids), np.int64)
    np.maximum.at(ends, sess, ts_ms)
    order = np.lexsort((-ends[s_of], i_of))  # by item, most recent session first (ties by session)
    return SessionIndex(
        session_ptr=np.concatenate([[0], np.cumsum(np.bincount(s_of, minlength=len(sess_ids)))]).astype(np.int64),
        session_items=i_of,
        item_ptr=np.concatenate([[0], np.cumsum(np.bincount(i_of, minlength=n))]).astype(np.int64),
        item_sessions=s_of[order],
    )


def neighbour_sessions(
    index: SessionIndex, current: np.ndarray, k: int = 100, sample: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """(sessions int64 [<= k], similarity float64) of the training sessions most similar to ``current`` (int64
    track indices, oldest first, all >= 0); unordered. Empty when ``current`` is."""
    if not len(current):
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    weights = np.arange(1, len(current) + 1, dtype=np.float64) / len(current)
    lo = index.item_ptr[current]
    hi = np.minimum(index.item_ptr[current + 1], lo + sample)
    cand = np.concatenate([index.item_sessions[a:b] for a, b in zip(lo.tolist(), hi.tolist(), strict=True)])
    cs, inv = np.unique(cand, return_inverse=True)
    if not len(cs):
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    lens = (index.session_ptr[cs + 1] - index.session_ptr[cs]).astype(np.float64)
    sim = np.bincount(inv, weights=np.repeat(weights, hi - lo)) / np.sqrt(len(current) * lens)
    if len(cs) > k:
        top = np.argpartition(-sim, k - 1)[:k]
        cs, sim = cs[top], sim[top]
    return cs.astype(np.int64), sim


def session_tracks(index: SessionIndex, sessions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tracks int64 [P'], lengths int64 [len(sessions)]): the distinct tracks of each of ``sessions``, in turn."""
    lens = (index.session_ptr[sessions + 1] - index.session_ptr[sessions]).astype(np.int64)
    starts = index.session_ptr[sessions]
    if not len(sessions):
        return np.zeros(0, np.int64), lens
    at = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(int(lens.sum()))
    return index.session_items[at].astype(np.int64), lens
