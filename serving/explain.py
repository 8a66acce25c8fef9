"""Why each track was recommended: reasons from the score's actual contributions, and their sentences.

For a user's final top-n, ``Explainer.explain`` removes, one at a time, each of the last ``events`` session
events from the state, exactly as if the session had been replayed without it (``without_event``: the decayed
sums, the long-term taste and the context counters), and also zeroes the long-term taste; all these variants
are scored in ONE extra model call of shape [sum over users of (R_b + 1), n, D]. An event's contribution to a
track is ``base score - score without the event``; the taste's is ``base - score with taste zeroed``; an
editorial boost contributes its weight. The reason cites the largest contribution:

* a liked or played event -> ``similar_to_liked`` / ``similar_to_played`` (the track is close to it),
* a skip -> ``avoids_skipped`` (removing the skip lowers the score: the track is helped by avoiding it),
* the taste -> ``long_term_taste``, a boost -> ``editorial_boost``;

tracks placed by a pin or the exploration step carry ``editorial_pin`` / ``exploration``; with no
contribution above ``min_contribution``, ``session_fit``. Faithful by construction and by test
(tests/unit/test_explain.py): removing the cited event lowers the cited track's score.

Stored compactly (code, cited track id, contribution; ``streams.records.Reason``); ``render`` makes the
sentence when the list is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final, Protocol

import numpy as np

from streams.records import Reason
from streams.session import LIKED, PLAYED, SKIPPED, Dynamics, SessionState, context_features

SIMILAR_TO_LIKED: Final = "similar_to_liked"
SIMILAR_TO_PLAYED: Final = "similar_to_played"
AVOIDS_SKIPPED: Final = "avoids_skipped"
LONG_TERM_TASTE: Final = "long_term_taste"
EXPLORATION: Final = "exploration"
EDITORIAL_PIN: Final = "editorial_pin"
EDITORIAL_BOOST: Final = "editorial_boost"
POPULAR: Final = "popular"
SESSION_FIT: Final = "session_fit"
# Stable order: a compact store may keep a code as its index here.
REASON_CODES: Final = (
    SIMILAR_TO_LIKED,
    SIMILAR_TO_PLAYED,
    AVOIDS_SKIPPED,
    LONG_TERM_TASTE,
    EXPLORATION,
    EDITORIAL_PIN,
    EDITORIAL_BOOST,
    POPULAR,
    SESSION_FIT,
)
_EVENT_CODE: Final = {LIKED: SIMILAR_TO_LIKED, PLAYED: SIMILAR_TO_PLAYED, SKIPPED: AVOIDS_SKIPPED}

TEMPLATES: Final = {
    SIMILAR_TO_LIKED: "Because you liked {track}.",
    SIMILAR_TO_PLAYED: "Because you listened to {track}.",
    AVOIDS_SKIPPED: "Steers away from the style of {track}, which you skipped.",
    LONG_TERM_TASTE: "A rediscovery from your long-term taste.",
    EXPLORATION: "Something new to explore.",
    EDITORIAL_PIN: "Featured by our editors.",
    EDITORIAL_BOOST: "Recommended by our editors.",
    POPULAR: "Popular with listeners right now.",
    SESSION_FIT: "Fits your session.",
}

# How far back the exact removal looks for the strength of plays (older events weigh decay^12 ~ 0.002).
FIT_WINDOW: Final = 12

# Per-track kinds the ranking step hands over.
KIND_RANKED: Final = 0
KIND_EXPLORED: Final = 1
KIND_PINNED: Final = 2


class Scorer(Protocol):
    def score(
        self,
        session_pos: np.ndarray,
        session_neg: np.ndarray,
        taste: np.ndarray,
        context: np.ndarray,
        candidates: np.ndarray,
    ) -> np.ndarray: ...


def render(reason: Reason, title: str = "") -> str:
    """The narrative sentence of a reason; ``title`` names the cited track (its id when not given)."""
    template = TEMPLATES.get(reason.code, TEMPLATES[SESSION_FIT])
    return template.format(track=title or reason.track_id or "a recent track")


def with_text(reason: Reason | None, title: str = "") -> Reason | None:
    """The reason with its sentence filled in (for answers; the stored form leaves it out)."""
    return None if reason is None else Reason(reason.code, reason.track_id, reason.contribution, render(reason, title))


@dataclass(frozen=True)
class Explanations:
    """Reasons for one ranked list: code index into ``REASON_CODES`` int8 [n], cited track index int64 [n]
    (-1: none), contribution float32 [n] (score units)."""

    codes: np.ndarray
    cited: np.ndarray
    contribution: np.ndarray

    @staticmethod
    def uniform(n: int, code: str, kinds: np.ndarray | None = None) -> Explanations:
        """Every track gets ``code``, except pinned and exploratory ones (by ``kinds``)."""
        codes = np.full(n, REASON_CODES.index(code), np.int8)
        if kinds is not None:
            codes[kinds == KIND_PINNED] = REASON_CODES.index(EDITORIAL_PIN)
            codes[kinds == KIND_EXPLORED] = REASON_CODES.index(EXPLORATION)
        return Explanations(codes, np.full(n, -1, np.int64), np.zeros(n, np.float32))

    def reasons(self, track_ids: Sequence[str]) -> list[Reason]:
        return [
            Reason(REASON_CODES[int(c)], track_ids[int(t)] if t >= 0 else "", round(float(x), 4))
            for c, t, x in zip(self.codes, self.cited, self.contribution, strict=True)
        ]


@dataclass(frozen=True)
class Removal:
    """A session without one of its events: the model's user inputs. pos/neg/taste float32 [D], context [8]."""

    pos: np.ndarray
    neg: np.ndarray
    taste: np.ndarray
    state: SessionState  # counters and last outcome as after the replay (vectors as above)


