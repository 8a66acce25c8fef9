"""The read and ingest API against the real Redis and broker (in-process app, real connections)."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from infra.prom_text import total
from serving.api import ApiDeps, create_api
from serving.catalog import Catalog
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from serving.settings import ApiSettings
from streams.metrics import Metrics
from streams.pipeline import now_ms
from streams.records import Play, Recommendations, RecommendedTrack, decode_event
from streams.sdk import EventProducer
from streams.session import SessionState, apply_event, session_start_view
from streams.settings import RedisSettings, ScoringSettings
from streams.stores import RedisStore
from tests.integration.helpers import read_topic


@pytest.fixture
def api_parts(embedded_stack, unique_topics, redis_prefix, quick_bundle):
    settings = ApiSettings(
        kafka=embedded_stack.kafka,
        redis=RedisSettings(url=embedded_stack.redis.url, key_prefix=redis_prefix),
        topics=unique_topics,
        scoring=ScoringSettings(model_dir=quick_bundle, device="cpu"),
    )
    catalog = Catalog.load(quick_bundle)
    scorer = OnnxScorer.load(quick_bundle, device="cpu")
    rescorer = Rescorer(catalog.embeddings, ExactRetriever(catalog.embeddings), scorer, 100, 10)
    metrics = Metrics.create()
    producer = EventProducer.connect(embedded_stack.kafka, topic=unique_topics.events)

    def build(**overrides):
        s = settings.model_copy(update=overrides)
        store = RedisStore.connect(s.redis, metrics)
        return create_api(ApiDeps(s, store, catalog, rescorer, metrics, scorer.provider, producer)), store

    yield build, catalog, settings
    producer.close()


def test_recommendations_health_and_metrics(api_parts):
    build, catalog, settings = api_parts
    app, store = build()
    with TestClient(app) as client:
        cold = client.get("/v1/users/nobody/recommendations").json()
        assert cold["fallback"] is True and len(cold["items"]) == 10
        assert cold["items"][0]["track_id"] == catalog.track_ids[int(catalog.popularity.argmax())]

        i = 5
        event = Play(
            event_id="e1", user_id="alice", track_id=catalog.track_ids[i], ts_ms=now_ms() - 60_000, played_ms=200_000
        )
        state = apply_event(SessionState.empty(catalog.dim), event, i, catalog.embeddings[i])
        asyncio.run(_put(settings, state))
        recs = client.get("/v1/users/alice/recommendations", params={"limit": 3}).json()
        assert recs["fallback"] is False and [r["rank"] for r in recs["items"]] == [1, 2, 3]
        assert catalog.track_ids[i] not in {r["track_id"] for r in recs["items"]}
        assert client.get("/v1/users/alice/recommendations?limit=0").status_code == 422

        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["provider"] == "CPUExecutionProvider"
        text = client.get("/metrics").text
        assert total(text, "segue_api_requests_total", route="/v1/users/{user_id}/recommendations") >= 3
        assert total(text, "segue_recommendations_total", kind="fallback") >= 1


async def _put(settings, state, recs=None):
    store = RedisStore.connect(settings.redis)
    await store.put_states({"alice": state})
    if recs is not None:
        await store.put_recommendations([recs])
    await store.close()


def test_the_list_of_an_ended_session_is_reranked_for_the_next_one(api_parts):
    """A list older than the session gap is the last session's: the next read ranks the session-start view (the
    long-term taste at the current hour), stores it, and later reads serve it from the store."""
    build, catalog, settings = api_parts
    rescorer = Rescorer(
        catalog.embeddings,
        ExactRetriever(catalog.embeddings),
        OnnxScorer.load(settings.scoring.model_dir, device="cpu"),
        100,
        10,
    )
    app, store = build()
    then = now_ms() - 2 * 3600_000
    state = SessionState.empty(catalog.dim)
    for k, i in enumerate((3, 4, 5)):
        e = Play(event_id=f"e{k}", user_id="alice", track_id=catalog.track_ids[i], ts_ms=then + k, played_ms=200_000)
        state = apply_event(state, e, i, catalog.embeddings[i])
    old = Recommendations(
        user_id="alice",
        items=[RecommendedTrack(catalog.track_ids[7], 1.0, 1)],
        model_version=catalog.model_version,
        provider="CPUExecutionProvider",
        session_id=state.session_id,
        generated_ms=then,
    )
    asyncio.run(_put(settings, state, old))
    with TestClient(app) as client:
        fresh = client.get("/v1/users/alice/recommendations").json()
        assert fresh["session_id"] == "" and fresh["generated_ms"] > then + 3600_000
        (expected,) = rescorer.rank([session_start_view(state)], [fresh["generated_ms"]])
        assert [r["track_id"] for r in fresh["items"]] == [catalog.track_ids[int(t)] for t in expected.indices]
        (with_session,) = rescorer.rank([state], [fresh["generated_ms"]])
        assert list(expected.indices) != list(with_session.indices)  # the view is not the ended session
        again = client.get("/v1/users/alice/recommendations").json()
        assert again == fresh  # stored: the next read does not rank again

    # the same list for a session still going on (its last event a minute ago) is served as stored
    e = Play(event_id="e9", user_id="alice", track_id=catalog.track_ids[6], ts_ms=now_ms() - 60_000, played_ms=1000)
    ongoing = apply_event(state, e, 6, catalog.embeddings[6])
    current = Recommendations(
        **{**{f: getattr(old, f) for f in old.__struct_fields__}, "session_id": ongoing.session_id}
    )
    asyncio.run(_put(settings, ongoing, current))
    with TestClient(build()[0]) as client:
        assert client.get("/v1/users/alice/recommendations").json()["items"][0]["track_id"] == catalog.track_ids[7]


def test_ingest_validates_and_produces(api_parts, embedded_stack):
    build, catalog, settings = api_parts
    app, _ = build()
    good = {
        "type": "like",
        "event_id": "api-1",
        "user_id": "bob",
        "track_id": catalog.track_ids[0],
        "ts_ms": time.time_ns() // 1_000_000,
    }
    with TestClient(app) as client:
        assert client.post("/v1/events", json=good).json() == {"accepted": 1, "errors": []}
        mixed = client.post("/v1/events", json=[{**good, "event_id": "api-2"}, {**good, "type": "pause"}])
        assert mixed.status_code == 207 and mixed.json()["errors"][0]["reason"] == "unknown_type"
        bad = client.post("/v1/events", content=b"{nope", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["errors"][0]["reason"] == "malformed_json"
        json_type = {"content-type": "application/json"}
        not_utf8 = client.post("/v1/events", content=b'{"user_id": "b\xffb"}', headers=json_type)
        assert not_utf8.status_code == 400 and not_utf8.json()["errors"][0]["reason"] == "malformed_json"
    messages = read_topic(
        embedded_stack.kafka.bootstrap_servers, settings.topics.events, settings.topics.partitions, expected=2
    )
    assert sorted(decode_event(m.value).event_id for m in messages) == ["api-1", "api-2"]
    assert {m.key for m in messages} == {b"bob"}


def test_auth_token_and_body_limit(api_parts):
    build, _, _ = api_parts
    app, _ = build(auth_token=SecretStr("t0ken"), max_body_bytes=2048)
    with TestClient(app) as client:
        assert client.get("/v1/users/x/recommendations").status_code == 401
        ok = client.get("/v1/users/x/recommendations", headers={"Authorization": "Bearer t0ken"})
        assert ok.status_code == 200
        assert client.get("/healthz").status_code == 200
        big = client.post(
            "/v1/events",
            content=b"[" + b" " * 4096 + b"]",
            headers={"Authorization": "Bearer t0ken", "content-type": "application/json"},
        )
        assert big.status_code == 413
