"""Session intent: which of the listener's genres the session is in now, followed through skips and plays.

The session vectors (``streams.session``) move toward what was played and away from what was skipped, but a
long run of plays builds up a context that takes three skips to undo, skips are forgotten after a few events
(so a genre skipped a moment ago comes back), and the long-term taste is one averaged vector in which the
genres of older sessions are barely visible. When a listener's mood moves to another genre, the session
vectors follow late or not at all. ``SessionIntent`` follows it as a belief over the catalog's genres:

* **prior** (``prior``): the long-term taste decomposed into genres: non-negative least squares of the taste
  vector on the genres' mean embeddings (``taste ~ sum_g w_g centroid_g``, ``w >= 0``), so that every genre the
  taste still holds, also a faded one from older sessions, gets its share; plus ``floor`` for every genre.
* **session** (``belief``): a two-outcome hidden-state filter over the session's events, oldest first. The listener
  is in one genre at a time; a track of that genre is kept (played or liked) with probability ``1 - skip_in``, a
  track of another genre is skipped with probability ``skip_out``; a like is explicit, so a like in another genre
  is ``like_out`` times as likely as one in the current genre (one like moves the session). After every event the
  belief relaxes toward the prior by ``switch`` (the chance that the mood moved on). So one skip after a run of
  plays is not yet a switch but two are, a play in another genre of the taste then takes over, a skipped genre
  stays contradicted until the prior brings it back, and when the session has contradicted every genre the taste
  knows, the others (at ``floor``) come next: exploration toward genres the session has not tried.
* **ranking** (``bias``): ``weight * log belief(genre of the candidate)`` is added to the model's score for
  the order (the model still decides within a genre; explanations keep citing the model's own score), and
  ``candidates`` adds the most likely genre's tracks nearest to the query, which retrieval may not reach.

Pure: states in, arrays out; nothing is stored (the session's recent tracks and outcomes are in the state).
Tracks without a genre share one region ("").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streams.session import LIKED, SKIPPED, SessionState


@dataclass(frozen=True)
class IntentParams:
    """The filter's constants (see the module docstring)."""

    skip_in: float = 0.1  # P(skip | the track is in the session's current genre)
    skip_out: float = 0.85  # P(skip | the track is in another genre)
    # A like is explicit: P(like | another genre) relative to a like in the current genre. Small, so that one like
    # in a new genre moves the session there (every like must change what comes next).
    like_out: float = 0.001
    switch: float = 0.06  # per event: how far the belief relaxes toward the long-term prior
    floor: float = 0.01  # prior mass every genre keeps (before normalising)
    weight: float = 3.0  # the log-belief's weight in the ranking score
    candidates: int = 50  # tracks of the most likely genre added to the candidates
    nnls_iterations: int = 100