def play_strengths(state: SessionState, items: np.ndarray, dyn: Dynamics) -> np.ndarray:
    """The weight each event of the current session added to ``pos``, float64 [E] for ``state.recent``.

    Likes weigh ``like_weight`` and skips add nothing to ``pos``; a play's weight (how much of it was heard)
    is not stored, so it is recovered by least squares from ``pos``, which is exactly a sum of the session's
    items times decay^age times weight: exact while the session has at most D/2 plays, else fitted over the
    last ``FIT_WINDOW`` events (older ones weigh decay^12 ~ 0.002 and stay in the residual).
    """
    outcomes = np.asarray(state.outcomes, dtype=np.int64)
    e = len(outcomes)
    ages = np.arange(e - 1, -1, -1, dtype=np.float64)
    weights = np.where(outcomes == LIKED, dyn.like_weight, 0.0)
    plays = np.flatnonzero(outcomes == PLAYED)
    if len(plays) > items.shape[1] // 2:  # too many unknowns for the dimension: fit the recent ones only
        plays = np.flatnonzero((outcomes == PLAYED) & (ages < FIT_WINDOW))
    if len(plays):
        decays = dyn.decay**ages
        known = (weights * decays) @ items[list(state.recent)].astype(np.float64) if e else 0.0
        cols = items[[state.recent[j] for j in plays]].astype(np.float64).T * decays[plays]  # [D, P]
        sol, *_ = np.linalg.lstsq(cols, state.pos.astype(np.float64) - known, rcond=None)
        weights[plays] = np.clip(sol, 0.0, None)
    return weights


