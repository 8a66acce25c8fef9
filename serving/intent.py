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
  mood moves on with probability ``switch`` to *another* genre, in the prior's proportions (from g to h != g with
  ``prior_h / (1 - prior_g)``): a session deep in one genre keeps the taste's next genre ready. So after a run of
  plays one skip makes it an even call with the taste's next genre and two are a switch, a play after a skip takes
  the session to that genre, a skipped genre stays contradicted until the switches bring it back, and when the
  session has contradicted every genre the taste knows, the others (at ``floor``) hold most of the belief:
  exploration toward genres the session has not tried.
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

from streams.session import LIKED, SKIPPED, SessionState, state_rows


@dataclass(frozen=True)
class IntentParams:
    """The filter's constants (see the module docstring)."""

    skip_in: float = 0.1  # P(skip | the track is in the session's current genre)
    skip_out: float = 0.85  # P(skip | the track is in another genre)
    # A like is explicit: P(like | another genre) relative to a like in the current genre. Small, so that one like
    # in a new genre moves the session there (every like must change what comes next).
    like_out: float = 0.001
    switch: float = 0.1  # per event: the chance that the mood moved on to another genre
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
        self._member_items = [np.ascontiguousarray(self._items[m]) for m in self._members]  # [n_g, D] per genre
        self._slot = np.zeros(len(self.genre), np.int64)  # [N]: each track's place in its genre's members
        for members in self._members:
            self._slot[members] = np.arange(len(members))

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
            prior = self.prior(state_rows(states, "taste")) if states else np.zeros((0, self.n_genres))
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
        # The likelihood of each event: the event's genre gets ``inside``, every other genre ``outside``; a column
        # where a session has no event leaves its belief as it is (likelihood 1, no switch).
        rows = np.arange(len(states))
        inside = np.where(skipped, p.skip_in, 1.0 - p.skip_in)  # [B, W]
        outside = np.where(skipped, p.skip_out, np.where(liked, p.like_out * (1.0 - p.skip_in), 1.0 - p.skip_out))
        absent = genre < 0
        inside[absent] = outside[absent] = 1.0
        switch = np.where(absent, 0.0, p.switch)[:, :, None]  # [B, W, 1]
        rest = 1.0 / np.maximum(1.0 - prior, 1e-12)  # [B, G]
        belief = prior.copy()
        for j in range(width):
            g = np.maximum(genre[:, j], 0)
            post = belief * outside[:, j, None]
            post[rows, g] = belief[rows, g] * inside[:, j]
            post /= post.sum(axis=1, keepdims=True)
            # The mood moves on with probability ``switch``, to another genre, in the prior's proportions: from g to
            # h != g with prior_h / (1 - prior_g). Mass arriving at h: prior_h * (S - post_h / (1 - prior_h)), with
            # S = sum_g post_g / (1 - prior_g).
            spread = post * rest
            moved = prior * (spread.sum(axis=1, keepdims=True) - spread)
            belief = post + switch[:, j] * (moved - post)
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
        m = min(m, len(self._items))
        top = belief.argmax(axis=1)  # [B]
        q = np.asarray(queries, dtype=np.float32)
        out = np.full((len(q), m), -1, np.int64)
        ex = np.maximum(exclude, 0)
        for g in np.unique(top):  # only the chosen genre's tracks are scored: users grouped by genre
            users, tracks = np.flatnonzero(top == g), self._members[g]
            sims = q[users] @ self._member_items[g].T  # [U, n_g]
            hit = (exclude[users] >= 0) & (self.genre[ex[users]] == g)  # [U, E]: excluded tracks of this genre
            if hit.any():
                rows = np.broadcast_to(np.arange(len(users))[:, None], hit.shape)
                sims[rows[hit], self._slot[ex[users][hit]]] = -np.inf
            k = min(m, len(tracks))
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # [U, k] unordered
            part_sims = np.take_along_axis(sims, part, axis=1)
            order = np.argsort(-part_sims, axis=1, kind="stable")
            best = tracks[np.take_along_axis(part, order, axis=1)]
            best[~np.isfinite(np.take_along_axis(part_sims, order, axis=1))] = -1
            out[users, :k] = best
        return out
