"""The worker's batch step with the session bias: steers read once per batch and applied at ranking only,
the cold-start prior used for a listener's first events, and a steer store outage tolerated."""

from __future__ import annotations

import asyncio

import msgspec
import numpy as np
from prometheus_client import CollectorRegistry

from serving.bias import SessionBias
from serving.catalog import Catalog
from serving.cold_start import read_cold_start
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from serving.steering import FEATURES, FeatureMap, Steer, catalog_features
from streams.errors import StoreUnavailable
from streams.metrics import Metrics
from streams.pipeline import Incoming, Processor
from streams.state_codec import encode_state
from streams.steer_store import MemorySteerStore
from streams.stores import MemoryStore

NOW = 1_800_000_000_000


class CountingSteers(MemorySteerStore):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.calls = 0
        self.index_calls = 0
        self.fail = fail

    async def get_steers(self, user_ids, now_ms):
        self.calls += 1
        if self.fail:
            raise StoreUnavailable("Redis get_steers failed: connection refused")
        return await super().get_steers(user_ids, now_ms)

    async def steered_users(self, now_ms):
        self.index_calls += 1
        return await super().steered_users(now_ms)


def processor(bundle, bias):
    catalog = Catalog.load(bundle)
    scorer = OnnxScorer.load(bundle, device="cpu")
    rescorer = Rescorer(catalog.embeddings, ExactRetriever(catalog.embeddings), scorer, 100, 10)
    store = MemoryStore()
    proc = Processor(
        catalog, rescorer, store, Metrics.create(CollectorRegistry()), scorer.provider, clock=lambda: NOW, bias=bias
    )
    return proc, store, catalog


def batch(world, n_users=12, per_user=5):
    events = world.simulate_sessions(n_users, 1, per_user, np.random.default_rng(1))
    events.sort(key=lambda e: e["ts_ms"])
    return [
        Incoming(msgspec.json.encode(e), e["user_id"].encode(), "events", 0, i, e["ts_ms"])
        for i, e in enumerate(events)
    ]


def mean_energy(store, catalog, features, users):
    recs = [asyncio.run(store.get_recommendations(u)) for u in users]
    idx = [catalog.index[i.track_id] for r in recs for i in r.items]
    return float(features[idx, FEATURES.index("energy")].mean())


def test_steers_are_read_once_per_batch_and_move_only_the_ranking(quick_bundle, world):
    msgs = batch(world)
    users = sorted({m.key.decode() for m in msgs})
    features = catalog_features(quick_bundle)
    plain, plain_store, catalog = processor(quick_bundle, None)
    asyncio.run(plain.process(msgs))

    steers = CountingSteers()
    fmap = FeatureMap.fit(features, catalog.embeddings)
    up = fmap.vector(np.array([1.0, 0.0, 0.0, 0.0], np.float32))
    for u in users:
        s = Steer(
            prompt="energetic",
            strength=2.0,
            expires_ms=NOW + 60_000,
            model_version=catalog.model_version,
            vector=up.tobytes(),
        )
        asyncio.run(steers.put_steer(u, s, NOW))
    bias = SessionBias(None, steers, catalog.model_version, index_refresh_ms=1000)
    steered, steered_store, _ = processor(quick_bundle, bias)
    asyncio.run(steered.process(msgs))
    assert (steers.index_calls, steers.calls) == (1, 1)  # one index read, one read for the whole batch
    # Same stored states (a steer is a view for ranking), different and more energetic recommendations.
    a = asyncio.run(plain_store.get_states(users))
    b = asyncio.run(steered_store.get_states(users))
    assert [encode_state(s) for s in a] == [encode_state(s) for s in b]
    assert (
        mean_energy(steered_store, catalog, features, users) > mean_energy(plain_store, catalog, features, users) + 0.02
    )


def test_a_batch_without_steered_users_reads_no_steers(quick_bundle, world):
    msgs = batch(world, n_users=4)
    steers = CountingSteers()
    vec = np.ones(32, np.float32).tobytes()
    asyncio.run(
        steers.put_steer(
            "someone-else",
            Steer(prompt="calm", strength=1.0, expires_ms=NOW + 5_000, model_version="", vector=vec),
            NOW,
        )
    )
    now = [NOW]
    catalog = Catalog.load(quick_bundle)
    scorer = OnnxScorer.load(quick_bundle, device="cpu")
    rescorer = Rescorer(catalog.embeddings, ExactRetriever(catalog.embeddings), scorer, 100, 10)
    bias = SessionBias(None, steers, catalog.model_version, index_refresh_ms=1000)
    proc = Processor(
        catalog,
        rescorer,
        MemoryStore(),
        Metrics.create(CollectorRegistry()),
        scorer.provider,
        clock=lambda: now[0],
        bias=bias,
    )
    for t in (NOW, NOW + 500, NOW + 1500):
        now[0] = t
        asyncio.run(proc.process(msgs))
    # The index is read on the first batch and again once it is a second old; no steer is ever read.
    assert (steers.index_calls, steers.calls) == (2, 0)


def test_a_steer_store_outage_does_not_stop_recommendations(quick_bundle, world):
    msgs = batch(world, n_users=3)
    proc, store, catalog = processor(quick_bundle, SessionBias(None, CountingSteers(fail=True)))
    out = asyncio.run(proc.process(msgs))
    assert len(out.recommendations) == 3 and all(len(r.items) == 10 for r in out.recommendations)


def test_first_events_are_ranked_with_the_context_prior(quick_bundle, world):
    msgs = batch(world, n_users=6, per_user=1)
    cold = read_cold_start(quick_bundle)
    plain, plain_store, catalog = processor(quick_bundle, None)
    primed, primed_store, _ = processor(quick_bundle, SessionBias(cold, None))
    asyncio.run(plain.process(msgs))
    asyncio.run(primed.process(msgs))
    users = sorted({m.key.decode() for m in msgs})
    differ = 0
    for u in users:
        x = [i.track_id for i in asyncio.run(plain_store.get_recommendations(u)).items]
        y = [i.track_id for i in asyncio.run(primed_store.get_recommendations(u)).items]
        differ += x != y
    assert differ >= len(users) // 2  # the prior fills in the taste one event cannot give
