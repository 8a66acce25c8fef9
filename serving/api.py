"""The read and ingest HTTP API.

* ``GET  /v1/users/{user_id}/recommendations`` latest recommendations from the store; rescored on demand when
  the user has state but no cached list, or when the cached list was made for a session that has ended (no event
  for longer than the session gap: the next session starts from the long-term taste at the current hour, not
  from the last session's vectors); for a user never seen, the cold-start ranking from the context prior
  (``?device=``, the hour) where the bundle has one, else the popularity fallback.
* ``POST /v1/events`` one event or a JSON array of events, validated and sent to the events topic.
* ``POST|DELETE /v1/users/{user_id}/steer`` steering by prompt (``serving.steer_api``).
* ``GET|POST|DELETE /v1/rules``, ``GET /v1/rules/audit``, ``GET|PUT|DELETE /v1/users/{user_id}/preferences``:
  editorial rules and the per-user knob (``serving.editorial_api``).
* ``GET  /healthz`` store reachability, model version and execution provider.
* ``GET  /metrics`` Prometheus exposition.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.bias import SessionBias
from serving.catalog import Catalog
from serving.editorial_api import Editorial, register_editorial
from serving.rescore import Rescorer, popularity_ranking, to_record
from serving.settings import ApiSettings
from serving.steer_api import Steering, register_steering
from streams.errors import InvalidEvent, StoreUnavailable
from streams.metrics import Metrics
from streams.pipeline import now_ms
from streams.records import MALFORMED_JSON, Recommendations, encode_record
from streams.sdk import EventProducer
from streams.session import Dynamics, SessionState, session_ended, session_start_view
from streams.stores import Store


@dataclass(frozen=True)
class ApiDeps:
    """The API's collaborators; ``producer`` is ``None`` when ingest is off."""

    settings: ApiSettings
    store: Store
    catalog: Catalog
    rescorer: Rescorer
    metrics: Metrics
    provider: str
    producer: EventProducer | None = None
    bias: SessionBias | None = None  # cold-start prior and prompt steers for on-demand rankings
    steering: Steering | None = None  # the steering routes (serving/steer_api.py), when on
    editorial: Editorial | None = None  # rules and preferences routes, blocks on read, reason sentences


def _json(raw: bytes, status: int = 200) -> Response:
    return Response(content=raw, status_code=status, media_type="application/json")


