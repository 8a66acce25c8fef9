"""Steering by prompt: reading prompts, the feature map, the steer format and what the ranking sees."""

from __future__ import annotations

import numpy as np
import pytest

from serving.steering import (
    DESCRIPTORS,
    FEATURES,
    FeatureMap,
    PromptReader,
    Steer,
    decode_steer,
    encode_steer,
    make_steer,
    steer_state,
)
from streams.errors import InvalidSteer, ModelError
from streams.session import SessionState, query_vector

NAMES = list(DESCRIPTORS)


class WordEncoder:
    """A stand-in text encoder: one axis per descriptor word, plus one for anything else."""

    def encode(self, texts):
        out = np.zeros((len(texts), len(NAMES) + 1), np.float32)
        for r, t in enumerate(texts):
            words = t.lower().split()
            for w in words:
                out[r, NAMES.index(w) if w in NAMES else len(NAMES)] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def test_a_prompt_is_read_as_its_descriptors_and_their_direction():
    reader = PromptReader(WordEncoder())
    reading = reader.read("  upbeat   workout ")
    assert reading.prompt == "upbeat workout"
    assert {m.descriptor for m in reading.matches} == {"upbeat", "workout"}
    energy = reading.direction[FEATURES.index("energy")]
    assert energy > 0.7 and np.isclose(np.linalg.norm(reading.direction), 1.0)
    rainy = reader.read("rainy evening piano")
    assert rainy.direction[FEATURES.index("energy")] < 0 < rainy.direction[FEATURES.index("acousticness")]
    assert reader.read("polka").matches == ()
    body = reading.as_dict()
    assert body["matched"][0]["descriptor"] in ("upbeat", "workout") and set(body["direction"]) == set(FEATURES)


def test_bad_prompts_and_parameters_say_what_to_do():
    reader = PromptReader(WordEncoder())
    with pytest.raises(InvalidSteer, match="empty"):
        reader.read("   ")
    with pytest.raises(InvalidSteer, match="under 200"):
        reader.read("x" * 201)
    fmap = FeatureMap(np.eye(4, 8, dtype=np.float32), np.zeros(4, np.float32), np.ones(4, np.float32))
    with pytest.raises(InvalidSteer, match="try words such as"):
        make_steer(reader.read("polka"), fmap, 1.0, 0, 60, "m")
    with pytest.raises(InvalidSteer, match="strength"):
        make_steer(reader.read("calm"), fmap, 0.0, 0, 60, "m")
    with pytest.raises(InvalidSteer, match="ttl_s"):
        make_steer(reader.read("calm"), fmap, 1.0, 0, 0, "m")


def test_feature_map_recovers_the_embedding_direction_of_each_feature():
    rng = np.random.default_rng(0)
    axes = np.linalg.qr(rng.normal(size=(16, 4)))[0].T.astype(np.float32)  # [4, 16] orthonormal
    feats = rng.uniform(size=(500, 4)).astype(np.float32)
    emb = (feats - 0.5) @ axes + 0.05 * rng.normal(size=(500, 16)).astype(np.float32)
    fmap = FeatureMap.fit(feats, emb)
    for j in range(4):
        d = np.zeros(4, np.float32)
        d[j] = 1.0
        assert float(fmap.vector(d) @ axes[j]) > 0.95
    assert not fmap.vector(np.zeros(4, np.float32)).any()
    with pytest.raises(ModelError, match="at least 8 tracks"):
        FeatureMap.fit(feats[:3], emb[:3])


def test_steer_format_v1_round_trips_and_refuses_other_versions():
    s = Steer(prompt="calm", strength=1.0, expires_ms=5, model_version="m", vector=np.ones(4, np.float32).tobytes())
    assert decode_steer(encode_steer(s)) == s
    with pytest.raises(InvalidSteer, match="format 2"):
        decode_steer(encode_steer(Steer(v=2, prompt="", strength=1, expires_ms=0, model_version="", vector=b"")))
    with pytest.raises(InvalidSteer, match="unreadable"):
        decode_steer(b"\xc1garbage")


def test_the_ranking_sees_the_session_turned_toward_the_steer():
    v = np.zeros(8, np.float32)
    v[0] = 1.0
    s = Steer(prompt="p", strength=1.0, expires_ms=1000, model_version="m", vector=v.tobytes())
    state = SessionState.empty(8)
    state = SessionState(pos=np.eye(8, dtype=np.float32)[1] * 2, neg=state.neg, taste=state.taste)
    seen = steer_state(state, s, 500, "m")
    assert np.allclose(seen.pos, [2, 2, 0, 0, 0, 0, 0, 0])  # |pos| kept, direction halfway
    assert query_vector(seen)[0] > 0.5 and state.pos[0] == 0  # the stored state is untouched
    assert steer_state(state, s, 1000, "m") is state  # expired
    assert steer_state(state, s, 500, "other-model") is state
    assert steer_state(state, None, 500) is state
    empty = steer_state(SessionState.empty(8), s, 0, "m")
    assert np.allclose(empty.pos, v)
