"""Rules, preferences and what the API does to the lists it serves, against a real Redis (in-process app)."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from serving.api import ApiDeps, create_api
from serving.catalog import Catalog
from serving.editorial_api import editorial_from
from serving.explain import Explainer
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from serving.settings import ApiSettings
from streams.metrics import Metrics
from streams.records import Like, Play
from streams.session import SessionState, apply_event
from streams.settings import RedisSettings, ScoringSettings
from streams.stores import RedisStore

AUTH = {"Authorization": "Bearer s3cret"}


JSON = {"content-type": "application/json"}


@pytest.fixture
def app_and_catalog(embedded_stack, redis_prefix, quick_bundle):
    settings = ApiSettings(
        redis=RedisSettings(url=embedded_stack.redis.url, key_prefix=redis_prefix),
        scoring=ScoringSettings(model_dir=quick_bundle, device="cpu"),
        ingest=False,
        auth_token=SecretStr("s3cret"),
    )
    catalog = Catalog.load(quick_bundle)
    scorer = OnnxScorer.load(quick_bundle, device="cpu")
    rescorer = Rescorer(
        catalog.embeddings,
        ExactRetriever(catalog.embeddings),
        scorer,
        200,
        20,
        explainer=Explainer(scorer, catalog.embeddings),
    )
    store = RedisStore.connect(settings.redis)
    editorial = editorial_from(settings.redis, store, catalog, rescorer, scorer.provider, rules_refresh_s=0.0)
    app = create_api(
        ApiDeps(settings, store, catalog, rescorer, Metrics.create(), scorer.provider, editorial=editorial)
    )
    return app, catalog, settings


def _put_state(settings, user, state):
    async def go():
        store = RedisStore.connect(settings.redis)
        await store.put_states({user: state})
        await store.close()

    asyncio.run(go())


def _session(catalog, user, tracks):
    state = SessionState.empty(catalog.dim)
    t0 = time.time_ns() // 1_000_000 - 60_000
    for j, t in enumerate(tracks):
        common = {"event_id": f"{user}-{j}", "user_id": user, "track_id": catalog.track_ids[t], "ts_ms": t0 + j * 1000}
        event = Like(**common) if j % 2 else Play(**common, played_ms=150_000, duration_ms=200_000)
        state = apply_event(state, event, t, catalog.embeddings[t])
    return state


def test_rules_endpoints_add_list_remove_and_audit(app_and_catalog):
    app, catalog, _ = app_and_catalog
    artist = catalog.artist_of[0]
    with TestClient(app) as client:
        assert client.get("/v1/rules").status_code == 401  # token-protected like the rest
        body = {"action": "block", "target": "artist", "value": artist, "ttl_s": 3600, "author": "ana", "why": "test"}
        added = client.post("/v1/rules", json=body, headers=AUTH)
        assert added.status_code == 201, added.text
        rule = added.json()
        assert rule["active"] and rule["value"] == artist and rule["v"] == 1
        pin = {"action": "pin", "target": "track", "value": catalog.track_ids[1], "position": 2, "author": "ana"}
        assert client.post("/v1/rules", json={**pin, "expires_ms": 1}, headers=AUTH).status_code == 422  # past
        bad_artist = client.post("/v1/rules", json={**body, "value": "no-such-artist"}, headers=AUTH)
        assert bad_artist.status_code == 422 and "not in the catalog" in bad_artist.json()["detail"]
        assert client.post("/v1/rules", json={**pin, "target": "artist", "ttl_s": 60}, headers=AUTH).status_code == 422
        assert client.post("/v1/rules", json={**body, "action": "mute"}, headers=AUTH).status_code == 422
        not_utf8 = client.post("/v1/rules", content=b'{"action": "bl\xffock"}', headers={**AUTH, **JSON})
        assert not_utf8.status_code == 400  # FastAPI: the body cannot be parsed

        listed = client.get("/v1/rules", headers=AUTH).json()["rules"]
        assert [r["rule_id"] for r in listed] == [rule["rule_id"]]
        assert client.delete(f"/v1/rules/{rule['rule_id']}", headers=AUTH).status_code == 422  # who removes it?
        gone = client.delete(f"/v1/rules/{rule['rule_id']}", params={"actor": "bo", "why": "done"}, headers=AUTH)
        assert gone.status_code == 200 and gone.json()["rule_id"] == rule["rule_id"]
        assert client.delete(f"/v1/rules/{rule['rule_id']}", params={"actor": "bo"}, headers=AUTH).status_code == 404
        assert client.get("/v1/rules", headers=AUTH).json()["rules"] == []
        log = client.get("/v1/rules/audit", headers=AUTH).json()["entries"]
        assert [(e["change"], e["actor"], e["why"]) for e in log] == [("remove", "bo", "done"), ("add", "ana", "test")]


def test_blocks_apply_on_read_and_reasons_are_rendered(app_and_catalog):
    app, catalog, settings = app_and_catalog
    _put_state(settings, "ann", _session(catalog, "ann", [3, 40, 77]))
    with TestClient(app) as client:
        first = client.get("/v1/users/ann/recommendations", headers=AUTH).json()
        assert len(first["items"]) == 20 and not first["fallback"]
        assert all(i["reason"]["text"] for i in first["items"])  # every item explained, sentence rendered
        cited = [i["reason"] for i in first["items"] if i["reason"].get("track_id")]
        assert cited and all(r["track_id"] in {catalog.track_ids[t] for t in (3, 40, 77)} for r in cited)
        victim = first["items"][0]["track_id"]
        artist = catalog.artist_of[catalog.index[victim]]
        rule = {"action": "block", "target": "artist", "value": artist, "ttl_s": 600, "author": "ana"}
        assert client.post("/v1/rules", json=rule, headers=AUTH).status_code == 201
        second = client.get("/v1/users/ann/recommendations", headers=AUTH).json()  # the cached list, filtered
        assert all(catalog.artist_of[catalog.index[i["track_id"]]] != artist for i in second["items"])
        assert [i["rank"] for i in second["items"]] == list(range(1, len(second["items"]) + 1))


def test_preferences_endpoints_and_the_per_request_knob(app_and_catalog):
    app, catalog, settings = app_and_catalog
    _put_state(settings, "bea", _session(catalog, "bea", [5, 9, 11, 200]))
    with TestClient(app) as client:
        assert client.get("/v1/users/bea/preferences", headers=AUTH).status_code == 404
        assert client.put("/v1/users/bea/preferences", json={"exploration": 1.5}, headers=AUTH).status_code == 422
        put = client.put("/v1/users/bea/preferences", json={"exploration": 0.25, "diversity": 0.5}, headers=AUTH)
        assert put.json() == {"user_id": "bea", "exploration": 0.25, "diversity": 0.5}
        assert client.get("/v1/users/bea/preferences", headers=AUTH).json()["diversity"] == 0.5

        plain = client.get("/v1/users/bea/recommendations", headers=AUTH).json()
        explored = client.get("/v1/users/bea/recommendations?exploration=0.5", headers=AUTH).json()
        codes = [i["reason"]["code"] for i in explored["items"]]
        assert codes.count("exploration") == 10 and len(explored["items"]) == 20
        assert [i["track_id"] for i in plain["items"]] != [i["track_id"] for i in explored["items"]]
        # The per-request answer is not cached: the stored list is unchanged.
        again = client.get("/v1/users/bea/recommendations", headers=AUTH).json()
        assert [i["track_id"] for i in again["items"]] == [i["track_id"] for i in plain["items"]]
        assert client.get("/v1/users/bea/recommendations?diversity=2", headers=AUTH).status_code == 422
        cold = client.get("/v1/users/newbie/recommendations?exploration=0.5&diversity=0.3", headers=AUTH).json()
        assert [i["reason"]["code"] for i in cold["items"]].count("exploration") == 10

        assert client.delete("/v1/users/bea/preferences", headers=AUTH).json()["deleted"] is True
        assert client.get("/v1/users/bea/preferences", headers=AUTH).status_code == 404


def test_an_on_demand_list_follows_the_rules_in_force(app_and_catalog):
    """A list the API ranks itself (a listener with a state and no list) is ranked as the worker ranks: a pin
    in force is at its position."""
    app, catalog, settings = app_and_catalog
    _put_state(settings, "bea", _session(catalog, "bea", [5, 50, 90]))
    pinned = catalog.track_ids[123]
    rule = {"action": "pin", "target": "track", "value": pinned, "position": 3, "ttl_s": 600, "author": "ana"}
    with TestClient(app) as client:
        assert client.post("/v1/rules", json=rule, headers=AUTH).status_code == 201
        items = client.get("/v1/users/bea/recommendations", headers=AUTH).json()["items"]
        assert items[2]["track_id"] == pinned