def without_event(state: SessionState, k: int, items: np.ndarray, dyn: Dynamics, weights: np.ndarray) -> Removal:
    """The state as if event ``k`` (index into ``state.recent``, current session) had never happened.

    ``weights``: from ``play_strengths``. Exact for the decayed sums (events before ``k`` lose one decay step),
    the taste (its affine updates are undone back to before ``k`` and redone without it) and the counters.
    """
    e = len(state.recent)
    d = dyn.decay
    outcomes = state.outcomes
    emb = items[list(state.recent)].astype(np.float64)  # [E, D]
    ages = np.arange(e - 1, -1, -1, dtype=np.float64)
    coef = d**ages  # [E]
    is_skip = np.asarray(outcomes) == SKIPPED
    pos_c = np.where(is_skip, 0.0, weights) * coef
    neg_c = np.where(is_skip, dyn.skip_weight, 0.0) * coef
    # Without event k, every event before it is one decay step younger; what the session's events do not
    # explain (events cut from ``recent``, the fit's error) is older still. Rebuilt from the coefficients,
    # so a part that was exactly zero in the replay (no positives left) stays exactly zero here.
    shift = np.where(np.arange(e) < k, 1.0 / d, 1.0)
    shift[k] = 0.0
    pos_after = _rebuild(state.pos, pos_c, shift, emb, d)
    neg_after = _rebuild(state.neg, neg_c, shift, emb, d)

    taste = state.taste.astype(np.float64)
    if outcomes[k] != SKIPPED:
        rates = [dyn.taste_rate * (2.0 if outcomes[j] == LIKED else weights[j]) for j in range(e)]
        t = taste
        for j in range(e - 1, k - 1, -1):  # undo the taste updates back to before event k
            if outcomes[j] != SKIPPED and rates[j] < 1.0:
                t = (t - rates[j] * emb[j]) / (1.0 - rates[j])
        if np.linalg.norm(t) < 1e-5 * np.linalg.norm(taste):  # no taste before the event: exactly none
            t = np.zeros_like(t)
        for j in range(k + 1, e):  # redo the later ones
            if outcomes[j] != SKIPPED:
                t = (1.0 - rates[j]) * t + rates[j] * emb[j]
        taste = t

    rest = outcomes[:k] + outcomes[k + 1 :]
    o = outcomes[k]
    after = replace(
        state,
        recent=state.recent[:k] + state.recent[k + 1 :],
        outcomes=rest,
        plays=state.plays - (o == PLAYED),
        skips=state.skips - (o == SKIPPED),
        likes=state.likes - (o == LIKED),
        events=max(0, state.events - 1),
        last_outcome=rest[-1] if rest else -1,
    )
    f32 = np.float32
    return Removal(pos_after.astype(f32), neg_after.astype(f32), taste.astype(f32), after)


def _rebuild(vector: np.ndarray, coef: np.ndarray, shift: np.ndarray, emb: np.ndarray, decay: float) -> np.ndarray:
    """``sum_j coef_j * shift_j * emb_j`` plus the unexplained residual aged one step (dropped below float32
    precision). vector float32 [D], coef/shift float64 [E], emb float64 [E, D] -> float64 [D]."""
    v = vector.astype(np.float64)
    residual = v - coef @ emb
    out = (coef * shift) @ emb
    if np.linalg.norm(residual) > 1e-5 * max(1.0, float(np.linalg.norm(v))):
        out = out + residual / decay
    return out


