"""Rescoring: retrieve candidates for a batch of users, score them with the session model, rank.

Pure apart from the injected scorer: states in, rankings out. One retrieval and one model call per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from serving.candidates import CandidateSource
from serving.diversity import Preferences, rerank, seed_for
from serving.explain import (
    KIND_EXPLORED,
    KIND_PINNED,
    KIND_RANKED,
    KIND_SESSIONS,
    POPULAR,
    REASON_CODES,
    SESSION_FIT,
    Explainer,
    Explanations,
)
from serving.explain import Scorer as Scores
from serving.intent import SessionIntent
from serving.retrieval import Retriever
from serving.rules import ActiveRules, place_pins
from serving.separation import demote_recent_artists
from serving.session_blend import SessionNeighbours, alternate
from streams.records import Reason, Recommendations, RecommendedTrack, rounded
from streams.session import SessionState, context_matrix, query_vector, query_vectors, state_rows

log = logging.getLogger(__name__)


class Scorer(Scores, Protocol):
    """The session model (``serving.scorer.OnnxScorer`` in production): ``Scores.score`` plus its labels."""

    provider: str
    model_version: str


@dataclass(frozen=True)
class Ranking:
    """Ranked track indices (best first) and their scores for one user. ``fallback``: not model-scored.

    ``scores``: the ranking's scores (the model's plus the session-intent term, any artist-separation offset and
    editorial boost; ``serving.intent``); ``reasons``: why each track is there (from the model's own scores).
    """

    indices: np.ndarray
    scores: np.ndarray
    fallback: bool = False
    reasons: Explanations | None = None


class Rescorer:
    """Turns session states into rankings: retrieval of ``n_candidates``, model scoring, top ``n_recs``."""

    def __init__(
        self,
        embeddings: np.ndarray,
        retriever: Retriever,
        scorer: Scorer,
        n_candidates: int = 200,
        n_recs: int = 20,
        candidates: CandidateSource | None = None,
        explainer: Explainer | None = None,
        artists: np.ndarray | None = None,
        intent: SessionIntent | None = None,
        neighbours: SessionNeighbours | None = None,
    ) -> None:
        self._explainer = explainer
        # Session-kNN over the bundle's training sessions (``serving.session_blend``): its tracks alternate with
        # the model's in the first ``neighbours.n`` places of a plain list (no rules, no knob). None: not used.
        self._neighbours = neighbours
        # Which genre the session is in now (``serving.intent``): its most likely genre's tracks join the
        # candidates and the log-belief of each candidate's genre joins the ranking score. None: not used.
        self._intent = intent
        # int [N] artist code per track (``serving.separation.artist_codes``): the session's recent artists are
        # ranked after the other candidates. None: no artist separation.
        self._artists = artists
        self._items = embeddings
        self._retriever = retriever
        # Which tracks get rescored; the default is plain retrieval with the session's recent tracks excluded.
        self._candidates = candidates or CandidateSource(embeddings, retriever)
        self._scorer = scorer
        self.n_candidates = n_candidates
        self.n_recs = n_recs

    def rank(
        self,
        states: Sequence[SessionState],
        now_ms: Sequence[int],
        histories: Sequence[Sequence[int] | None] | None = None,
        *,
        prefs: Sequence[Preferences] | None = None,
        rules: ActiveRules | None = None,
        users: Sequence[str] | None = None,
        sources: Sequence[SessionState] | None = None,
    ) -> list[Ranking]:
        """Rank for every state; ``now_ms[i]`` is the time the ranking is for (drives time-of-day context).

        ``histories[i]``: the listener's earlier track indices, most recent first, for history candidates.
        ``prefs[i]``: the user's exploration/diversity knob (default: none); ``rules``: editorial rules in force;
        ``users[i]``: the user id, which seeds the exploratory picks (default: the session id); ``sources[i]``: the
        state before a stage changed its vectors for ranking (a prior, a steer), for exact explanations."""
        if not states:
            return []
        pos, neg, taste = (state_rows(states, f) for f in ("pos", "neg", "taste"))  # [B, D] each
        queries = query_vectors(pos, neg, taste)  # [B, D]
        idx, sims = self._candidates.generate(states, queries, self.n_candidates, histories)  # [B, K]
        if rules is not None and rules.pins:  # pinned tracks are scored too, as extra columns
            pinned = np.asarray([i for _, i in rules.pins], dtype=idx.dtype)
            idx = np.concatenate([idx, np.broadcast_to(pinned, (len(states), len(pinned)))], axis=1)
            sims = np.concatenate([sims, np.zeros((len(states), len(pinned)), sims.dtype)], axis=1)
        bias = None
        if self._intent is not None:
            idx, sims, bias = self._intent.extend(states, queries, idx, sims)
        try:
            ctx, cands = context_matrix(states, now_ms), self._items[idx]
            builder = getattr(self._scorer, "features", None)  # a signature-2 model: per-candidate evidence
            if builder is not None:
                scores = self._scorer.score(pos, neg, taste, ctx, cands, builder.build(states, idx, histories))
            else:
                scores = self._scorer.score(pos, neg, taste, ctx, cands)  # [B, K]
            fallback = False
        except Exception:  # noqa: BLE001 - a model failure must not stop recommendations
            log.exception("session model failed; ranking by retrieval similarity instead")
            scores, fallback = sims, True
        order = scores if bias is None else scores + bias
        if self._artists is not None:
            order = demote_recent_artists(states, idx, order, self._artists)
        return self._select(states, now_ms, idx, order, fallback, prefs, rules, users, sources, model=scores)

    def rank_fallback(self, states: Sequence[SessionState], rules: ActiveRules | None = None) -> list[Ranking]:
        """The cheap ranking: retrieval similarity only, no model call (editorial blocks and pins still hold)."""
        if not states:
            return []
        queries = np.stack([query_vector(s) for s in states])
        if rules is None or rules.empty:
            idx, sims = self._retriever.search(queries, [set(s.recent) for s in states], self.n_recs)
            return [Ranking(idx[b], sims[b], True, self._uniform(len(idx[b]), True)) for b in range(len(states))]
        idx, sims = self._retriever.search(queries, [set(s.recent) for s in states], self.n_candidates)
        if rules.pins:
            pinned = np.asarray([i for _, i in rules.pins], dtype=idx.dtype)
            idx = np.concatenate([idx, np.broadcast_to(pinned, (len(states), len(pinned)))], axis=1)
            sims = np.concatenate([sims, np.zeros((len(states), len(pinned)), sims.dtype)], axis=1)
        no_boost = ActiveRules(rules.blocked, np.zeros_like(rules.boost), rules.pins, rules.valid_until_ms, rules.count)
        return self._select(states, [s.last_ts_ms for s in states], idx, sims, True, None, no_boost, None)

    def _uniform(self, n: int, fallback: bool, kinds: np.ndarray | None = None) -> Explanations | None:
        if self._explainer is None:
            return None
        return Explanations.uniform(n, SESSION_FIT, kinds)

    def _select(
        self,
        states: Sequence[SessionState],
        now_ms: Sequence[int],
        idx: np.ndarray,  # int64 [B, K]
        scores: np.ndarray,  # float32 [B, K]
        fallback: bool,
        prefs: Sequence[Preferences] | None,
        rules: ActiveRules | None,
        users: Sequence[str] | None,
        sources: Sequence[SessionState] | None = None,
        model: np.ndarray | None = None,  # float32 [B, K] the model's own scores, when ``scores`` add more
    ) -> list[Ranking]:
        """The top ``n_recs`` per user by ``scores``: blocks and boosts, then the knob (MMR, exploratory picks),
        then pins. Explanations work on ``model`` (default ``scores``)."""
        model = scores if model is None else model
        n = self.n_recs
        plain = (rules is None or rules.empty) and (prefs is None or all(p.neutral for p in prefs))
        if plain:  # the plain score order, vectorised: exactly the ranking without rules and knob
            order = np.argsort(-scores, axis=1, kind="stable")[:, : min(n, idx.shape[1])]  # [B, n]
            ranked_idx = np.take_along_axis(idx, order, axis=1)
            ranked_scores = np.take_along_axis(scores, order, axis=1)
            ranked_model = ranked_scores if model is scores else np.take_along_axis(model, order, axis=1)
            picks = [ranked_idx[b] for b in range(len(states))]
            finals = [ranked_scores[b] for b in range(len(states))]
            base = [ranked_model[b] for b in range(len(states))]
            boosts = [np.zeros(len(p), np.float32) for p in picks]
            kinds = [np.full(len(p), KIND_RANKED, np.int8) for p in picks]
            if self._neighbours is not None and not fallback:
                picks, finals, base, kinds = self._blend(states, idx, model, picks, finals, base, kinds)
                boosts = [np.zeros(len(p), np.float32) for p in picks]
        else:
            picks, finals, base, boosts, kinds = [], [], [], [], []
            for b, state in enumerate(states):
                pref = prefs[b] if prefs is not None else Preferences()
                user = users[b] if users is not None else state.session_id
                p, f, m, bo, k = self._select_one(state, now_ms[b], idx[b], scores[b], pref, rules, user, model[b])
                picks.append(p)
                finals.append(f)
                base.append(m)
                boosts.append(bo)
                kinds.append(k)
        if self._explainer is None or fallback:
            reasons: list[Explanations | None] = [
                self._uniform(len(p), fallback, k) for p, k in zip(picks, kinds, strict=True)
            ]
        else:
            try:
                reasons = list(self._explainer.explain(states, now_ms, picks, base, boosts, kinds, sources))
            except Exception:  # noqa: BLE001 - explanations must never cost the recommendations
                log.exception("explaining the rankings failed; serving them without reasons")
                reasons = [None] * len(states)
        return [Ranking(picks[b], finals[b], fallback, reasons[b]) for b in range(len(states))]

    def _blend(
        self,
        states: Sequence[SessionState],
        idx: np.ndarray,  # int64 [B, K] the candidates
        model: np.ndarray,  # float32 [B, K] the model's scores
        picks: list[np.ndarray],
        finals: list[np.ndarray],
        base: list[np.ndarray],
        kinds: list[np.ndarray],
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """The model's lists with session-kNN's tracks alternating in their first ``neighbours.n`` places (the
        model's first), then the model's remaining picks, as long as before. A session-kNN track keeps the model's
        score where it was a candidate, else the lowest score of the model's list (the list is no longer in score
        order); its kind is ``KIND_SESSIONS``."""
        assert self._neighbours is not None
        knn = self._neighbours.lists(states)
        width = self._neighbours.n
        out_p, out_f, out_b, out_k = [], [], [], []
        for b in range(len(states)):
            p, f, m = picks[b], finals[b], base[b]
            head, from_knn = alternate(p[:width], knn[b], min(width, len(p)))
            rest = ~np.isin(p, head)  # the model's picks not placed in the head, in order
            # The head's scores: from the model's list where it has the track, else from the candidates, else the floor.
            in_p, in_cand = p[None, :] == head[:, None], idx[b][None, :] == head[:, None]  # [h, n], [h, K]
            floor = np.float32(f.min()) if len(f) else np.float32(0.0)
            cand_score = np.where(in_cand.any(axis=1), model[b][in_cand.argmax(axis=1)], floor)
            head_f = np.where(in_p.any(axis=1), f[in_p.argmax(axis=1)], cand_score)
            head_m = np.where(in_p.any(axis=1), m[in_p.argmax(axis=1)], cand_score)
            kind = np.concatenate([np.where(from_knn, KIND_SESSIONS, KIND_RANKED), np.full(rest.sum(), KIND_RANKED)])
            out_p.append(np.concatenate([head, p[rest]])[: len(p)])
            out_f.append(np.concatenate([head_f, f[rest]])[: len(p)].astype(np.float32))
            out_b.append(np.concatenate([head_m, m[rest]])[: len(p)].astype(np.float32))
            out_k.append(kind[: len(p)].astype(np.int8))
        return out_p, out_f, out_b, out_k

    def _select_one(
        self,
        state: SessionState,
        now_ms: int,
        cand: np.ndarray,  # int64 [K]
        model: np.ndarray,  # float32 [K]
        pref: Preferences,
        rules: ActiveRules | None,
        user: str,
        own: np.ndarray | None = None,  # float32 [K] the model's own scores (default ``model``)
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(track indices, final scores, model scores, boosts, kinds) of one user's list; ``model`` orders it."""
        own = model if own is None else own
        boost = rules.boost[cand] if rules is not None else np.zeros(len(cand), np.float32)
        adjusted = (model + boost).astype(np.float32)
        pins = rules.pins if rules is not None else ()
        if rules is not None:
            adjusted[rules.blocked[cand]] = -np.inf  # before the top-n is chosen: the list stays full
        if pins:  # pinned tracks are placed after ranking, never ranked as well
            adjusted[np.isin(cand, [i for _, i in pins])] = -np.inf
        rng = np.random.default_rng(seed_for(user, now_ms))
        chosen, explored = rerank(adjusted, self._items[cand], self.n_recs, pref, rng)
        column = {int(cand[c]): int(c) for c in chosen}
        kind_of = {int(cand[c]): KIND_EXPLORED if e else KIND_RANKED for c, e in zip(chosen, explored, strict=True)}
        tracks, pinned = place_pins([int(cand[c]) for c in chosen], pins, self.n_recs, set(state.recent))
        for t in pinned:
            column[t] = int(np.flatnonzero(cand == t)[0])
            kind_of[t] = KIND_PINNED
        cols = np.asarray([column[t] for t in tracks], dtype=np.int64)
        kinds = np.asarray([kind_of[t] for t in tracks], dtype=np.int8)
        return (
            np.asarray(tracks, dtype=np.int64),
            (model[cols] + boost[cols]).astype(np.float32),
            own[cols].astype(np.float32),
            boost[cols].astype(np.float32),
            kinds,
        )


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
    tracks = [track_ids[i] for i in ranking.indices.tolist()]
    scores = rounded(ranking.scores, 5)
    why = ranking.reasons
    if why is None:
        ranks = range(1, len(tracks) + 1)
        items = [RecommendedTrack(t, s, r, None) for r, t, s in zip(ranks, tracks, scores, strict=True)]
    else:  # plain Python values and positional fields: this runs for every ranked user
        cited = [track_ids[t] if t >= 0 else "" for t in why.cited.tolist()]
        codes = [REASON_CODES[c] for c in why.codes.tolist()]
        items = [
            RecommendedTrack(t, s, r, Reason(c, ct, x))
            for r, t, s, c, ct, x in zip(
                range(1, len(tracks) + 1), tracks, scores, codes, cited, rounded(why.contribution, 4), strict=True
            )
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


def popularity_ranking(popularity: np.ndarray, n: int, rules: ActiveRules | None = None) -> Ranking:
    """The cold-start ranking: the ``n`` most popular tracks (not blocked; pins placed), reason ``popular``."""
    if rules is None or rules.empty:
        top = np.argsort(-popularity, kind="stable")[:n]
        return Ranking(top, popularity[top].astype(np.float32), True, Explanations.uniform(len(top), POPULAR))
    masked = np.where(rules.blocked, -np.inf, popularity)
    masked[[i for _, i in rules.pins]] = -np.inf
    order = [int(i) for i in np.argsort(-masked, kind="stable")[:n] if np.isfinite(masked[i])]
    tracks, pinned = place_pins(order, rules.pins, n, set())
    kinds = np.asarray([KIND_PINNED if t in pinned else KIND_RANKED for t in tracks], np.int8)
    top = np.asarray(tracks, dtype=np.int64)
    return Ranking(top, popularity[top].astype(np.float32), True, Explanations.uniform(len(top), POPULAR, kinds))