def create_api(deps: ApiDeps) -> FastAPI:
    """Build the FastAPI application around ``deps``."""
    api = FastAPI(title="segue", version="1", description=__doc__)
    metrics = deps.metrics
    token = deps.settings.auth_token.get_secret_value() if deps.settings.auth_token else None

    @api.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        route = request.scope.get("route")
        started = time.perf_counter()
        if token is not None and request.url.path != "/healthz":
            if request.headers.get("authorization") != f"Bearer {token}":
                return JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401)
        length = request.headers.get("content-length")
        if length is not None and int(length) > deps.settings.max_body_bytes:
            return JSONResponse({"detail": f"request body over {deps.settings.max_body_bytes} bytes"}, status_code=413)
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.api_requests.labels(path, str(response.status_code)).inc()
        metrics.api_seconds.labels(path).observe(time.perf_counter() - started)
        return response

    @api.get("/v1/users/{user_id}/recommendations")
    async def recommendations(
        user_id: str,
        limit: int = Query(20, ge=1, le=500),
        device: str | None = Query(None, max_length=32),
        exploration: float | None = Query(None, ge=0.0, le=1.0),
        diversity: float | None = Query(None, ge=0.0, le=1.0),
    ) -> Response:
        try:
            state, recs = await deps.store.get_user(user_id)
            if recs is None:
                recs = await _rank_and_offer(deps, user_id, state, device)
            elif state is not None and recs.session_id == state.session_id and _ended(deps, state):
                recs = await _rank_and_offer(deps, user_id, state, device, replace=True)  # its session is over
        except StoreUnavailable as exc:
            raise HTTPException(status_code=503, detail=f"state store unavailable: {exc}") from exc
        if deps.editorial is not None:
            recs = await deps.editorial.finish(user_id, recs, exploration, diversity)
        if len(recs.items) > limit:
            recs = msgspec.structs.replace(recs, items=recs.items[:limit])
        return _json(encode_record(recs))

    @api.post("/v1/events", status_code=202)
    async def ingest(request: Request) -> Response:
        if deps.producer is None:
            raise HTTPException(status_code=404, detail="ingest is disabled on this API (SEGUE_API_INGEST=false)")
        body = await request.body()
        if len(body) > deps.settings.max_body_bytes:  # also for chunked bodies, which carry no content-length
            raise HTTPException(status_code=413, detail=f"request body over {deps.settings.max_body_bytes} bytes")
        try:
            payload = msgspec.json.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # a body that is not UTF-8 raises the latter
            return JSONResponse(
                {"accepted": 0, "errors": [{"index": 0, "reason": MALFORMED_JSON, "detail": str(exc)}]},
                status_code=400,
            )
        events = payload if isinstance(payload, list) else [payload]
        if len(events) > deps.settings.max_batch_events:
            raise HTTPException(status_code=413, detail=f"at most {deps.settings.max_batch_events} events a request")
        errors = []
        for i, event in enumerate(events):
            try:
                deps.producer.send(event if isinstance(event, dict) else msgspec.json.encode(event))
            except InvalidEvent as exc:
                errors.append({"index": i, "reason": exc.reason, "detail": exc.detail})
        status = 202 if not errors else (400 if len(errors) == len(events) else 207)
        return JSONResponse({"accepted": len(events) - len(errors), "errors": errors}, status_code=status)

    @api.get("/healthz")
    async def healthz() -> JSONResponse:
        ok = await deps.store.ping()
        body = {
            "status": "ok" if ok else "degraded",
            "store": ok,
            "model_version": deps.catalog.model_version,
            "provider": deps.provider,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @api.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if deps.editorial is not None:
        register_editorial(api, deps.editorial)

    if deps.steering is not None:
        register_steering(api, deps.steering, lambda user: _on_demand(deps, user, replace=True))
    return api


def _ended(deps: ApiDeps, state: SessionState) -> bool:
    """True if the session of ``state`` is over now (no event for longer than the session gap)."""
    return session_ended(state.last_ts_ms, now_ms(), Dynamics(gap_ms=int(deps.settings.session.gap_s * 1000)))


async def _on_demand(deps: ApiDeps, user_id: str, device: str | None = None, replace: bool = False) -> Recommendations:
    """Rank ``user_id`` now (cold start for a listener without a state; a session that has ended as its next one
    starts, ``session_start_view``) and offer the list to the store: kept only while the state is still the one
    ranked (``Store.offer_recommendations``), so a fresher list the worker wrote meanwhile is never overwritten;
    ``replace``: also over a list already stored (after a steer, or the list of an ended session)."""
    (state,) = await deps.store.get_states([user_id])
    return await _rank_and_offer(deps, user_id, state, device, replace)


async def _rank_and_offer(
    deps: ApiDeps, user_id: str, state: SessionState | None, device: str | None = None, replace: bool = False
) -> Recommendations:
    """``_on_demand`` with the user's state already read."""
    now = now_ms()
    ended = state is not None and _ended(deps, state)
    if state is None and deps.bias is not None:  # a new user: context prior, popularity and any steer
        cat = deps.catalog
        ranking = await deps.bias.new_listener(user_id, device, now, deps.rescorer, cat.embeddings, cat.popularity)
    elif state is None:
        ranking = popularity_ranking(deps.catalog.popularity, deps.rescorer.n_recs)
    else:
        view = session_start_view(state) if ended else state
        if deps.bias is not None:
            (view,) = await deps.bias.apply([user_id], [view], [device], [now], now)
        prefs, rules = None, None
        if deps.editorial is not None:  # as the worker ranks: the rules in force and the listener's own knob
            rules = await deps.editorial.rules.current(now)
            stored = (await deps.editorial.preferences.get_many([user_id]))[0]
            prefs = [stored] if stored is not None else None
        (ranking,) = deps.rescorer.rank([view], [now], prefs=prefs, rules=rules, users=[user_id])
    deps.metrics.recommendations.labels("fallback" if ranking.fallback else "model").inc()
    recs = to_record(
        user_id,
        ranking,
        deps.catalog.track_ids,
        deps.catalog.model_version,
        deps.provider,
        generated_ms=now_ms(),
        session_id=state.session_id if state is not None and not ended else "",
    )
    if state is not None:
        await deps.store.offer_recommendations([recs], [state.version], replace=replace)
    return recs
