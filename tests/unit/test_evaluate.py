"""Offline evaluation on real-format data: preparation, metrics, bootstrap, and ``--test DIR`` end to end.

Everything runs on a tiny generated dataset written in the Spotify-export file format into tmp_path.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from models_onnx.metrics import (
    Bootstrap,
    average_accuracy,
    ci,
    hit,
    ndcg,
    rank_of,
    reciprocal_rank,
    session_average_accuracy,
    weighted_auc,
)
from models_onnx.realdata import SESSION_GAP_MS, load_plays, time_fold, user_fold

T0 = int(datetime(2024, 3, 1, 8, 0, tzinfo=UTC).timestamp() * 1000)


def _fmt(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def write_dataset(root: Path, n_users: int, seed: int, prefix: str = "u", n_tracks: int = 80, days: int = 20) -> Path:
    """A tiny dataset in the shared-data format: listeners who prefer one 'genre' block of tracks."""
    rng = np.random.default_rng(seed)
    rows = ["user_id,end_time,ms_played,track_id"]
    for u in range(n_users):
        block = rng.integers(0, 4)
        t = T0 + int(rng.integers(0, 3_600_000))
        for _day in range(days):
            for _s in range(2):
                track = int(rng.integers(0, n_tracks))
                for _ in range(int(rng.integers(3, 9))):
                    liked = track // (n_tracks // 4) == block
                    ms = int(rng.integers(120_000, 240_000)) if liked or rng.random() < 0.3 else 9_000
                    t += ms + 60_000
                    rows.append(f"{prefix}{u:03d},{_fmt(t)},{ms},t{track:03d}")
                    step = int(rng.integers(-2, 3))
                    track = (track + step) % n_tracks if rng.random() < 0.8 else int(rng.integers(0, n_tracks))
                t += 4 * 3_600_000
            t += 10 * 3_600_000
    root.mkdir(parents=True, exist_ok=True)
    with gzip.open(root / "events_part00.csv.gz", "wt") as fh:
        fh.write("\n".join(rows) + "\n")
    with gzip.open(root / "tracks.csv.gz", "wt") as fh:
        fh.write("track_id,artist_id,artist_name,track_name,n_plays,n_users,max_ms_played\n")
        fh.writelines(f't{i:03d},a{i // 5:02d},"Artist, {i // 5}",Song {i},1,1,240000\n' for i in range(n_tracks))
    return root


def _write_rows(root: Path, rows: list[tuple[str, int, int, str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with gzip.open(root / "events_part00.csv.gz", "wt") as fh:
        fh.write("user_id,end_time,ms_played,track_id\n")
        fh.writelines(f"{u},{_fmt(t)},{ms},{tr}\n" for u, t, ms, tr in rows)
    return root


def test_sessions_skip_labels_and_order(tmp_path: Path) -> None:
    m = 60_000
    rows = [
        ("ub", T0 + 0 * m, 200_000, "t1"),
        ("ua", T0 + 5 * m, 29_999, "t2"),  # skip (< 30 s)
        ("ua", T0 + 0 * m, 30_000, "t1"),  # not a skip; out of order in the file
        ("ua", T0 + 35 * m, 100_000, "t3"),  # 30 min after the previous end: same session
        ("ua", T0 + 35 * m + SESSION_GAP_MS + m, 100_000, "t4"),  # 31 min later: new session
        ("ub", T0 + 10 * m, 0, "t2"),
    ]
    plays = load_plays(_write_rows(tmp_path / "d", rows))
    assert list(plays.user_ids) == ["ua", "ub"]
    assert [plays.track_ids[t] for t in plays.track] == ["t1", "t2", "t3", "t4", "t1", "t2"]
    assert plays.skip.tolist() == [False, True, False, False, False, True]
    assert plays.pos.tolist() == [0, 1, 2, 0, 0, 1]
    assert len(np.unique(plays.session)) == 3
    assert plays.artist_ids.tolist() == ["", "", "", ""]  # no tracks.csv.gz


def test_vocabulary_comes_from_training_plays_only(tmp_path: Path) -> None:
    d = 86_400_000
    rows = [("ua", T0, 100_000, "t1"), ("ua", T0 + 7 * d, 100_000, "t2"), ("ua", T0 + 10 * d, 100_000, "t9")]
    rows += [("ub", T0, 100_000, "t1"), ("ub", T0 + 10 * d, 100_000, "t1")]
    plays = load_plays(_write_rows(tmp_path / "d", rows))
    fold = time_fold(plays)
    assert set(fold.vocab.track_ids) == {"t1", "t2"}  # t9 is only played after ua's cut-off
    assert fold.scored.tolist() == [False, False, True, False, True]
    assert fold.test_items[2] == -1 and fold.vocab.track_ids[0] == "t1"  # most played first
    other = load_plays(_write_rows(tmp_path / "o", [("uz", T0, 100_000, "t7"), ("uz", T0 + d, 100_000, "t1")]))
    uf = user_fold(plays, other)
    assert "t7" not in uf.vocab.index and uf.test_items.tolist() == [-1, uf.vocab.index["t1"]]


def test_held_out_listeners_meet_a_bundle_that_never_saw_them(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from models_onnx.realmodel import held_out_listeners, training_rows
    from models_onnx.track_stats import track_stats

    fold = time_fold(load_plays(write_dataset(tmp_path / "d", 6, seed=3)))
    assert held_out_listeners(fold, 1, 0) is None
    held = held_out_listeners(fold, 3, 0)
    assert held is not None and held.sum() == 2 and np.array_equal(held, held_out_listeners(fold, 3, 0))
    rows = training_rows(fold, 60, held)
    assert len(rows) and held[fold.train.user[rows]].all()  # training rows only from the held-out listeners
    unseen = held[fold.train.user]
    stats = track_stats(fold, m=5, exclude=unseen)
    only_theirs = np.bincount(fold.train_items[~unseen], minlength=len(fold.vocab)) == 0
    assert (stats.neighbour_idx[only_theirs] == -1).all() and (stats.popularity[only_theirs] == 0).all()
    assert stats.skip_prior == pytest.approx(fold.train.skip[~unseen].mean())
    full = track_stats(fold, m=5)
    same = track_stats(fold, m=5, exclude=np.zeros(len(fold.train), bool))
    np.testing.assert_array_equal(full.neighbour_idx, same.neighbour_idx)
    np.testing.assert_allclose(full.skip_rate, same.skip_rate)


def test_ranking_metrics_by_hand() -> None:
    ranks = np.array([1.0, 2.0, 10.0, 11.0, 25.0, np.inf])
    assert hit(ranks, 10).tolist() == [1, 1, 1, 0, 0, 0]
    assert hit(ranks, 20).tolist() == [1, 1, 1, 1, 0, 0]
    np.testing.assert_allclose(reciprocal_rank(ranks, 20), [1, 0.5, 0.1, 1 / 11, 0, 0])
    np.testing.assert_allclose(ndcg(ranks, 20), [1, 1 / np.log2(3), 1 / np.log2(11), 1 / np.log2(12), 0, 0])
    scores = np.array([[0.1, 0.9, 0.5, 0.5], [1.0, 1.0, 1.0, 0.0]])
    assert rank_of(scores, np.array([2, 0])).tolist() == [2.5, 2.0]  # ties share the mean position
    assert rank_of(scores, np.array([-1, 3])).tolist() == [np.inf, 4.0]


def test_auc_by_hand_and_weights() -> None:
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    y = np.array([1, 0, 1, 0, 0])
    assert float(weighted_auc(s, y)) == pytest.approx(5 / 6)  # pairs: (0.9 beats 3), (0.7 beats 2) of 6
    assert float(weighted_auc(np.array([0.5, 0.5]), np.array([1, 0]))) == 0.5
    # an integer weight equals repeating the row
    w = np.array([[2.0, 1.0, 1.0, 1.0, 3.0]])
    rep = weighted_auc(np.repeat(s, [2, 1, 1, 1, 3]), np.repeat(y, [2, 1, 1, 1, 3]))
    assert weighted_auc(s, y, w)[0] == pytest.approx(float(rep))


def test_wsdm_average_accuracy_by_hand() -> None:
    # correct, wrong, correct: A = (1, 1/2, 2/3), L = (1, 0, 1) -> (1 + 2/3) / 3
    assert average_accuracy(np.array([True, False, True])) == pytest.approx(5 / 9)
    assert average_accuracy(np.array([False, False])) == 0.0
    correct = np.array([True, True, False, True, False, True])
    session = np.array([1, 1, 1, 1, 2, 2])
    pos = np.array([1, 2, 3, 4, 1, 2])
    length = np.array([5, 5, 5, 5, 3, 3])
    ids, aa = session_average_accuracy(correct, session, pos, length)
    assert ids.tolist() == [1, 2]  # second half: positions >= 2 of 5, >= 1 of 3
    np.testing.assert_allclose(aa, [average_accuracy(np.array([True, False, True])), 0.25])


def test_cluster_bootstrap() -> None:
    users = np.repeat(np.arange(20), 5)
    boot = Bootstrap(users, reps=300, seed=1)
    point, reps = boot.mean(np.ones(100))
    assert point == 1.0 and ci(reps) == (1.0, 1.0)
    values = (users % 2).astype(float)  # half the users always 1, half always 0
    point, reps = boot.mean(values)
    lo, hi = ci(reps)
    assert point == 0.5 and lo < 0.5 < hi and hi - lo > 0.2  # users, not 100 positions, drive the width
    again = Bootstrap(users, reps=300, seed=1).mean(values)[1]
    np.testing.assert_array_equal(reps, again)
    # one value per cluster gives the same result as the positions when each user's values are equal
    np.testing.assert_allclose(boot.mean(np.array([0.0, 1.0] * 10), cluster=np.arange(20))[1], reps)


def test_test_dir_mode_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from models_onnx.evaluate import main
    from serving.catalog import Catalog
    from serving.scorer import OnnxScorer

    data = write_dataset(tmp_path / "train", 12, seed=1)
    test = write_dataset(tmp_path / "test", 4, seed=2, prefix="v")
    out = tmp_path / "report"
    args = ["--data", str(data), "--test", str(test), "--out", str(out), "--modes", "users", "--positions", "100"]
    args += ["--gru-epochs", "0.2", "--segue-epochs", "1", "--candidates", "30", "--history", "10", "--bootstrap", "50"]
    args += ["--no-progress", "--segue-holdout", "3"]  # the model trains on 4 listeners its bundle never saw
    assert main(args) == 0
    report = (out / "report.md").read_text()
    names = ("popularity", "user most-recent", "item-kNN", "V-SKNN", "GRU4Rec", "logistic regression", "segue")
    for name in (*names, "serving candidates in list order", "steps of batch"):
        assert name in report
    for png in ("hr20_by_position.png", "skip_auc_by_position.png", "skip_calibration.png"):
        assert (out / png).stat().st_size > 1000
    assert "Skip label" in (out / "model_card.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    results = summary["folds"]["users"]["results"]
    assert summary["folds"]["users"]["n_positions"] >= 100 and summary["folds"]["users"]["n_users"] == 4
    for r in results:
        assert all(lo <= pt <= hi or np.isnan(pt) for pt, lo, hi in r["values"].values())
    bundle = out / "bundles" / "users"
    scorer = OnnxScorer.load(bundle, device="cpu")
    catalog = Catalog.load(bundle)
    assert scorer.model_version.startswith("real-users-") and len(catalog) == len(set(catalog.track_ids))
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "not shippable" in manifest["training"]["data"] and manifest["signature"] == 2
    assert scorer.signature == 2 and scorer.features is not None  # the worker's scorer loads it unchanged
    z = np.zeros((1, catalog.dim), np.float32)
    assert scorer.score(z, z, z, np.zeros((1, 8), np.float32), catalog.embeddings[None, :5]).shape == (1, 5)
    # The worker's ranking step finds the bundle's session index and blends session-kNN into the list.
    from dataclasses import replace

    from serving.explain import REASON_CODES, SIMILAR_SESSIONS
    from streams.session import PLAYED, SessionState
    from streams.settings import ScoringSettings, WorkerSettings
    from streams.worker import build_rescorer

    assert manifest["session_index"]["pairs"] > 0
    rescorer = build_rescorer(WorkerSettings(scoring=ScoringSettings(model_dir=bundle)), catalog, scorer)
    played = (0, 1)  # the two most played training tracks
    state = replace(SessionState.empty(catalog.dim), recent=played, outcomes=(PLAYED,) * 2, plays=2, events=2)
    ranking = rescorer.rank([state], [T0])[0]
    assert len(ranking.indices) == 20 and len(set(ranking.indices.tolist())) == 20
    assert ranking.reasons is not None and REASON_CODES.index(SIMILAR_SESSIONS) in ranking.reasons.codes.tolist()


def test_sampled_softmax_correction_follows_how_often_each_candidate_is_drawn() -> None:
    from models_onnx.realmodel import N_ANY_NEG, N_POP_NEG, N_TOP_NEG, TOP_PLACES, _negatives, sample_log_q

    fixed = list(range(100, 100 + TOP_PLACES + 40))  # the head, then 40 more
    t = fixed[3]
    k = 1000
    negs = _negatives(fixed, t, np.random.default_rng(0))
    row = [t, *negs, 7, 8]  # 7, 8: popularity draws (retrieval places)
    got = np.exp(sample_log_q(fixed, t, row, k))
    head = N_TOP_NEG / TOP_PLACES  # the head of the list without the target
    assert got[0] == pytest.approx(head)
    assert np.allclose(got[1 : 1 + N_TOP_NEG], head)
    assert np.allclose(got[1 + N_TOP_NEG : 1 + N_TOP_NEG + N_ANY_NEG], N_ANY_NEG / 39)  # 99 others: 60 head, 39 rest
    assert np.allclose(got[-2:], N_POP_NEG / (k - len(fixed)))
    # draws are counted, not the realised sample: the head is drawn far more often than a later place
    assert got[1] > 10 * got[-1]
    # a target outside the fixed list is at a retrieval place; a lone target never gets log 0
    assert np.exp(sample_log_q(fixed, 5, [5], k))[0] == pytest.approx(N_POP_NEG / (k - len(fixed)))
    assert np.isfinite(sample_log_q([5], 5, [5], k)).all()
