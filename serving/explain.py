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
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np

from streams.records import Reason, rounded
from streams.session import LIKED, PLAYED, SKIPPED, Dynamics, SessionState, context_matrix, state_rows

SIMILAR_TO_LIKED: Final = "similar_to_liked"
SIMILAR_TO_PLAYED: Final = "similar_to_played"
AVOIDS_SKIPPED: Final = "avoids_skipped"
LONG_TERM_TASTE: Final = "long_term_taste"
EXPLORATION: Final = "exploration"
EDITORIAL_PIN: Final = "editorial_pin"
EDITORIAL_BOOST: Final = "editorial_boost"
POPULAR: Final = "popular"
SESSION_FIT: Final = "session_fit"
SIMILAR_SESSIONS: Final = "similar_sessions"
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
    SIMILAR_SESSIONS,
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
    SIMILAR_SESSIONS: "Played in sessions like yours.",
}

# How many of a session's most recent events the removal works with (older ones weigh decay^16 ~ 3e-4 and are
# carried as one residual that ages with them).
WINDOW: Final = 16

# Per-track kinds the ranking step hands over.
KIND_RANKED: Final = 0
KIND_EXPLORED: Final = 1
KIND_PINNED: Final = 2
KIND_SESSIONS: Final = 3  # placed by session-kNN (``serving.session_blend``), not by the model's score


class Scorer(Protocol):
    """What scores candidates: the session model's call (signature v1), [B, K] logits."""

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
            codes[kinds == KIND_SESSIONS] = REASON_CODES.index(SIMILAR_SESSIONS)
        return Explanations(codes, np.full(n, -1, np.int64), np.zeros(n, np.float32))

    def reasons(self, track_ids: Sequence[str]) -> list[Reason]:
        codes, cited = self.codes.tolist(), self.cited.tolist()  # plain Python numbers: faster per item
        return [  # contributions rounded as float32, as stored
            Reason(REASON_CODES[c], track_ids[t] if t >= 0 else "", x)
            for c, t, x in zip(codes, cited, rounded(self.contribution, 4), strict=True)
        ]


@dataclass(frozen=True)
class Removals:
    """Sessions without one of their events each: the model's user inputs for B users x R removals.

    pos, neg, taste float32 [B, R, D]; context float32 [B, R, 8] (``streams.session.CONTEXT_FEATURES``).
    """

    pos: np.ndarray
    neg: np.ndarray
    taste: np.ndarray
    context: np.ndarray


