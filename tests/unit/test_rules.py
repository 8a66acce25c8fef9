import asyncio

import numpy as np
import pytest

from serving.rules import MAX_PINS, ActiveRules, compile_rules, place_pins, validate_rule
from serving.rules_store import MemoryRulesStore, RulesCache
from tests.rules_store_suite import AUDIT_MAX, check_rules_store, clock_from, rule

TRACKS = [f"t{i}" for i in range(10)]
INDEX = {t: i for i, t in enumerate(TRACKS)}
ARTISTS = ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"]


def test_compile_blocks_boosts_and_pins_only_active_rules():
    rules = [
        rule("1", value="b"),  # block artist b: tracks 2, 3
        rule("2", target="track", value="t7"),
        rule("3", action="boost", target="artist", value="c", weight=0.5),
        rule("4", action="boost", target="track", value="t4", weight=0.25),
        rule("5", action="pin", target="track", value="t9", position=1),
        rule("6", action="pin", target="track", value="t3", position=2),  # blocked: a block wins over a pin
        rule("7", target="track", value="t0", expires_ms=500),  # expired at 500
        rule("8", target="track", value="nope"),  # not in the catalog: ignored
    ]
    active = compile_rules(rules, INDEX, ARTISTS, now_ms=500)
    assert np.flatnonzero(active.blocked).tolist() == [2, 3, 7]
    assert active.boost.tolist() == [0, 0, 0, 0, 0.75, 0.5, 0, 0, 0, 0]
    assert active.pins == ((0, 9),)
    assert active.valid_until_ms == 10**13 and active.count == 7
    before = compile_rules(rules, INDEX, ARTISTS, now_ms=499)
    assert before.blocked[0] and before.valid_until_ms == 500
    assert compile_rules([], INDEX, ARTISTS, 0).empty


def test_the_newest_pin_of_a_track_wins_and_pins_are_capped():
    rules = [
        rule("1", created_ms=1, action="pin", target="track", value="t1", position=5),
        rule("2", created_ms=2, action="pin", target="track", value="t1", position=2),
    ]
    assert compile_rules(rules, INDEX, ARTISTS, 10).pins == ((1, 1),)
    many = [rule(f"p{i}", action="pin", target="track", value=f"x{i}", position=1) for i in range(MAX_PINS + 5)]
    index = {f"x{i}": i for i in range(MAX_PINS + 5)}
    assert len(compile_rules(many, index, ["z"] * len(index), 10).pins) == MAX_PINS


def test_place_pins_moves_inserts_skips_heard_tracks_and_keeps_the_length():
    ranked = [10, 11, 12, 13, 14]
    assert place_pins(ranked, [(0, 13)], 5, set()) == ([13, 10, 11, 12, 14], {13})
    assert place_pins(ranked, [(1, 99)], 5, set()) == ([10, 99, 11, 12, 13], {99})
    assert place_pins(ranked, [(1, 99)], 5, {99}) == (ranked, set())
    assert place_pins(ranked, [(40, 99)], 5, set()) == ([10, 11, 12, 13, 14], set())  # past the end: cut off
    assert place_pins([10, 11], [(40, 99)], 5, set()) == ([10, 11, 99], {99})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"action": "pin", "target": "artist", "position": 1}, "tracks only"),
        ({"action": "pin", "target": "track", "position": 0}, "position"),
        ({"expires_ms": 50}, "future expiry"),
        ({"author": ""}, "must not be empty"),
        ({"action": "boost", "weight": float("inf")}, "finite"),
    ],
)
def test_invalid_rules_are_refused_with_what_to_fix(fields, message):
    with pytest.raises(ValueError, match=message):
        validate_rule(rule("r", **fields))


def test_catalog_ids_are_checked_when_given():
    with pytest.raises(ValueError, match="not in the catalog"):
        validate_rule(rule("r", target="track", value="zz"), set(TRACKS), set(ARTISTS))
    assert validate_rule(rule("r", value="a"), set(TRACKS), set(ARTISTS)).value == "a"


def test_memory_rules_store_passes_the_suite():
    asyncio.run(check_rules_store(MemoryRulesStore(clock=clock_from(), audit_max=AUDIT_MAX)))


def test_rules_cache_refreshes_on_its_period_and_honours_expiry_at_once():
    async def go():
        store = MemoryRulesStore()
        now = [0.0]
        cache = RulesCache(store, INDEX, ARTISTS, refresh_s=5.0, monotonic=lambda: now[0])
        assert (await cache.current(1_000)).empty
        await store.add(rule("1", target="track", value="t1", expires_ms=3_000), "ed")
        assert (await cache.current(1_000)).empty  # not reloaded before the period is over
        now[0] = 5.0
        assert (await cache.current(1_000)).blocked[1]
        assert not (await cache.current(3_000)).blocked[1]  # expired: recompiled without a reload
        return True

    assert asyncio.run(go())


def test_no_rules_is_empty():
    none = ActiveRules.none(4)
    assert none.empty and not none.blocked.any() and none.pins == ()
