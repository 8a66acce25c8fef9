"""Cold start: the bundle's optional cold-start file, the context prior's hand-over, a new listener's first
recommendations against popularity, and a track known only by its content features."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from loadtests.cold_start import measure
from models_onnx.bundle import read_manifest
from serving.catalog import Catalog
from serving.cold_start import COLD_START_FILE, ColdStart, daypart, main, read_cold_start
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from streams.errors import ModelError
from streams.records import Play
from streams.session import SessionState, apply_event, query_vector


@pytest.fixture
def bundle_copy(quick_bundle, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(quick_bundle, out)
    return out


def test_training_ships_the_cold_start_file_and_bundles_without_it_still_load(bundle_copy):
    cold = read_cold_start(bundle_copy)
    assert cold is not None and cold.dim == read_manifest(bundle_copy)["dim"]
    assert cold.prior.shape == (len(cold.devices) + 1, 4, cold.dim)
    assert np.allclose(np.linalg.norm(cold.prior, axis=-1), 1.0, atol=1e-5)
    (bundle_copy / COLD_START_FILE).unlink()
    assert read_cold_start(bundle_copy) is None  # a bundle from before cold start: format 1 still loads
    assert len(Catalog.load(bundle_copy)) == 2000
    (bundle_copy / COLD_START_FILE).write_bytes(b"not an npz")
    with pytest.raises(ModelError, match="refit it"):
        read_cold_start(bundle_copy)


def test_the_prior_fills_in_taste_until_the_listener_has_their_own(quick_bundle):
    cold = read_cold_start(quick_bundle)
    assert [daypart(h * 3_600_000) for h in (0, 6, 12, 18, 23)] == [0, 1, 2, 3, 3]
    empty = SessionState.empty(cold.dim)
    seen = cold.ranking_state(empty, "car", 20 * 3_600_000)
    np.testing.assert_allclose(seen.taste, cold.prior_scale * cold.prior[cold.devices.index("car"), 3], rtol=1e-6)
    np.testing.assert_allclose(cold.ranking_state(empty, "toaster", 0).taste, cold.prior_scale * cold.prior[-1, 0])
    own = SessionState(pos=empty.pos, neg=empty.neg, taste=np.full(cold.dim, 1.0, np.float32))
    assert cold.ranking_state(own, "car", 0) is own  # a full own taste: no prior
    half = SessionState(pos=empty.pos, neg=empty.neg, taste=own.taste * (0.5 * cold.own_taste_full / np.sqrt(cold.dim)))
    mixed = cold.ranking_state(half, None, 0).taste - half.taste
    assert np.isclose(np.linalg.norm(mixed), 0.5 * cold.prior_scale, atol=1e-4)  # half handed over


def test_new_listeners_get_useful_recommendations_within_three_events(quick_bundle, world):
    catalog = Catalog.load(quick_bundle)
    rescorer = Rescorer(
        catalog.embeddings, ExactRetriever(catalog.embeddings), OnnxScorer.load(quick_bundle, device="cpu")
    )
    r = measure(world, catalog, rescorer, read_cold_start(quick_bundle), range(5000, 5150))
    cold, pop = r.keep["cold start"], r.keep["popularity"]
    # Before any event the context prior (with popularity) beats popularity alone by the listeners' hidden mood.
    assert r.affinity["cold start"][0] > r.affinity["popularity"][0]
    assert cold[0] > pop[0]
    # The list follows the first events: better after each of them, far better than popularity after three.
    assert cold[1] > cold[0] + 0.1 and cold[3] > cold[1]
    assert cold[3] > pop[3] + 0.25, r


def _user_of_genre(world, genre):
    for u in range(3000, 4000):
        listener = world.listener(u)
        if len(listener.genres) == 1 and int(listener.genres[0]) == genre:
            return listener
    raise AssertionError("no single-genre listener found")


def test_a_track_added_with_only_content_features_is_recommended_to_a_matching_listener(bundle_copy, world):
    genre = 3
    name = world.genre_names[genre]
    listener = _user_of_genre(world, genre)
    tracks = world.genre_tracks[genre]
    liked = tracks[np.argsort(-(world.latent[tracks] @ listener.taste))[:3]]  # what this listener loves
    feats = world.features[liked].mean(axis=0)
    new = [
        {
            "track_id": "new-match",
            "genre": name,
            "features": dict(
                zip(("energy", "valence", "acousticness", "danceability"), map(float, feats), strict=True)
            ),
        },
        {
            "track_id": "new-other",
            "genre": world.genre_names[(genre + 6) % 12],
            "features": {"energy": 0.5, "valence": 0.5, "acousticness": 0.5, "danceability": 0.5},
        },
    ]
    path = bundle_copy.parent / "new.json"
    path.write_text(json.dumps(new))
    assert main(["add-tracks", "--bundle", str(bundle_copy), str(path)]) == 0
    catalog = Catalog.load(bundle_copy)
    assert len(catalog) == 2002 and catalog.track_ids[-2:] == ["new-match", "new-other"]
    assert read_cold_start(bundle_copy) is not None  # the cold-start file survives the rewrite
    rescorer = Rescorer(
        catalog.embeddings, ExactRetriever(catalog.embeddings), OnnxScorer.load(bundle_copy, device="cpu"), n_recs=20
    )
    state = SessionState.empty(catalog.dim)
    for j, t in enumerate(liked):
        e = Play(
            event_id=f"e{j}",
            user_id=listener.user_id,
            track_id=world.track_ids[int(t)],
            ts_ms=1_704_067_200_000 + j * 300_000,
            played_ms=200_000,
            duration_ms=200_000,
        )
        state = apply_event(state, e, int(t), catalog.embeddings[int(t)])
    (ranking,) = rescorer.rank([state], [state.last_ts_ms])
    top = [catalog.track_ids[int(i)] for i in ranking.indices]
    assert "new-match" in top and "new-other" not in top
    q = query_vector(state)
    assert q @ catalog.embeddings[-2] > q @ catalog.embeddings[-1]
    assert main(["add-tracks", "--bundle", str(bundle_copy), str(path)]) == 2  # ids already there: refused


def test_content_embeddings_blend_in_a_known_artist():
    cold = ColdStart(
        devices=(),
        prior=np.zeros((1, 4, 3), np.float32),
        genres=("a", "b"),
        feature_mean=np.zeros(4, np.float32),
        feature_std=np.ones(4, np.float32),
        content_coef=np.vstack([np.zeros((4, 3)), np.eye(3)[:2], np.zeros((1, 3))]).astype(np.float32),
    )
    emb = cold.content_embedding(np.zeros((2, 4), np.float32), ["a", "b"], [None, np.array([0, 0, 5.0])])
    np.testing.assert_allclose(emb[0], [1, 0, 0])
    np.testing.assert_allclose(emb[1], np.array([0, 1, 1]) / np.sqrt(2), atol=1e-6)