def _window_codes(states: Sequence[SessionState], w: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``w`` events of each session, right-aligned: track int64 [B, w] and outcome int64 [B, w]
    (-1 where a session has fewer)."""
    b = len(states)
    tracks = np.full((b, w), -1, np.int64)
    outcomes = np.full((b, w), -1, np.int64)
    for i, s in enumerate(states):
        m = min(w, len(s.recent))
        if m:
            tracks[i, w - m :] = s.recent[-m:]
            outcomes[i, w - m :] = s.outcomes[-m:]
    return tracks, outcomes


def _window(states: Sequence[SessionState], items: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_window_codes`` and the tracks' embeddings float64 [B, w, D] (zero where there is no event)."""
    tracks, outcomes = _window_codes(states, w)
    emb = np.where((tracks >= 0)[..., None], items[np.maximum(tracks, 0)], 0.0).astype(np.float64)
    return tracks, outcomes, emb


def play_strengths(pos: np.ndarray, outcomes: np.ndarray, emb: np.ndarray, dyn: Dynamics) -> np.ndarray:
    """The weight each windowed event added to ``pos``: float64 [B, W].

    Likes weigh ``like_weight``, skips and empty slots nothing; a play's weight (how much was heard) is not
    stored, so it is recovered by least squares (batched normal equations) from ``pos``, which is exactly a sum
    of the session's items times decay^age times weight: exact while the session fits the window and has at
    most D plays with independent items. pos float32 [B, D], outcomes [B, W], emb [B, W, D].
    """
    w = outcomes.shape[1]
    coef = dyn.decay ** np.arange(w - 1, -1, -1, dtype=np.float64)  # [W] decay^age
    weights = np.where(outcomes == LIKED, dyn.like_weight, 0.0)  # [B, W]
    is_play = outcomes == PLAYED
    if is_play.any():
        known = ((weights * coef)[:, None, :] @ emb)[:, 0]  # [B, D]
        cols = emb * (coef * is_play)[..., None]  # [B, W, D]; non-play columns zero
        gram = cols @ np.swapaxes(cols, 1, 2)  # [B, W, W] normal equations, solved batched
        gram += np.eye(w) * np.where(is_play, 1e-12, 1.0)[:, None, :]  # non-plays: a unit diagonal, weight 0
        rhs = cols @ (pos.astype(np.float64) - known)[..., None]  # [B, W, 1]
        sol = np.linalg.solve(gram, rhs)[..., 0]
        weights = np.where(is_play, np.clip(sol, 0.0, None), weights)
    return weights


def half_round(v: np.ndarray) -> np.ndarray:
    """float32 values rounded to float16 precision, as ``v.astype(float16).astype(float32)`` bit for bit within
    float16's range, about twice as fast: round to nearest even at mantissa bit 13 (normals), to a multiple of
    2^-24 below 2^-14 (float16 subnormals)."""
    v = np.ascontiguousarray(v, dtype=np.float32)
    u = v.view(np.uint32)
    r = ((u + (np.uint32(0x0FFF) + ((u >> np.uint32(13)) & np.uint32(1)))) & np.uint32(0xFFFFE000)).view(np.float32)
    small = np.abs(v) < np.float32(2.0**-14)
    if small.any():
        r = np.where(small, np.round(v * np.float32(2.0**24)) * np.float32(2.0**-24), r)
    return r


def _snap(part: np.ndarray, whole: np.ndarray, tol: float) -> np.ndarray:
    """Zero the parts [..., D] that are rounding noise of ``whole`` (so an exactly zero vector, such as the
    positives before a session's first play, stays exactly zero)."""
    tiny = np.linalg.norm(part, axis=-1, keepdims=True) <= tol * np.maximum(
        1.0, np.linalg.norm(whole, axis=-1, keepdims=True)
    )
    return np.where(tiny, 0.0, part)


def remove_events(
    states: Sequence[SessionState],
    ks: np.ndarray,
    items: np.ndarray,
    dyn: Dynamics,
    now_ms: Sequence[int],
    base_context: np.ndarray | None = None,
    window: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    sources: Sequence[SessionState] | None = None,
) -> Removals:
    """Each session without event ``ks[b, r]`` (a position in the last ``WINDOW`` events, counted from the
    window's end: -1 is the latest), as if it had been replayed through ``apply_event`` without it.

    In closed form over the window: each kept event's share of ``pos``/``neg`` is its weight times decay to the
    power of the events kept after it; the taste is the taste before the window (its affine updates undone)
    carried through the kept events' updates; what the window's events do not explain (older events of a long
    session) ages one step less. The result is rounded once to the state's precision (float16 when the state's
    vectors are kept at half precision, detected from the values). The counters change as in a
    replay. ks int64 [B, R] with values in [-WINDOW, -1]; ``base_context`` float32 [B, 8]: the sessions' own
    ``context_features`` at ``now_ms`` and ``window`` the sessions' ``_window`` (computed here when not given).
    ``sources``: the states as the session rule left them, where a stage changed the vectors before ranking
    (``states``); the removal is computed on them and the change is added back.
    """
    ranked_states = states
    if sources is not None:
        states = sources
    if base_context is None:
        base_context = context_matrix(states, now_ms)
    w = WINDOW
    _, outcomes, emb = window if window is not None else _window(states, items, w)  # [B, W], [B, W, D]
    pos32, neg32, taste32 = (state_rows(states, f) for f in ("pos", "neg", "taste"))  # [B, D] each
    half = all(np.array_equal(v.astype(np.float16).astype(np.float32), v) for v in (pos32, neg32, taste32))
    pos, neg, taste = pos32.astype(np.float64), neg32.astype(np.float64), taste32.astype(np.float64)

    def kept(v: np.ndarray) -> np.ndarray:  # the precision the session rule keeps vectors at
        v = v.astype(np.float32)
        return half_round(v) if half else v

    d = dyn.decay
    age = np.arange(w - 1, -1, -1, dtype=np.float64)  # [W] events after each slot, all events kept
    weights = play_strengths(pos, outcomes, emb, dyn)  # [B, W]
    real = outcomes >= 0
    is_skip = outcomes == SKIPPED
    pos_w = np.where(is_skip | ~real, 0.0, weights)  # [B, W] what each event added to pos, to neg
    neg_w = np.where(is_skip, dyn.skip_weight, 0.0)
    rate = np.where(outcomes == LIKED, 2.0, np.where(outcomes == PLAYED, weights, 0.0)) * dyn.taste_rate  # [B, W]
    rate = np.minimum(rate, 0.999)
    k = ks + w  # [B, R] absolute positions in the window
    # What the window's events do not explain is older than all of them: none for a session that fits in the
    # window (so what is exactly zero in a replay stays exactly zero), the older events' share otherwise.
    whole = np.asarray([len(s.recent) == s.events <= w for s in states])  # [B]
    full_pos = ((pos_w * d**age)[:, None, :] @ emb)[:, 0]  # [B, D]
    full_neg = ((neg_w * d**age)[:, None, :] @ emb)[:, 0]
    pos_res = np.where(whole[:, None], 0.0, pos - full_pos)
    neg_res = np.where(whole[:, None], 0.0, neg - full_neg)
    # The taste before the window: its affine updates (1 - rate) t + rate item undone in closed form.
    log_keep = np.log1p(-rate)  # [B, W]
    after = np.cumsum(log_keep[:, ::-1], axis=1)[:, ::-1] - log_keep  # [B, W] sum over later events
    taste0 = (taste - ((rate * np.exp(after))[:, None, :] @ emb)[:, 0]) / np.exp(log_keep.sum(axis=1))[:, None]
    taste0 = _snap(taste0, taste, 2e-3 if half else 1e-5)

    # Without event k: an event before k has one event fewer after it; event k contributes nothing.
    j = np.arange(w)
    keep = (j[None, None, :] != k[..., None]) & real[:, None, :]  # [B, R, W]
    later = np.cumsum(keep[..., ::-1], axis=2)[..., ::-1] - keep  # [B, R, W] kept events after each
    decay = np.where(keep, d**later, 0.0)
    p = (pos_w[:, None, :] * decay) @ emb + pos_res[:, None, :] / d  # [B, R, D]
    n = (neg_w[:, None, :] * decay) @ emb + neg_res[:, None, :] / d
    lk = np.where(keep, log_keep[:, None, :], 0.0)  # [B, R, W]
    after_k = np.cumsum(lk[..., ::-1], axis=2)[..., ::-1] - lk
    t = (
        taste0[:, None, :] * np.exp(lk.sum(axis=2))[..., None]
        + (np.where(keep, rate[:, None, :], 0.0) * np.exp(after_k)) @ emb
    )
    p, n, t = kept(p), kept(n), kept(t)
    if sources is not None and any(a is not b for a, b in zip(ranked_states, sources, strict=True)):
        # what the stage before ranking changed, added back
        p = p + (state_rows(ranked_states, "pos") - pos32)[:, None]
        n = n + (state_rows(ranked_states, "neg") - neg32)[:, None]
        t = t + (state_rows(ranked_states, "taste") - taste32)[:, None]
    removed = np.take_along_axis(outcomes, k, axis=1)  # [B, R]
    untouched = (taste32 if ranked_states is states else state_rows(ranked_states, "taste"))[:, None, :]
    t = np.where(((removed < 0) | (removed == SKIPPED))[..., None], untouched, t)  # the taste stays as ranked

    context = _contexts_without(states, outcomes, k, base_context)
    return Removals(p.astype(np.float32), n.astype(np.float32), t.astype(np.float32), context)


def _contexts_without(
    states: Sequence[SessionState], outcomes: np.ndarray, k: np.ndarray, base: np.ndarray
) -> np.ndarray:
    """``streams.session.context_features`` of each session without event k: float32 [B, R, 8]. Only the
    counters and the last outcome change; the hour features stay (tests check it against a replay)."""
    counts = np.asarray([[s.plays, s.skips, s.likes, s.events] for s in states], np.float64)  # [B, 4]
    o = np.take_along_axis(outcomes, k, axis=1)  # [B, R]
    plays = counts[:, :1] - (o == PLAYED)
    skips = counts[:, 1:2] - (o == SKIPPED)
    likes = counts[:, 2:3] - (o == LIKED)
    events = np.maximum(counts[:, 3:4] - 1, 0)
    heard = plays + skips
    w = outcomes.shape[1]
    prev = np.where(k == w - 1, outcomes[:, -2:-1] if w > 1 else -1, outcomes[:, -1:])  # the last outcome left
    out = np.repeat(base[:, None, :], k.shape[1], axis=1).astype(np.float64)
    out[..., 0] = np.where(heard > 0, skips / np.maximum(heard, 1), 0.0)
    out[..., 1] = np.log1p(plays) / 4.0
    out[..., 2] = np.log1p(skips) / 4.0
    out[..., 3] = np.log1p(likes) / 4.0
    out[..., 4] = np.log1p(events) / 4.0
    out[..., 7] = (prev == SKIPPED).astype(np.float64)
    return out.astype(np.float32)


def citable(tracks: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``r`` most recent events of each window whose track occurs once in it (a repeated track's share of
    the session cannot be told apart): (positions from the window's end int64 [B, r], -1 where unused; valid
    bool [B, r]). tracks int64 [B, W], -1 for no event."""
    present = tracks >= 0
    counts = ((tracks[:, :, None] == tracks[:, None, :]) & present[:, None, :]).sum(axis=2)  # [B, W]
    ok = (present & (counts == 1))[:, ::-1]  # newest first
    order = np.cumsum(ok, axis=1) - 1  # how many eligible events are newer, per newest-first slot
    ks = np.full((tracks.shape[0], r), -1, np.int64)
    valid = np.zeros((tracks.shape[0], r), bool)
    for i in range(r):
        hit = ok & (order == i)  # [B, W]
        valid[:, i] = hit.any(axis=1)
        ks[:, i] = np.where(valid[:, i], -(hit.argmax(axis=1) + 1), -1)
    return ks, valid


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
        events: int = 2,
        min_contribution: float = 0.02,
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
        sources: Sequence[SessionState] | None = None,
    ) -> list[Explanations]:
        """Per user b: ``picks[b]`` track indices int64 [n], ``base[b]`` their model scores float32 [n],
        ``boost[b]`` their editorial boosts float32 [n], ``kinds[b]`` int8 [n] (``KIND_*``); ``sources``: the
        states before a stage changed their vectors for ranking (``remove_events``)."""
        b_count, r_count = len(states), self.events
        window = _window(states, self._items, WINDOW)
        ks, valid = citable(window[0], r_count)  # [B, R] window positions from its end
        base_ctx = context_matrix(states, now_ms)  # [B, 8]
        removed = remove_events(states, ks, self._items, self._dyn, now_ms, base_ctx, window, sources)  # [B, R]
        n = max((len(p) for p in picks), default=0)
        padded = np.zeros((b_count, n), np.int64)
        for b, p in enumerate(picks):
            padded[b, : len(p)] = p
        cand = self._items[padded]  # [B, n, D]
        rows = r_count + 1  # R removals, then the taste zeroed
        pos = np.concatenate([removed.pos, state_rows(states, "pos")[:, None]], axis=1)  # [B, R+1, D]
        neg = np.concatenate([removed.neg, state_rows(states, "neg")[:, None]], axis=1)
        taste = np.concatenate([removed.taste, np.zeros_like(removed.taste[:, :1])], axis=1)
        ctx = np.concatenate([removed.context, base_ctx[:, None]], axis=1)  # [B, R+1, 8]
        d = cand.shape[-1]
        scores = self._scorer.score(
            pos.reshape(-1, d),
            neg.reshape(-1, d),
            taste.reshape(-1, d),
            ctx.reshape(b_count * rows, -1),
            np.broadcast_to(cand[:, None], (b_count, rows, n, d)).reshape(-1, n, d),
        ).reshape(b_count, rows, n)  # one model call: [B * (R + 1), n]
        base_arr = np.full((b_count, n), np.nan)
        boost_arr = np.zeros((b_count, n))
        kind_arr = np.full((b_count, n), KIND_RANKED, np.int8)
        for b in range(b_count):
            m = len(picks[b])
            base_arr[b, :m], boost_arr[b, :m], kind_arr[b, :m] = base[b], boost[b], kinds[b]
        contrib = base_arr[:, None, :] - scores  # [B, R+1, n]: the events..., then the taste
        contrib[:, :r_count][~valid] = -np.inf
        codes, cited, value = self._choose(window[0], window[1], ks, contrib, boost_arr, kind_arr)
        return [Explanations(codes[b, : len(p)], cited[b, : len(p)], value[b, : len(p)]) for b, p in enumerate(picks)]

    def _choose(
        self,
        tracks: np.ndarray,  # int64 [B, W] the sessions' windows
        outcomes: np.ndarray,  # int64 [B, W]
        ks: np.ndarray,  # int64 [B, R] window positions from its end
        contrib: np.ndarray,  # float64 [B, R+1, n]
        boost: np.ndarray,  # float64 [B, n]
        kinds: np.ndarray,  # int8 [B, n]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The largest contribution per track: (code index int8 [B, n], cited track int64 [B, n], value [B, n])."""
        b_count, r_count = ks.shape
        ev_outcome = np.take_along_axis(outcomes, ks + WINDOW, axis=1)  # [B, R]
        ev_track = np.take_along_axis(tracks, ks + WINDOW, axis=1)
        lookup = np.full(4, REASON_CODES.index(SESSION_FIT), np.int8)  # outcome code (or -1 -> slot 3) -> reason
        for outcome, code in _EVENT_CODE.items():
            lookup[outcome] = REASON_CODES.index(code)
        ev_code = lookup[np.where(ev_outcome >= 0, ev_outcome, 3)]  # [B, R]
        options = np.concatenate([contrib, boost[:, None, :]], axis=1)  # [B, R+2, n]
        best = np.nan_to_num(options, nan=-np.inf).argmax(axis=1)  # [B, n]
        value = np.take_along_axis(options, best[:, None, :], axis=1)[:, 0, :]
        from_event = best < r_count
        slot = np.minimum(best, r_count - 1)
        codes = np.where(
            from_event,
            np.take_along_axis(ev_code, slot, axis=1),
            np.where(best == r_count, REASON_CODES.index(LONG_TERM_TASTE), REASON_CODES.index(EDITORIAL_BOOST)),
        ).astype(np.int8)
        cited = np.where(from_event, np.take_along_axis(ev_track, slot, axis=1), -1)
        weak = ~(value > self.min_contribution)
        special = (kinds == KIND_PINNED) | (kinds == KIND_EXPLORED) | (kinds == KIND_SESSIONS)
        codes[weak] = REASON_CODES.index(SESSION_FIT)
        codes[kinds == KIND_PINNED] = REASON_CODES.index(EDITORIAL_PIN)
        codes[kinds == KIND_EXPLORED] = REASON_CODES.index(EXPLORATION)
        codes[kinds == KIND_SESSIONS] = REASON_CODES.index(SIMILAR_SESSIONS)
        cited = np.where(weak | special, -1, cited).astype(np.int64)
        value = np.where(weak | special, 0.0, value).astype(np.float32)
        return codes, cited, value