class Explainer:
    """Reasons for the final top-n of a batch with one extra model call.

    ``events``: how many of the most recent session events are candidates for citation (R); the call has
    ``sum_b (R_b + 1)`` rows of n candidates. ``min_contribution``: smaller contributions are not cited.
    """

    def __init__(
        self,
        scorer: Scorer,
        embeddings: np.ndarray,
        dynamics: Dynamics | None = None,
        events: int = 3,
        min_contribution: float = 1e-3,
    ) -> None:
        self._scorer = scorer
        self._items = embeddings
        self._dyn = dynamics or Dynamics()
        self.events = events
        self.min_contribution = min_contribution

    def explain(
        self,
        states: Sequence[SessionState],
        now_ms: Sequence[int],
        picks: Sequence[np.ndarray],
        base: Sequence[np.ndarray],
        boost: Sequence[np.ndarray],
        kinds: Sequence[np.ndarray],
    ) -> list[Explanations]:
        """Per user b: ``picks[b]`` track indices int64 [n], ``base[b]`` their model scores float32 [n],
        ``boost[b]`` their editorial boosts float32 [n], ``kinds[b]`` int8 [n] (``KIND_*``)."""
        rows_pos, rows_neg, rows_taste, rows_ctx, rows_cand = [], [], [], [], []
        plan: list[list[int]] = []  # per user: the cited-event indices of their rows (then one taste row)
        for state, now, idx in zip(states, now_ms, picks, strict=True):
            cand = self._items[idx]  # [n, D]
            ks = self._citable(state)
            if ks:
                weights = play_strengths(state, self._items, self._dyn)
                for k in ks:
                    r = without_event(state, k, self._items, self._dyn, weights)
                    rows_pos.append(r.pos)
                    rows_neg.append(r.neg)
                    rows_taste.append(r.taste)
                    rows_ctx.append(context_features(r.state, now))
                    rows_cand.append(cand)
            rows_pos.append(state.pos)
            rows_neg.append(state.neg)
            rows_taste.append(np.zeros_like(state.taste))
            rows_ctx.append(context_features(state, now))
            rows_cand.append(cand)
            plan.append(ks)
        if len({len(c) for c in rows_cand}) > 1:  # lists of different lengths: pad to one shape
            width = max(len(c) for c in rows_cand)
            rows_cand = [np.concatenate([c, np.zeros((width - len(c), c.shape[1]), c.dtype)]) for c in rows_cand]
        scores = self._scorer.score(
            np.stack(rows_pos), np.stack(rows_neg), np.stack(rows_taste), np.stack(rows_ctx), np.stack(rows_cand)
        )  # [rows, n]
        out, row = [], 0
        for state, idx, b, bo, kind, ks in zip(states, picks, base, boost, kinds, plan, strict=True):
            n = len(idx)
            contrib = b[None, :] - scores[row : row + len(ks) + 1, :n]  # [R_b + 1, n]: events..., taste
            row += len(ks) + 1
            out.append(self._choose(state, ks, contrib, bo, kind))
        return out

    def _citable(self, state: SessionState) -> list[int]:
        """The most recent (up to ``events``) events of the session whose track occurs once in it."""
        e = len(state.recent)
        if e == 0 or state.events == 0:
            return []
        counts: dict[int, int] = {}
        for t in state.recent:
            counts[t] = counts.get(t, 0) + 1
        ks = [k for k in range(e - 1, -1, -1) if counts[state.recent[k]] == 1]
        return sorted(ks[: self.events])

    def _choose(
        self, state: SessionState, ks: list[int], contrib: np.ndarray, boost: np.ndarray, kind: np.ndarray
    ) -> Explanations:
        n = contrib.shape[1]
        codes = np.full(n, REASON_CODES.index(SESSION_FIT), np.int8)
        cited = np.full(n, -1, np.int64)
        value = np.zeros(n, np.float32)
        for j in range(n):
            if kind[j] == KIND_PINNED:
                codes[j] = REASON_CODES.index(EDITORIAL_PIN)
                continue
            if kind[j] == KIND_EXPLORED:
                codes[j] = REASON_CODES.index(EXPLORATION)
                continue
            options = [(float(contrib[r, j]), r) for r in range(len(ks) + 1)] + [(float(boost[j]), -1)]
            best, r = max(options)
            if best <= self.min_contribution:
                continue
            value[j] = best
            if r == -1:
                codes[j] = REASON_CODES.index(EDITORIAL_BOOST)
            elif r == len(ks):
                codes[j] = REASON_CODES.index(LONG_TERM_TASTE)
            else:
                k = ks[r]
                codes[j] = REASON_CODES.index(_EVENT_CODE[state.outcomes[k]])
                cited[j] = state.recent[k]
        return Explanations(codes, cited, value)
