"""The worker's batch step on plain data: a MemoryStore, the quick model, no network."""

from __future__ import annotations

import asyncio
import time

import msgspec
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from serving.catalog import Catalog
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from streams.metrics import Metrics
from streams.pipeline import Incoming, Processor
from streams.state_codec import encode_state
from streams.stores import MemoryStore


def make(bundle):
    catalog = Catalog.load(bundle)
    scorer = OnnxScorer.load(bundle, device="cpu")
    rescorer = Rescorer(catalog.embeddings, ExactRetriever(catalog.embeddings), scorer, 100, 10)
    metrics = Metrics.create(CollectorRegistry())
    store = MemoryStore()
    return Processor(catalog, rescorer, store, metrics, scorer.provider, clock=lambda: 42), store, metrics


def messages(world, n_users=15, per_user=8, seed=0):
    rng = np.random.default_rng(seed)
    events = world.simulate_sessions(n_users, 1, per_user, rng)
    events.sort(key=lambda e: e["ts_ms"])
    return [
        Incoming(msgspec.json.encode(e), e["user_id"].encode(), "events", hash(e["user_id"]) % 4, i, e["ts_ms"])
        for i, e in enumerate(events)
    ]


def test_batched_equals_one_at_a_time(quick_bundle, world):
    msgs = messages(world)
    batched, store_b, _ = make(quick_bundle)
    naive, store_n, _ = make(quick_bundle)
    out = asyncio.run(batched.process(msgs))
    for m in msgs:
        asyncio.run(naive.process([m]))
    users = sorted({m.key.decode() for m in msgs})
    got_b = asyncio.run(store_b.get_states(users))
    got_n = asyncio.run(store_n.get_states(users))
    assert [encode_state(s) for s in got_b] == [encode_state(s) for s in got_n]
    assert {r.user_id for r in out.recommendations} == set(users)
    for u in users:
        b = asyncio.run(store_b.get_recommendations(u))
        n = asyncio.run(store_n.get_recommendations(u))
        assert [i.track_id for i in b.items] == [i.track_id for i in n.items]
        assert b.event_id == n.event_id and b.generated_ms == 42


def test_bad_input_is_dead_lettered_and_counted(quick_bundle, world):
    proc, store, metrics = make(quick_bundle)
    good = messages(world, n_users=2, per_user=3)
    bad = [
        Incoming(b"{oops", b"u", "events", 0, 100, 1),
        Incoming(None, None, "events", 0, 101, 1),
        Incoming(
            b'{"type":"like","event_id":"e","user_id":"u","track_id":"nope","ts_ms":1763900000000}',
            b"u",
            "events",
            0,
            102,
            1,
        ),
    ]
    out = asyncio.run(proc.process(good[:3] + bad + good[3:]))
    assert [d.reason for d in out.dead_letters] == ["malformed_json", "malformed_json", "unknown_track"]
    assert out.dead_letters[0].value == "{oops" and out.dead_letters[0].offset == 100
    assert len(out.applied_ms) == len(good)
    get = metrics.registry.get_sample_value
    assert get("segue_dead_letters_total", {"reason": "unknown_track"}) == 1
    assert get("segue_events_total", {"type": "like", "outcome": "dead_letter"}) == 1
    assert get("segue_events_total", {"type": "invalid", "outcome": "dead_letter"}) == 2


def test_redelivered_batch_changes_nothing(quick_bundle, world):
    proc, store, metrics = make(quick_bundle)
    msgs = messages(world, n_users=5, per_user=4)
    asyncio.run(proc.process(msgs))
    users = sorted({m.key.decode() for m in msgs})
    before = [encode_state(s) for s in asyncio.run(store.get_states(users))]
    first = {u: asyncio.run(store.get_recommendations(u)) for u in users}
    out = asyncio.run(proc.process(msgs))
    assert out.duplicates == len(msgs) and not out.applied_ms
    assert [encode_state(s) for s in asyncio.run(store.get_states(users))] == before
    # Recommendations are published again (a crash may have lost them), and they are the same.
    assert {r.user_id: [i.track_id for i in r.items] for r in out.recommendations} == {
        u: [i.track_id for i in first[u].items] for u in users
    }


def test_a_model_slower_than_its_slot_falls_back_and_counts_a_miss(quick_bundle, world):
    from serving.faults import SlowScorer

    catalog = Catalog.load(quick_bundle)
    scorer = OnnxScorer.load(quick_bundle, device="cpu")
    slow = Rescorer(catalog.embeddings, ExactRetriever(catalog.embeddings), SlowScorer(scorer, 0.3), 100, 10)
    metrics = Metrics.create(CollectorRegistry())
    proc = Processor(catalog, slow, MemoryStore(), metrics, scorer.provider, rescore_timeout_s=0.02)
    msgs = messages(world, n_users=3, per_user=2)
    started = time.perf_counter()
    out = asyncio.run(proc.process(msgs))
    assert time.perf_counter() - started < 0.25
    assert out.recommendations and all(r.fallback for r in out.recommendations)
    assert all(len(r.items) == 10 for r in out.recommendations)
    assert metrics.registry.get_sample_value("segue_budget_misses_total", {"stage": "rescore"}) == 1
    assert metrics.registry.get_sample_value("segue_recommendations_total", {"kind": "fallback"}) == 3


