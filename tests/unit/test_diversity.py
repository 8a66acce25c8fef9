import asyncio

import numpy as np
import pytest

from serving.diversity import (
    Preferences,
    decode_preferences,
    encode_preferences,
    exploration_slots,
    mmr_order,
    rerank,
    seed_for,
)
from serving.prefs_store import MemoryPreferencesStore
from tests.prefs_store_suite import check_preferences_store


def _candidates(k=200, d=16, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(k, d)).astype(np.float32)
    return rng.normal(size=k).astype(np.float32), v / np.linalg.norm(v, axis=1, keepdims=True)


def test_neutral_preferences_leave_the_score_order_exactly():
    scores, vecs = _candidates()
    scores[[3, 50]] = -np.inf
    picks, explored = rerank(scores, vecs, 20, Preferences())
    assert picks.tolist() == np.argsort(-scores, kind="stable")[:20].tolist()
    assert not explored.any()


def test_ties_keep_the_stable_order():
    scores = np.zeros(30, np.float32)
    picks, _ = rerank(scores, np.eye(30, dtype=np.float32), 10, Preferences())
    assert picks.tolist() == list(range(10))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "x"])
def test_preferences_are_validated(bad):
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        Preferences(exploration=bad)


def test_preferences_format_v1_round_trips_and_refuses_other_versions():
    p = Preferences(0.25, 0.75)
    assert encode_preferences(p) == b'{"v":1,"exploration":0.25,"diversity":0.75}'
    assert decode_preferences(encode_preferences(p)) == p
    with pytest.raises(ValueError, match="v2"):
        decode_preferences(b'{"v":2,"exploration":0,"diversity":0}')
    with pytest.raises(ValueError, match="not a preferences record"):
        decode_preferences(b"[]")


def _mean_pairwise_cosine(vecs):
    sim = vecs @ vecs.T
    n = len(vecs)
    return (sim.sum() - n) / (n * (n - 1))


def test_diversity_strength_lowers_similarity_within_the_list_monotonically():
    # Candidates in tight clusters, the best scores all in one cluster: MMR must spread the list out.
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(8, 16))
    vecs = np.concatenate([c + 0.1 * rng.normal(size=(25, 16)) for c in centres]).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    scores = (vecs @ centres[0] / np.linalg.norm(centres[0])).astype(np.float32)
    sims = []
    for strength in (0.0, 0.3, 0.7):
        picks, _ = rerank(scores, vecs, 20, Preferences(diversity=strength))
        assert len(set(picks.tolist())) == 20 and picks[0] == int(np.argmax(scores))
        sims.append(_mean_pairwise_cosine(vecs[picks]))
    assert sims[0] > sims[1] > sims[2]


def test_mmr_never_picks_ineligible_candidates():
    scores, vecs = _candidates(k=30)
    scores[:25] = -np.inf
    picks = mmr_order(scores, vecs, 20, 0.5)
    assert sorted(picks.tolist()) == list(range(25, 30))


def test_exploration_replaces_its_share_with_tail_candidates_at_spread_slots():
    scores, vecs = _candidates()
    plain = np.argsort(-scores, kind="stable")[:20]
    picks, explored = rerank(scores, vecs, 20, Preferences(exploration=0.25), np.random.default_rng(3))
    assert explored.sum() == 5 and np.flatnonzero(explored).tolist() == exploration_slots(20, 0.25)
    assert not set(picks[explored].tolist()) & set(plain.tolist())  # from outside the top 20
    assert picks[~explored].tolist() == plain[:15].tolist()  # the rest keep their order, the last 5 drop off
    assert len(set(picks.tolist())) == 20


def test_exploratory_picks_are_seeded_by_user_and_minute():
    scores, vecs = _candidates()
    t = 1_763_900_000_000
    t = t - t % 60_000  # the start of a minute

    def picks(user, now):
        return rerank(scores, vecs, 20, Preferences(0.5), np.random.default_rng(seed_for(user, now)))[0].tolist()

    assert picks("a", t) == picks("a", t + 59_000)
    assert picks("a", t) != picks("b", t)
    assert picks("a", t) != picks("a", t + 60_000)


def test_memory_preferences_store_passes_the_suite():
    asyncio.run(check_preferences_store(MemoryPreferencesStore(), ["alice", "bob", "carol"]))
