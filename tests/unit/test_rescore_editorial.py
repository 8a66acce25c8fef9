"""Rules and the knob inside ``Rescorer``: neutral means unchanged, blocks keep the list full, boosts lift,
pins land at their position, and the cheap fallback ranking honours blocks and pins too."""

from __future__ import annotations

import numpy as np
import pytest

from serving.catalog import Catalog
from serving.diversity import Preferences
from serving.explain import EDITORIAL_BOOST, REASON_CODES, Explainer
from serving.rescore import Rescorer, popularity_ranking
from serving.retrieval import ExactRetriever
from serving.rules import ActiveRules, Rule, compile_rules
from serving.scorer import OnnxScorer
from streams.records import Play
from streams.session import SessionState, apply_event

T0 = 1_763_900_000_000


@pytest.fixture(scope="module")
def setup(quick_bundle):
    catalog = Catalog.load(quick_bundle)
    scorer = OnnxScorer.load(quick_bundle, device="cpu")
    rng = np.random.default_rng(9)
    states = []
    for u in range(24):
        state = SessionState.empty(catalog.dim)
        for j, t in enumerate(rng.choice(len(catalog), size=5, replace=False)):
            e = Play(event_id=f"{u}-{j}", user_id=f"u{u}", track_id=catalog.track_ids[t], ts_ms=T0 + j, played_ms=9_000)
            state = apply_event(state, e, int(t), catalog.embeddings[t])
        states.append(state)
    return catalog, scorer, states


def _rule(rule_id, **kw):
    return Rule(rule_id=rule_id, expires_ms=T0 + 10**9, created_ms=T0, author="ed", **kw)


def test_neutral_knob_and_no_rules_leave_the_ranking_exactly_as_it_was(setup):
    catalog, scorer, states = setup
    r = Rescorer(catalog.embeddings, ExactRetriever(catalog.embeddings), scorer)
    plain = r.rank(states, [T0] * len(states))
    same = r.rank(states, [T0] * len(states), prefs=[Preferences()] * len(states), rules=ActiveRules.none(len(catalog)))
    for a, b in zip(plain, same, strict=True):
        assert a.indices.tolist() == b.indices.tolist() and np.array_equal(a.scores, b.scores)


def test_blocks_keep_the_list_full_and_boosts_lift(setup):
    catalog, scorer, states = setup
    r = Rescorer(
        catalog.embeddings, ExactRetriever(catalog.embeddings), scorer, explainer=Explainer(scorer, catalog.embeddings)
    )
    plain = r.rank(states, [T0] * len(states))
    top_artists = {catalog.artist_of[int(p.indices[0])] for p in plain}
    # Boost a low-ranked track of user 0 (of an artist not blocked) by far more than the score spread: it leads.
    rank, lifted = next(
        (k, int(i)) for k, i in enumerate(plain[0].indices) if k >= 10 and catalog.artist_of[int(i)] not in top_artists
    )
    rules = [_rule(f"b{i}", action="block", target="artist", value=a) for i, a in enumerate(sorted(top_artists))]
    rules.append(_rule("up", action="boost", target="track", value=catalog.track_ids[lifted], weight=100.0))
    active = compile_rules(rules, catalog.index, catalog.artist_of, T0)
    ranked = r.rank(states, [T0] * len(states), rules=active)
    for p in ranked:
        assert len(p.indices) == r.n_recs
        assert not any(catalog.artist_of[int(i)] in top_artists for i in p.indices)
    assert int(ranked[0].indices[0]) == lifted
    assert REASON_CODES[ranked[0].reasons.codes[0]] == EDITORIAL_BOOST
    assert ranked[0].scores[0] == pytest.approx(plain[0].scores[rank] + 100.0, abs=1e-3)


def test_the_fallback_and_popularity_rankings_honour_blocks_and_pins(setup):
    catalog, scorer, states = setup
    r = Rescorer(catalog.embeddings, ExactRetriever(catalog.embeddings), scorer)
    plain = r.rank_fallback(states)
    blocked = catalog.artist_of[int(plain[0].indices[0])]
    pinned = next(i for i in range(len(catalog)) if catalog.artist_of[i] != blocked and i not in states[0].recent)
    rules = compile_rules(
        [
            _rule("b", action="block", target="artist", value=blocked),
            _rule("p", action="pin", target="track", value=catalog.track_ids[pinned], position=4),
        ],
        catalog.index,
        catalog.artist_of,
        T0,
    )
    for ranking in r.rank_fallback(states, rules)[:1] + [popularity_ranking(catalog.popularity, 20, rules)]:
        assert len(ranking.indices) == 20 and int(ranking.indices[3]) == pinned
        assert not any(catalog.artist_of[int(i)] == blocked for i in ranking.indices)