def test_an_abandoned_model_call_stops_after_the_chunk_in_progress(quick_bundle, world):
    from serving.faults import SlowScorer

    class Counting(SlowScorer):
        calls = 0

        def score(self, *args):
            type(self).calls += 1
            return super().score(*args)

    catalog = Catalog.load(quick_bundle)
    scorer = OnnxScorer.load(quick_bundle, device="cpu")
    slow = Rescorer(catalog.embeddings, ExactRetriever(catalog.embeddings), Counting(scorer, 0.1), 100, 10)
    metrics = Metrics.create(CollectorRegistry())
    # one user per model call, 6 users: six 0.1 s calls if every chunk ran, against a 0.02 s slot per call
    proc = Processor(catalog, slow, MemoryStore(), metrics, scorer.provider, rescore_timeout_s=0.02, model_batch=1)
    out = asyncio.run(proc.process(messages(world, n_users=6, per_user=1)))
    assert len(out.recommendations) == 6 and all(r.fallback for r in out.recommendations)
    proc._model_thread.shutdown(wait=True)  # the abandoned call runs to its end in the model thread
    assert 1 <= Counting.calls <= 2  # the chunk in progress when the slot ran out (and at most one more)


@pytest.mark.parametrize(("slot_users", "fallback"), [(1, False), (6, True)])
def test_the_rescoring_budget_is_one_slot_per_slot_users_not_per_model_call(quick_bundle, world, slot_users, fallback):
    from serving.faults import SlowScorer

    catalog = Catalog.load(quick_bundle)
    scorer = OnnxScorer.load(quick_bundle, device="cpu")
    slow = Rescorer(catalog.embeddings, ExactRetriever(catalog.embeddings), SlowScorer(scorer, 0.15), 100, 10)
    # six users in one model call of 0.15 s: six slots of 0.05 s hold it, one slot does not
    proc = Processor(
        catalog,
        slow,
        MemoryStore(),
        Metrics.create(CollectorRegistry()),
        scorer.provider,
        rescore_timeout_s=0.05,
        model_batch=6,
        slot_users=slot_users,
    )
    out = asyncio.run(proc.process(messages(world, n_users=6, per_user=1)))
    assert len(out.recommendations) == 6
    assert all(r.fallback is fallback for r in out.recommendations)
    proc._model_thread.shutdown(wait=True)


def as_batches(msgs, per_message=5):
    """The same events packed into batch messages (JSON arrays) of one partition, as a gateway would."""
    out = []
    for offset, start in enumerate(range(0, len(msgs), per_message)):
        chunk = msgs[start : start + per_message]
        value = b"[" + b",".join(m.value for m in chunk) + b"]"
        out.append(Incoming(value, None, "events", 0, offset, chunk[-1].timestamp_ms))
    return out


def test_batch_messages_apply_every_event_once(quick_bundle, world):
    single = messages(world, n_users=6, per_user=6, seed=3)
    batched = as_batches(single)
    one_by_one, store_s, _ = make(quick_bundle)
    packed, store_p, metrics = make(quick_bundle)
    asyncio.run(one_by_one.process(single))
    out = asyncio.run(packed.process(batched))
    assert len(out.applied_ms) == len(single) and out.duplicates == 0
    # the batch-size histogram counts events, not the messages that carried them
    assert metrics.registry.get_sample_value("segue_batch_size_events_sum") == len(single) > len(batched)
    users = sorted({m.key.decode() for m in single})
    states_s = asyncio.run(store_s.get_states(users))
    states_p = asyncio.run(store_p.get_states(users))
    for s, p in zip(states_s, states_p, strict=True):
        np.testing.assert_array_equal(s.pos, p.pos)
        assert (s.recent, s.version) == (p.recent, p.version)
    again = asyncio.run(packed.process(batched))  # redelivered: every event is recognised by its position
    assert again.duplicates == len(single) and not again.applied_ms


def test_a_bad_event_in_a_batch_is_dead_lettered_alone(quick_bundle, world):
    proc, _, metrics = make(quick_bundle)
    good = messages(world, n_users=2, per_user=2, seed=4)
    bad = b'{"type":"play","event_id":"x","user_id":"u","track_id":"trk-00001","ts_ms":1}'
    value = b"[" + b",".join([good[0].value, bad, good[1].value, b'"not an event"', good[2].value]) + b"]"
    out = asyncio.run(proc.process([Incoming(value, None, "events", 1, 7, good[2].timestamp_ms)]))
    assert [(d.reason, d.index, d.offset) for d in out.dead_letters] == [
        ("invalid_field", 1, 7),
        ("invalid_field", 3, 7),  # a JSON string where an event object belongs, as for a single message
    ]
    assert out.dead_letters[0].value == bad.decode()
    assert len(out.applied_ms) == 3
    assert metrics.registry.get_sample_value("segue_dead_letters_total", {"reason": "invalid_field"}) == 2


def test_a_broken_batch_is_one_dead_letter(quick_bundle):
    proc, _, _ = make(quick_bundle)
    out = asyncio.run(
        proc.process([Incoming(b'[{"type":', None, "events", 0, 3, 1), Incoming(b"[]", None, "e", 0, 4, 1)])
    )
    assert [(d.reason, d.offset) for d in out.dead_letters] == [("malformed_json", 3), ("malformed_json", 4)]
