"""Per-candidate evidence for signature-v2 models (``models_onnx.signature.CANDIDATE_FEATURES``).

Everything comes from what the worker has: the session state (its recent tracks and outcomes), the
bundle's ``features.npz`` (a sparse top-M co-occurrence neighbour table and per-track statistics, see
``models_onnx.bundle``) and, where the caller knows it, the listener's history (``ListenerHistory``; the
offline replay passes it, the worker does not yet, and then the history features are 0 and
``history_known`` is 0). Pure numpy; ``FeatureBuilder.build`` is the one function training and serving share.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from models_onnx.signature import CANDIDATE_FEATURES, N_CANDIDATE_FEATURES
from streams.session import SKIPPED, SessionState

HISTORY_WINDOW: Final = 3000  # plays a ListenerHistory looks back
SESSION_WINDOW: Final = 10  # session tracks the session-kNN-like score looks back
SKIP_PRIOR_WEIGHT: Final = 10.0
COOC_SCALE: Final = 10.0
_F = {name: i for i, name in enumerate(CANDIDATE_FEATURES)}


@dataclass(frozen=True, eq=False)
class ListenerHistory:
    """A listener's earlier plays: distinct tracks most recent first with their play counts, and totals.

    ``tracks``: those played before the current row, the session's own first.
    Iterating yields the tracks (so it serves as ``histories[b]`` of ``serving.candidates.CandidateSource``).
    ``follows``/``follow_weights``: the tracks that followed the session's last known track within 3 plays
    in the history window (weights 1/distance, summed); ``last_skip`` and ``session_skips``/``session_plays``
    count every play, also those of tracks outside the catalog (which the session state never sees).
    """

    tracks: np.ndarray  # int64 [H] distinct, most recent first
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # int64 [H] plays in the window
    plays: int = 0  # all earlier plays
    skips: int = 0  # of them skipped
    follows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # int64 [Q]
    follow_weights: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))  # float64 [Q]
    last_skip: bool = False
    session_plays: int = 0
    session_skips: int = 0

    def __iter__(self) -> Iterator[int]:
        return iter(self.tracks.tolist())

    def __len__(self) -> int:
        return int(self.tracks.shape[0])

    def __getitem__(self, i: int) -> int:
        return int(self.tracks[i])


def distinct_recent(items: np.ndarray, lo: int, hi: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(tracks int64 [<= n] distinct, most recent first; their counts) of the known ``items[lo:hi]``."""
    seg = items[lo:hi][::-1]
    seg = seg[seg >= 0]
    uniq, first, counts = np.unique(seg, return_index=True, return_counts=True)
    order = np.argsort(first, kind="stable")[:n]
    return uniq[order], counts[order]


