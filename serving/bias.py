"""What the ranking sees of a session besides its own state: the cold-start prior and an active prompt steer.

``SessionBias.apply`` takes the states of a batch of users and returns the states to rank: the context prior
(``serving.cold_start.ColdStart.ranking_state``) where a listener's own taste is still thin, then the user's
active steer (``serving.steering.steer_state``). Steers of the whole batch are read in one store round trip, and
in the worker only for users in the (cached) index of steered users.
The stored states are never changed: both are views for ranking only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from serving.cold_start import ColdStart, read_cold_start
from serving.rescore import Ranking, Rescorer, popularity_ranking
from serving.steering import Steer, steer_state
from streams.errors import RetryableError
from streams.session import SessionState
from streams.settings import RedisSettings, ScoringSettings
from streams.steer_store import RedisSteerStore, SteerStore

log = logging.getLogger(__name__)


class SessionBias:
    """Cold-start prior and prompt steering for ranking; either part may be absent (None).

    ``index_refresh_ms``: with a number (the worker), the set of steered users (``SteerStore.steered_users``) is
    cached that long and steers are read only for the batch's users in it, so a batch in which nobody is
    steered costs no read; a new steer reaches the worker within that time (the API re-ranks at once). With
    None (the API) every call reads the steers of its users directly.
    """

    def __init__(
        self,
        cold: ColdStart | None,
        steers: SteerStore | None,
        model_version: str = "",
        index_refresh_ms: int | None = None,
    ) -> None:
        self.cold = cold
        self.steers = steers
        self.model_version = model_version
        self.index_refresh_ms = index_refresh_ms
        self._steered: set[str] = set()
        self._steered_at: int | None = None

    async def apply(
        self,
        users: Sequence[str],
        states: Sequence[SessionState],
        devices: Sequence[str | None],
        event_ms: Sequence[int],
        wall_ms: int,
    ) -> list[SessionState]:
        """The states to rank, in order. ``event_ms``: each user's time of day for the prior (their last event);
        ``wall_ms``: the clock that steers expire by. A steer store that is down is logged and skipped: steering
        is a preference, and recommendations must not wait for it."""
        out = list(states)
        if self.cold is not None:
            out = [self.cold.ranking_state(s, d, t) for s, d, t in zip(out, devices, event_ms, strict=True)]
        if self.steers is not None and users:
            try:
                steers = await self._read(users, wall_ms)
            except RetryableError as exc:
                log.warning("steers not applied to this batch: %s", exc)
                return out
            out = [steer_state(s, steers.get(u), wall_ms, self.model_version) for u, s in zip(users, out, strict=True)]
        return out

    async def _read(self, users: Sequence[str], wall_ms: int) -> dict[str, Steer]:
        """The live steers of ``users`` (at most two store calls: the index when stale, then the steers)."""
        store = self.steers
        if store is None:
            return {}
        wanted = list(users)
        if self.index_refresh_ms is not None:
            if self._steered_at is None or wall_ms - self._steered_at >= self.index_refresh_ms:
                self._steered = await store.steered_users(wall_ms)
                self._steered_at = wall_ms
            wanted = [u for u in users if u in self._steered]
            if not wanted:
                return {}
        got = await store.get_steers(wanted, wall_ms)
        return {u: st for u, st in zip(wanted, got, strict=True) if st is not None}

    async def new_listener(
        self,
        user_id: str,
        device: str | None,
        now_ms: int,
        rescorer: Rescorer,
        embeddings: np.ndarray,
        popularity: np.ndarray,
    ) -> Ranking:
        """The ranking for a user with no state: a steered empty session if they set a steer, else the
        cold-start ranking (context prior + popularity), else popularity. ``fallback`` unless model-scored."""
        empty = SessionState.empty(int(embeddings.shape[1]))
        (view,) = await self.apply([user_id], [empty], [device], [now_ms], now_ms)
        if view.pos.any():  # a steer: rank the steered session with the model
            return rescorer.rank([view], [now_ms])[0]
        if self.cold is not None:
            idx, scores = self.cold.new_listener_ranking(embeddings, popularity, device, now_ms, rescorer.n_recs)
            return Ranking(idx, scores, fallback=True)
        return popularity_ranking(popularity, rescorer.n_recs)


# How long the worker trusts its cached set of steered users: a new steer reaches its next ranking within this.
WORKER_INDEX_REFRESH_MS = 1000


def session_bias(
    scoring: ScoringSettings,
    redis: RedisSettings,
    model_version: str,
    index_refresh_ms: int | None = WORKER_INDEX_REFRESH_MS,
) -> SessionBias | None:
    """The cold-start prior (from the bundle) and the Redis steer store, as the settings turn them on.
    ``index_refresh_ms``: see ``SessionBias`` (the worker keeps the default, the API passes None)."""
    cold = read_cold_start(scoring.model_dir) if scoring.cold_start else None
    steers = RedisSteerStore.connect(redis) if scoring.steering else None
    if cold is None and scoring.cold_start:
        log.info("the model bundle has no cold-start data: new listeners get the popularity ranking")
    if cold is None and steers is None:
        return None
    return SessionBias(cold, steers, model_version, index_refresh_ms)
