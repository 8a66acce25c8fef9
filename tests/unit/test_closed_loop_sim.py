"""The closed loop's listener simulator, its figures and its loop on pure in-memory recommenders."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from loadtests import loop_metrics as lm
from loadtests.closed_loop import (
    HistoryEvent,
    OracleRecommender,
    choose,
    focus_preference,
    history,
    parse_settings,
    run_arm,
)
from loadtests.sim_listener import LIKE, PLAY, SKIP, Mood, SimParams, TasteListener, TrackSpace, react, utility

P = SimParams()


def _records(n_genres: int = 4, per_genre: int = 30) -> list[dict]:
    """A catalog as tracks.json records only (no latent vectors anywhere)."""
    rng = np.random.default_rng(0)
    out = []
    for g in range(n_genres):
        centre = rng.uniform(0.2, 0.8, size=4)
        for j in range(per_genre):
            f = np.clip(centre + rng.normal(0, 0.1, size=4), 0, 1)
            out.append(
                {
                    "track_id": f"trk-{g}-{j}",
                    "artist_id": f"art-{g}-{j % 5}",
                    "genre": f"genre-{g}",
                    "popularity": float(1.0 / (1 + j)),
                    "features": dict(zip(("energy", "valence", "acousticness", "danceability"), f, strict=True)),
                }
            )
    return out


@pytest.fixture(scope="module")
def space() -> TrackSpace:
    return TrackSpace.from_records(_records())


def test_listeners_are_deterministic_and_distinct(space):
    a, b, c = TasteListener.create(space, 1, 0), TasteListener.create(space, 1, 0), TasteListener.create(space, 1, 1)
    assert np.array_equal(a.genre_pref, b.genre_pref) and np.array_equal(a.ideal, b.ideal)
    assert not (np.array_equal(a.genre_pref, c.genre_pref) and np.array_equal(a.ideal, c.ideal))
    assert a.genre_pref.max() == 1.0 and 2 <= len(a.liked) <= 4
    assert set(np.flatnonzero(a.genre_pref)) == set(a.liked.tolist())


def test_the_mood_decides_and_drifts_within_liked_genres(space):
    lst = TasteListener.create(space, 3, 5)
    rng = np.random.default_rng(1)
    mood = Mood.start(space, lst, rng, P)
    focus = np.flatnonzero(space.genre == mood.focus)
    disliked = np.flatnonzero(lst.genre_pref[space.genre] == 0)
    assert utility(space, lst, mood, focus, P).mean() > utility(space, lst, mood, disliked, P).mean() + 0.8
    foci = set()
    for _ in range(300):
        mood.drift(space, lst, rng, P)
        foci.add(mood.focus)
        assert np.all((mood.target >= 0) & (mood.target <= 1))
    assert foci <= set(lst.liked.tolist()) and len(foci) > 1  # the focus moves between liked genres


def test_reactions_follow_utility_and_repeat_the_same_artist_costs(space):
    lst = TasteListener.create(space, 3, 5)
    mood = Mood.start(space, lst, np.random.default_rng(2), P)
    tracks = np.arange(space.n_tracks)
    u = utility(space, lst, mood, tracks, P)
    best, worst = int(np.argmax(u)), int(np.argmin(u))

    def skip_rate(track: int) -> float:
        rng = np.random.default_rng(4)
        kinds = [react(space, lst, Mood(mood.focus, mood.target, mood.anchor), track, rng, P).kind for _ in range(500)]
        return kinds.count(SKIP) / len(kinds)

    assert skip_rate(best) < 0.2 and skip_rate(worst) > 0.9
    repeated = Mood(mood.focus, mood.target, mood.anchor, [int(space.artist[best])] * 3)
    assert utility(space, lst, repeated, np.array([best]), P)[0] < u[best] - 0.9
    r = react(space, lst, Mood(mood.focus, mood.target, mood.anchor), best, np.random.default_rng(9), P)
    assert r.kind in (PLAY, SKIP, LIKE) and 0 < r.played_ms <= r.duration_ms


def test_history_is_the_listeners_own_and_reproducible(space):
    lst = TasteListener.create(space, 2, 1)
    h1 = history(space, lst, 2, 2, 10, 1_800_000_000_000, P)
    h2 = history(space, lst, 2, 2, 10, 1_800_000_000_000, P)
    assert [(e.track, e.reaction.kind) for e in h1] == [(e.track, e.reaction.kind) for e in h2]
    assert len(h1) == 20 and len({e.session_id for e in h1}) == 2
    assert all(e.ts_ms < 1_800_000_000_000 for e in h1)
    liked_share = np.mean([lst.genre_pref[space.genre[e.track]] > 0 for e in h1])
    assert liked_share > 0.8  # a listener mostly finds music it likes on its own


class _Fixed:
    """A recommender that always serves the same ranking."""

    def __init__(self, name: str, ranking: np.ndarray) -> None:
        self.name, self.ranking = name, ranking

    async def begin(self, histories: list[list[HistoryEvent]]) -> None:
        return None

    async def lists(self, seats):
        return [self.ranking for _ in seats]

    async def observe(self, seats, events):
        assert all(e["user_id"].startswith("u") for e in events)


def _run(space, rec, positions=8, n=6):
    listeners = [TasteListener.create(space, 5, i) for i in range(n)]
    hist = [[] for _ in listeners]
    users = [f"u{i}" for i in range(n)]
    return asyncio.run(
        run_arm(
            rec,
            space,
            listeners,
            hist,
            users,
            seed=5,
            positions=positions,
            start_ms=1_800_000_000_000,
            p=P,
            progress=False,
        )
    )


def test_same_listeners_hear_the_same_way_whichever_recommender(space):
    ranking = np.arange(space.n_tracks)[::-1]
    a, b = _run(space, _Fixed("a", ranking)), _run(space, _Fixed("b", ranking))
    assert a.kinds == b.kinds and a.tracks == b.tracks
    assert all(len(set(t)) == len(t) for t in a.tracks)  # nothing heard twice in a session
    assert all(t == ranking[: len(t)].tolist() for t in a.tracks)  # the top unheard track each time


def test_an_exhausted_list_falls_back_to_an_unheard_track(space):
    r = _run(space, _Fixed("short", np.arange(3)), positions=5, n=2)
    assert r.exhausted == 2 * 2 and all(len(set(t)) == 5 for t in r.tracks)


def test_the_oracle_plays_the_best_unheard_track_for_the_mood_it_reads(space):
    oracle = _run(space, OracleRecommender(space, P), positions=10, n=8)
    fixed = _run(space, _Fixed("a", np.arange(space.n_tracks)[::-1]), positions=10, n=8)
    assert all(len(set(t)) == len(t) for t in oracle.tracks)  # it never lists a heard track
    for row, shown in zip(oracle.tracks, oracle.shown, strict=True):
        assert [int(s[0]) for s in shown] == row  # the listener played the oracle's first unheard track
    skips = [sum(k == "skip" for k in row) for row in oracle.kinds]
    assert sum(skips) < sum(k == "skip" for row in fixed.kinds for k in row)
    # the pick is the utility's argmax over unheard tracks, in the mood of that position: replay the first one
    listener = TasteListener.create(space, 5, 0)
    mood = Mood.start(space, listener, np.random.default_rng([5, 7, 0]), P)
    u = utility(space, listener, mood, np.arange(space.n_tracks), P)
    assert oracle.tracks[0][0] == int(np.argmax(u))


def test_focus_preference_follows_the_hidden_focus(space):
    a, b = TasteListener.create(space, 5, 0), TasteListener.create(space, 5, 1)
    fa, fb = [int(a.liked[0]), int(a.liked[1])], [int(b.liked[1]), int(b.liked[0])]
    got = focus_preference([fa, fb], [a, b])
    assert got == pytest.approx(
        [(a.genre_pref[fa[0]] + b.genre_pref[fb[0]]) / 2, (a.genre_pref[fa[1]] + b.genre_pref[fb[1]]) / 2]
    )
    assert a.genre_pref[a.liked[0]] == 1.0  # liked[0] is the favourite: the first of the sorted weights


def test_choose_and_settings():
    shown = np.array([7, 8, 9])
    assert choose(shown, "top", np.random.default_rng(0)) == 7
    picks = [choose(shown, "browse", np.random.default_rng(i)) for i in range(300)]
    assert picks.count(7) > picks.count(8) > picks.count(9) > 0
    assert [(s.exploration, s.diversity) for s in parse_settings("0:0, 0.2:0.5")] == [(0.0, 0.0), (0.2, 0.5)]
    with pytest.raises(ValueError, match="EXPLORATION:DIVERSITY"):
        parse_settings("0.2")
    with pytest.raises(ValueError):
        parse_settings("1.5:0")


def test_rates_reduction_and_bootstrap():
    kinds_a = [["skip", "play", "play", "play"]] * 10  # late skip 0
    kinds_b = [["skip", "skip", "play", "skip"]] * 5 + [["skip", "play", "skip", "play"]] * 5
    boot = lm.bootstrap_indices(10, 500, 1)
    a, b = lm.indicator(kinds_a, "skip"), lm.indicator(kinds_b, "skip")
    pos = lm.rate_by_position(b, boot)
    assert pos["mean"] == [1.0, 0.5, 0.5, 0.5] and pos["lo"][0] == 1.0 and pos["lo"][1] < 0.5 < pos["hi"][1]
    red = lm.relative_reduction(a, b, boot, 2)
    assert red["reduction"] == pytest.approx(1.0) and red["theirs"] == pytest.approx(0.5)
    red2 = lm.relative_reduction(b, b, boot, 1)
    assert red2["reduction"] == 0 and red2["lo"] == 0 and red2["hi"] == 0  # paired: identical arms, no spread
    head = lm.headline({"segue": kinds_a, "static": kinds_b, "random": kinds_b}, boot, 2)
    assert head["segue_trend"]["difference"] == pytest.approx(1 / 3)
    assert head["segue_vs_static"]["lo"] == pytest.approx(1.0)


def test_list_quality_and_reaction():
    emb = np.eye(4, dtype=np.float32)
    pop = np.array([1.0, 0.5, 0.25, 1.0])
    # two listeners, two positions: position 0 lists {0, 1} and {1, 2} (3 of 4 tracks), position 1 {0, 1} (2 of 4)
    q = lm.list_quality([[np.array([0, 1]), np.array([0, 1])], [np.array([1, 2]), np.array([1, 0])]], emb, pop, 4)
    assert q["coverage"] == pytest.approx((0.75 + 0.5) / 2) and q["intra_list_diversity"] == pytest.approx(1.0)
    assert q["novelty"] == pytest.approx((0 + 1 + 0 + 1 + 1 + 2 + 1 + 0) / 8) and q["lists"] == 4
    same = lm.list_quality([[np.array([0, 3])]], np.ones((4, 4), np.float32) / 2, pop, 4)
    assert same["intra_list_diversity"] == pytest.approx(0.0)
    served = [[np.array([0, 1, 2]), np.array([0, 2, 3]), np.array([0, 3, 1])]]
    r = lm.reaction([["skip", "play", "play"]], [[0, 2, 1]], served, 2)
    assert r["skipped_relisted"] == 1.0 and r["skips"] == 1
    # after the skip: top 2 {0, 2} against {1} (the previous top 2 less the skipped 0): 2 new; after the play: 1
    assert r["turnover_after_skip"] == 2.0 and r["turnover_after_play"] == 1.0


def test_trend_windows_and_slopes():
    # 20 listeners, 6 positions: a falling rate (1, 1, 0.5, 0.5, 0, 0 over listeners) and a flat one
    falling = [["skip", "skip", "skip", "play", "play", "play"]] * 10 + [
        ["skip", "skip", "play", "skip", "play", "play"]
    ] * 10
    flat = [["skip", "play"] * 3] * 20
    boot = lm.bootstrap_indices(20, 400, 3)
    x = lm.indicator(falling, "skip")
    t = lm.trend(x, boot, 4)
    assert t["windows"] == {"1": 1.0, "2-4": pytest.approx(2 / 3), "5-6": 0.0}
    assert t["first_minus_late"]["difference"] == pytest.approx(2.5 / 3)
    assert t["early_minus_late"]["difference"] == pytest.approx(2 / 3)
    # least squares over positions 0..5 of the mean rate (1, 1, .5, .5, 0, 0): -0.2286 per position
    assert t["slope"]["per_10"] == pytest.approx(-2.2857, abs=1e-3) and t["slope"]["hi"] < 0
    assert t["slope_from_2"]["per_10"] == pytest.approx(10 * np.polyfit(np.arange(5), x[:, 1:].mean(0), 1)[0])
    f = lm.trend(lm.indicator(flat, "skip"), boot, 4)
    assert f["first_minus_late"]["lo"] == f["first_minus_late"]["hi"]  # the same for every listener: no spread
    assert f["slope"]["per_10"] == pytest.approx(10 * np.polyfit(np.arange(6), [1, 0] * 3, 1)[0])
    head = lm.headline({"segue": falling, "static": flat}, boot, 4)
    assert set(head["trends"]) == {"segue", "static"}
    assert head["segue_minus_static_slope"]["per_10"] == pytest.approx(t["slope"]["per_10"] - f["slope"]["per_10"])
    assert "segue_minus_oracle_slope" not in head
    head = lm.headline({"segue": falling, "oracle": flat}, boot, 4)
    assert head["segue_minus_oracle_slope"]["per_10"] == pytest.approx(t["slope"]["per_10"] - f["slope"]["per_10"])


def test_mood_breakdown_splits_skips_by_the_hidden_focus():
    genre = np.array([0, 0, 1, 1, 2, 2])  # track -> genre
    # listener 0: focus 0 throughout, its last pick (track 4, genre 2) off focus; listener 1: focus 1, then 2 from
    # position 3 on, its third pick (genre 1) off focus
    kinds = [["play", "play", "play", "skip"], ["play", "skip", "skip", "play"]]
    tracks = [[0, 1, 0, 4], [2, 3, 2, 5]]
    foci = [[0, 0, 0, 0], [1, 1, 2, 2]]
    m = lm.mood_breakdown(kinds, tracks, foci, genre, [{0}, {1}], late_from=2)
    assert m["windows"]["1-2"]["switched"] == 0.0 and m["windows"]["3-4"]["switched"] == 0.5
    assert m["windows"]["3-4"]["in_focus"] == 0.5
    assert m["windows"]["3-4"]["focus_unknown"] == 0.5 and m["windows"]["3-4"]["skip_focus_unknown"] == 0.5
    assert m["windows"]["3-4"]["skip_focus_known"] == 0.5
    # by mood state: both listeners' first focus, known, at positions 1-2; at 3-4 listener 0 still there (a play
    # and a skip), listener 1 moved to a genre its history does not show
    assert m["windows"]["1-2"]["unchanged"] == 1.0 and m["windows"]["1-2"]["skip_unchanged"] == 0.25
    assert m["windows"]["3-4"]["unchanged"] == 0.5 and m["windows"]["3-4"]["skip_unchanged"] == 0.5
    assert m["windows"]["3-4"]["changed_known"] == 0.0 and np.isnan(m["windows"]["3-4"]["skip_changed_known"])
    assert m["in_focus"] == {"skip": pytest.approx(1 / 6), "n": 6} and m["off_focus"] == {"skip": 1.0, "n": 2}
    assert m["since_switch"]["0"] == {"skip": 1.0, "n": 1} and m["since_switch"]["1"] == {"skip": 0.0, "n": 1}
    assert m["since_switch"]["never"]["n"] == 6 and m["since_switch"]["5+"]["n"] == 0
