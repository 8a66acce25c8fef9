"""Rescoring: retrieve candidates for a batch of users, score them with the session model, rank.

Pure apart from the injected scorer: states in, rankings out. One retrieval and one model call per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from serving.retrieval import Retriever
from streams.records import Recommendations, RecommendedTrack
from streams.session import SessionState, context_features, query_vector

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """The session model (``serving.scorer.OnnxScorer`` in production)."""

    provider: str
    model_version: str

    def score(
        self,
        session_pos: np.ndarray,
        session_neg: np.ndarray,
        taste: np.ndarray,
        context: np.ndarray,
        candidates: np.ndarray,
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class Ranking:
    """Ranked track indices (best first) and their scores for one user. ``fallback``: not model-scored."""

    indices: np.ndarray
    scores: np.ndarray
    fallback: bool = False


class Rescorer:
    """Turns session states into rankings: retrieval of ``n_candidates``, model scoring, top ``n_recs``."""

    def __init__(
        self,
        embeddings: np.ndarray,
        retriever: Retriever,
        scorer: Scorer,
        n_candidates: int = 200,
        n_recs: int = 20,
    ) -> None:
        self._items = embeddings
        self._retriever = retriever
        self._scorer = scorer
        self.n_candidates = n_candidates
        self.n_recs = n_recs

    def rank(self, states: Sequence[SessionState], now_ms: Sequence[int]) -> list[Ranking]:
        """Rank for every state; ``now_ms[i]`` is the time the ranking is for (drives time-of-day context)."""
        if not states:
            return []
        queries = np.stack([query_vector(s) for s in states])  # [B, D]
        exclude = [set(s.recent) for s in states]
        idx, sims = self._retriever.search(queries, exclude, self.n_candidates)  # [B, K]
        try:
            scores = self._scorer.score(
                np.stack([s.pos for s in states]),
                np.stack([s.neg for s in states]),
                np.stack([s.taste for s in states]),
                np.stack([context_features(s, t) for s, t in zip(states, now_ms, strict=True)]),
                self._items[idx],  # [B, K, D]
            )
            fallback = False
        except Exception:  # noqa: BLE001 - a model failure must not stop recommendations
            log.exception("session model failed; ranking by retrieval similarity instead")
            scores, fallback = sims, True
        top = min(self.n_recs, idx.shape[1])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top]  # [B, n]
        ranked_idx = np.take_along_axis(idx, order, axis=1)
        ranked_scores = np.take_along_axis(scores, order, axis=1)
        return [Ranking(ranked_idx[b], ranked_scores[b], fallback) for b in range(len(states))]

    def rank_fallback(self, states: Sequence[SessionState]) -> list[Ranking]:
        """The cheap ranking: retrieval similarity only, no model call."""
        if not states:
            return []
        queries = np.stack([query_vector(s) for s in states])
        idx, sims = self._retriever.search(queries, [set(s.recent) for s in states], self.n_recs)
        return [Ranking(idx[b], sims[b], True) for b in range(len(states))]


def to_record(
    user_id: str,
    ranking: Ranking,
    track_ids: Sequence[str],
    model_version: str,
    provider: str,
    *,
    generated_ms: int,
    session_id: str = "",
    event_id: str = "",
    event_ms: int = 0,
) -> Recommendations:
    """A ``Recommendations`` record for one user's ranking."""
    items = [
        RecommendedTrack(track_id=track_ids[int(i)], score=round(float(s), 5), rank=r + 1)
        for r, (i, s) in enumerate(zip(ranking.indices, ranking.scores, strict=True))
    ]
    return Recommendations(
        user_id=user_id,
        items=items,
        model_version=model_version,
        provider=provider,
        session_id=session_id,
        event_id=event_id,
        event_ms=event_ms,
        generated_ms=generated_ms,
        fallback=ranking.fallback,
    )


def popularity_ranking(popularity: np.ndarray, n: int) -> Ranking:
    """The cold-start ranking: the ``n`` most popular tracks."""
    top = np.argsort(-popularity, kind="stable")[:n]
    return Ranking(top, popularity[top].astype(np.float32), fallback=True)