def prepend_recent(
    before: tuple[np.ndarray, np.ndarray], items: np.ndarray, lo: int, hi: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``distinct_recent`` of ``items[..:hi]`` from ``before`` (that of the plays before ``lo``) and the plays
    ``items[lo:hi]``: their distinct tracks first, counts summed, at most ``n``."""
    if hi <= lo:
        return before[0][:n], before[1][:n]
    new, new_counts = distinct_recent(items, lo, hi, n)
    if not len(new):
        return before[0][:n], before[1][:n]
    old, old_counts = before
    dup = np.isin(old, new)
    if dup.any():
        new_counts = new_counts.copy()
        at = {int(t): i for i, t in enumerate(new.tolist())}
        for t, c in zip(old[dup].tolist(), old_counts[dup].tolist(), strict=True):
            new_counts[at[t]] += c
    return np.concatenate([new, old[~dup]])[:n], np.concatenate([new_counts, old_counts[~dup]])[:n]


def listener_history(
    items: np.ndarray,
    skips: np.ndarray,
    start: int,
    r: int,
    n: int,
    session_start: int,
    window: int = HISTORY_WINDOW,
    recent: tuple[np.ndarray, np.ndarray] | None = None,
) -> ListenerHistory:
    """The history before row ``r`` of one user whose rows start at ``start`` (``items`` vocabulary index, -1
    unknown; ``skips`` bool) and whose current session starts at row ``session_start``: at most ``n``
    distinct tracks of the ``window`` plays before the session and of the session's plays before ``r``
    (the session's first: the session state keeps only its last tracks; ``recent``: the pair of all the plays
    before ``r`` as ``prepend_recent`` gives it, when the caller keeps it), the skip totals of all
    earlier plays and of the session so far, and what followed the session's last known track in the window."""
    s0 = max(start, session_start)
    lo = max(start, s0 - window)
    if recent is not None:
        tracks, counts = recent[0][:n], recent[1][:n]
    else:
        tracks, counts = prepend_recent(distinct_recent(items, lo, s0, n), items, s0, r, n)
    follows, weights = np.zeros(0, np.int64), np.zeros(0, np.float64)
    session = items[s0:r]
    session = session[session >= 0]
    if len(session):
        chrono = items[lo:s0]
        at = np.flatnonzero(chrono == session[-1])  # earlier occurrences of the session's last known track
        if len(at):
            pos = np.concatenate([at + d for d in (1, 2, 3)])
            w = np.repeat([1.0, 0.5, 1.0 / 3.0], len(at))
            ok = pos < len(chrono)
            tr = chrono[pos[ok]]
            keep = tr >= 0
            follows, inv = np.unique(tr[keep], return_inverse=True)
            weights = np.bincount(inv, weights=w[ok][keep], minlength=len(follows))
    return ListenerHistory(
        tracks, counts, r - start, int(skips[start:r].sum()), follows, weights,
        bool(r > start and skips[r - 1]), r - s0, int(skips[s0:r].sum()),
    )  # fmt: skip


@dataclass(frozen=True, eq=False)
class TrackStats:
    """What the bundle knows of every track: co-occurrence neighbours and training statistics."""

    neighbour_idx: np.ndarray  # int32 [N, M], -1 padding, best first
    neighbour_val: np.ndarray  # float32 [N, M], 0 padding
    popularity: np.ndarray  # float32 [N] log1p(training plays) / log1p(max)
    skip_rate: np.ndarray  # float32 [N] smoothed training skip rate
    skip_prior: float  # the training plays' skip rate

    def __len__(self) -> int:
        return int(self.popularity.shape[0])


def _top(score: np.ndarray, n: int) -> np.ndarray:
    """The places of the ``n`` largest of ``score`` [T], largest first, ties in place order (a stable sort's)."""
    if len(score) <= n:
        return np.argsort(-score, kind="stable")
    cut = np.partition(score, len(score) - n)[len(score) - n]  # the n-th largest value
    at = np.flatnonzero(score >= cut)  # all of the n largest, and any ties of the n-th beyond them
    return at[np.argsort(-score[at], kind="stable")][:n]


def _session_weights(recent: Sequence[int], n: int, decay: str) -> tuple[np.ndarray, np.ndarray]:
    """(tracks int64 [<= n] most recent first, weights float64) of the session's last ``n`` tracks."""
    tracks = np.asarray(recent[::-1][:n], dtype=np.int64)
    steps = np.arange(1, len(tracks) + 1, dtype=np.float64)
    if decay == "harmonic":
        w = 1.0 / steps
    else:  # linear, most recent 1 (as V-SKNN weighs the current session)
        w = (n + 1 - steps) / n
    return tracks, w


# The features that describe the track itself: what an unknown track (index < 0) does not have.
TRACK_FEATURES: Final = tuple(
    n for n in CANDIDATE_FEATURES if n.startswith(("session_", "cooc_")) or n in (
        "history_present", "history_recency", "history_count", "history_follows", "popularity", "track_skip_rate",
    ) and n != "history_session_skip_rate"
)  # fmt: skip


def as_unknown(feats: np.ndarray, skip_prior: float) -> np.ndarray:
    """``feats`` [..., F] with the track's own evidence replaced by what an unknown track has (0, and the
    prior skip rate); the user-level features kept."""
    out = feats.copy()
    for name in TRACK_FEATURES:
        out[..., _F[name]] = skip_prior if name == "track_skip_rate" else 0.0
    return out


class FeatureBuilder:
    """Computes ``CANDIDATE_FEATURES`` for candidate lists; holds the bundle's ``TrackStats``."""

    def __init__(self, stats: TrackStats) -> None:
        self.stats = stats
        self.n = len(stats)

    def _cooc(self, tracks: np.ndarray, weights: np.ndarray, scratch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scatter the weighted neighbour rows of ``tracks`` into ``scratch`` [N]; return the touched keys."""
        idx = self.stats.neighbour_idx[tracks]  # [L, M]
        val = self.stats.neighbour_val[tracks] * weights[:, None]
        ok = idx >= 0
        keys, vals = idx[ok].astype(np.int64), val[ok]
        np.add.at(scratch, keys, vals)
        return keys, vals

    def session_neighbours(self, state: SessionState, n: int) -> list[int]:
        """Up to ``n`` tracks by the session-kNN-like score (co-occurrence with the session's last
        ``SESSION_WINDOW`` tracks, linearly decayed), best first; the session's own tracks excluded."""
        if n <= 0 or not state.recent:
            return []
        tracks, w = _session_weights(state.recent, SESSION_WINDOW, "linear")
        idx = self.stats.neighbour_idx[tracks].ravel()
        val = (self.stats.neighbour_val[tracks] * w[:, None]).ravel()
        ok = idx >= 0
        if not ok.any():
            return []
        keys, inv = np.unique(idx[ok], return_inverse=True)
        score = np.bincount(inv, weights=val[ok], minlength=len(keys)).astype(np.float64)
        mine = set(state.recent)
        top = _top(score, n + len(mine))  # best first, ties by index (keys are increasing): deterministic
        return [t for t in keys[top].tolist() if t not in mine][:n]

    def build(
        self,
        states: Sequence[SessionState],
        idx: np.ndarray,  # int64 [B, K]
        histories: Sequence[Sequence[int] | None] | None = None,
    ) -> np.ndarray:  # float32 [B, K, F]
        """The features of every candidate ``idx[b, k]`` for user ``b`` (an index < 0: a track outside the
        catalog, ``as_unknown``); ``histories[b]`` a ``ListenerHistory`` (or a plain sequence of tracks, most
        recent first: counts 1, skip totals unknown) or None."""
        unknown = idx < 0
        if unknown.any():
            out = self.build(states, np.maximum(idx, 0), histories)
            out[unknown] = as_unknown(out[unknown], self.stats.skip_prior)
            return out
        b_count, k = idx.shape
        out = np.zeros((b_count, k, N_CANDIDATE_FEATURES), np.float32)
        st = self.stats
        safe = np.clip(idx, 0, self.n - 1)
        out[..., _F["popularity"]] = st.popularity[safe]
        out[..., _F["track_skip_rate"]] = st.skip_rate[safe]
        out[..., _F["user_skip_rate"]] = st.skip_prior
        scratch = np.zeros(self.n, np.float64)
        log_window = np.log1p(HISTORY_WINDOW)
        for b, state in enumerate(states):
            cand = idx[b]
            f = out[b]
            if state.recent:
                recent = np.asarray(state.recent, np.int64)
                outcomes = np.asarray(state.outcomes, np.int64)
                match = cand[:, None] == recent[None, :]  # [K, R]
                present = match.any(axis=1)
                if present.any():
                    last = len(recent) - 1 - np.argmax(match[:, ::-1], axis=1)  # last occurrence
                    skipped = outcomes[last] == SKIPPED
                    f[:, _F["session_played"]] = present & ~skipped
                    f[:, _F["session_skipped"]] = present & skipped
                    f[:, _F["session_recency"]] = np.where(present, 1.0 / (len(recent) - last), 0.0)
                    f[:, _F["session_count"]] = np.log1p(match.sum(axis=1)) / 2.0
                for name, n, decay in (
                    ("cooc_last", 1, "harmonic"),
                    ("cooc_recent", 3, "harmonic"),
                    ("cooc_session", SESSION_WINDOW, "linear"),
                ):
                    tracks, w = _session_weights(state.recent, n, decay)
                    keys, _ = self._cooc(tracks, w, scratch)
                    f[:, _F[name]] = np.log1p(COOC_SCALE * scratch[cand])
                    scratch[keys] = 0.0
                for name, rel in (("cooc_last", "cooc_last_rel"), ("cooc_session", "cooc_session_rel")):
                    top = float(f[:, _F[name]].max())
                    if top > 0:
                        f[:, _F[rel]] = f[:, _F[name]] / top
            hist = histories[b] if histories is not None else None
            if hist is None:
                continue
            f[:, _F["history_known"]] = 1.0
            if isinstance(hist, ListenerHistory):
                tracks, counts = hist.tracks, hist.counts
                prior = st.skip_prior
                f[:, _F["user_skip_rate"]] = (hist.skips + SKIP_PRIOR_WEIGHT * prior) / (hist.plays + SKIP_PRIOR_WEIGHT)
                f[:, _F["history_last_skip"]] = float(hist.last_skip)
                if hist.session_plays:
                    f[:, _F["history_session_skip_rate"]] = hist.session_skips / hist.session_plays
                if len(hist.follows):
                    scratch[hist.follows] = hist.follow_weights
                    f[:, _F["history_follows"]] = np.log1p(scratch[cand])
                    scratch[hist.follows] = 0.0
            else:
                tracks = np.asarray(list(hist), np.int64)
                counts = np.ones(len(tracks), np.int64)
            if len(tracks):
                scratch[tracks] = np.arange(1, len(tracks) + 1)
                rank = scratch[cand]
                scratch[tracks] = counts
                count = scratch[cand]
                scratch[tracks] = 0.0
                has = rank > 0
                f[:, _F["history_present"]] = has
                f[:, _F["history_recency"]] = np.where(has, 1.0 - np.log1p(np.maximum(rank - 1, 0)) / log_window, 0.0)
                f[:, _F["history_count"]] = np.log1p(count) / 4.0
        return out