class SessionIntent:
    """Genre beliefs for sessions, for one catalog (embeddings float32 [N, D], a genre name per track)."""

    def __init__(self, embeddings: np.ndarray, genre_of: Sequence[str], params: IntentParams = IntentParams()) -> None:
        if len(genre_of) != len(embeddings):
            raise ValueError(f"{len(genre_of)} genres for {len(embeddings)} tracks")
        names = sorted(set(genre_of))
        code = {g: i for i, g in enumerate(names)}
        self.params = params
        self.genres = tuple(names)
        self.genre = np.asarray([code[g] for g in genre_of], dtype=np.int64)  # [N]
        self._items = np.asarray(embeddings, dtype=np.float32)
        g = len(names)
        counts = np.bincount(self.genre, minlength=g).astype(np.float64)
        centroids = np.zeros((g, self._items.shape[1]))
        np.add.at(centroids, self.genre, self._items.astype(np.float64))
        self.centroids = centroids / np.maximum(counts, 1.0)[:, None]  # [G, D]
        self._gram = self.centroids @ self.centroids.T  # [G, G]
        self._members = [np.flatnonzero(self.genre == k) for k in range(g)]  # track indices per genre

    @property
    def n_genres(self) -> int:
        return len(self.genres)

    def prior(self, taste: np.ndarray) -> np.ndarray:
        """taste float32 [B, D] -> float64 [B, G], rows summing to 1: the taste's genre shares plus ``floor``.

        Non-negative least squares by multiplicative updates (``w <- w * (C t)+ / (C C^T w)``), batched; a zero
        taste gives the uniform prior."""
        p = self.params
        t = np.asarray(taste, dtype=np.float64)
        target = np.clip(t @ self.centroids.T, 1e-12, None)  # [B, G]
        w = np.full((len(t), self.n_genres), 1.0 / max(self.n_genres, 1))
        for _ in range(p.nnls_iterations):
            w = w * target / np.maximum(w @ self._gram, 1e-12)
        empty = ~(np.abs(t).sum(axis=1) > 0)
        w[empty] = 1.0
        share = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
        share = share + p.floor
        return share / share.sum(axis=1, keepdims=True)

    def belief(self, states: Sequence[SessionState], prior: np.ndarray | None = None) -> np.ndarray:
        """float64 [B, G], rows summing to 1: where each session is now, after its recent events (the current
        session's, oldest first: ``SessionState.recent`` / ``outcomes``)."""
        p = self.params
        if prior is None:
            prior = self.prior(np.stack([s.taste for s in states])) if states else np.zeros((0, self.n_genres))
        lengths = np.fromiter((len(s.recent) for s in states), np.int64, len(states))
        width = int(lengths.max()) if len(states) else 0
        genre = np.full((len(states), width), -1, np.int64)  # [B, W] right-aligned, -1 where no event
        skipped = np.zeros((len(states), width), bool)
        liked = np.zeros((len(states), width), bool)
        if width:
            filled = np.arange(width)[None, :] >= (width - lengths)[:, None]  # [B, W]
            tracks = np.fromiter((t for s in states for t in s.recent), np.int64, int(lengths.sum()))
            outcomes = np.fromiter((o for s in states for o in s.outcomes[-len(s.recent) :]), np.int64, len(tracks))
            genre[filled] = self.genre[tracks]
            skipped[filled] = outcomes == SKIPPED
            liked[filled] = outcomes == LIKED
        belief = prior.copy()
        cols = np.arange(self.n_genres)
        for j in range(width):
            g, sk, lk = genre[:, j], skipped[:, j], liked[:, j]
            present = g >= 0
            if not present.any():
                continue
            inside = np.where(sk, p.skip_in, 1.0 - p.skip_in)[:, None]  # [B, 1]
            outside = np.where(sk, p.skip_out, np.where(lk, p.like_out * (1.0 - p.skip_in), 1.0 - p.skip_out))[:, None]
            post = belief * np.where(cols[None, :] == g[:, None], inside, outside)
            post /= post.sum(axis=1, keepdims=True)
            post = (1.0 - p.switch) * post + p.switch * prior
            belief = np.where(present[:, None], post, belief)
        return belief

    def extend(
        self, states: Sequence[SessionState], queries: np.ndarray, idx: np.ndarray, sims: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Retrieval's candidates (idx int64 [B, K], query similarities sims float32 [B, K]) plus the most likely
        genre's (``candidates``, none of the session's recent tracks or of ``idx``): (idx [B, K + m], sims
        [B, K + m], ranking term float32 [B, K + m]); a padding column's term is -inf, so it is never ranked."""
        belief = self.belief(states)
        width = max((len(s.recent) for s in states), default=0)
        recent = np.full((len(states), width), -1, np.int64)
        for b, s in enumerate(states):
            recent[b, : len(s.recent)] = s.recent
        extra = self.candidates(belief, queries, np.concatenate([idx, recent], axis=1))  # [B, m], -1 pads
        valid = extra >= 0
        extra = np.where(valid, extra, 0)
        extra_sims = np.einsum("bkd,bd->bk", self._items[extra], np.asarray(queries, np.float32)).astype(np.float32)
        idx = np.concatenate([idx, extra], axis=1)
        sims = np.concatenate([sims, extra_sims], axis=1)
        bias = self.bias(belief, idx)
        bias[:, idx.shape[1] - extra.shape[1] :][~valid] = -np.inf
        return idx, sims, bias

    def bias(self, belief: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """float32 [B, K]: ``weight * log belief`` of each candidate's genre (candidates ``idx`` int [B, K])."""
        b = np.take_along_axis(belief, self.genre[idx], axis=1)
        return (self.params.weight * np.log(np.maximum(b, 1e-12))).astype(np.float32)

    def candidates(
        self, belief: np.ndarray, queries: np.ndarray, exclude: np.ndarray, m: int | None = None
    ) -> np.ndarray:
        """int64 [B, m]: per user the tracks of its most likely genre nearest to its query (best first), none in
        ``exclude[b]`` (int [B, E], -1 for none); -1 pads a row whose genre has fewer such tracks."""
        m = self.params.candidates if m is None else m
        if m <= 0 or not len(queries):
            return np.empty((len(queries), 0), np.int64)
        top = belief.argmax(axis=1)  # [B]
        sims = np.full((len(queries), len(self._items)), -np.inf, np.float32)  # [B, N]
        q = np.asarray(queries, dtype=np.float32)
        for g in np.unique(top):  # only the chosen genre's tracks are scored: users grouped by genre
            users, tracks = np.flatnonzero(top == g), self._members[g]
            sims[np.ix_(users, tracks)] = q[users] @ self._items[tracks].T
        if exclude.shape[1]:
            rows = np.broadcast_to(np.arange(len(sims))[:, None], exclude.shape)
            ok = exclude >= 0
            sims[rows[ok], exclude[ok]] = -np.inf
        m = min(m, sims.shape[1])
        part = np.argpartition(-sims, m - 1, axis=1)[:, :m]  # [B, m] unordered
        part_sims = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_sims, axis=1, kind="stable")
        out = np.take_along_axis(part, order, axis=1).astype(np.int64)
        out[~np.isfinite(np.take_along_axis(part_sims, order, axis=1))] = -1
        return out
