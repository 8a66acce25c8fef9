"""Serving the bundle: the catalog, provider selection, v1 validation, scoring and model behaviour."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from serving import scorer as scorer_mod
from serving.catalog import Catalog
from serving.scorer import CPU, CUDA, OnnxScorer, select_providers
from streams.errors import ConfigError, ModelError
from streams.records import Like, Play, Skip
from streams.session import SessionState, apply_event, context_features

T0 = 1_704_103_200_000  # 2024-01-01T10:00:00Z


@pytest.mark.parametrize(
    ("device", "available", "expected"),
    [
        ("cpu", [CUDA, CPU], [CPU]),
        ("cpu", [CPU], [CPU]),
        ("auto", [CUDA, CPU], [CUDA, CPU]),
        ("auto", ["TensorrtExecutionProvider", CUDA, CPU], [CUDA, CPU]),
        ("auto", [CPU], [CPU]),
        ("cuda", [CUDA, CPU], [CUDA, CPU]),
        ("cuda", [CPU], [CPU]),
    ],
)
def test_select_providers(device: str, available: list[str], expected: list[str]) -> None:
    assert select_providers(device, available) == expected


def test_select_providers_without_the_driver_asks_cuda_only_when_told() -> None:
    assert select_providers("auto", [CUDA, CPU], driver=False) == [CPU]
    assert select_providers("cuda", [CUDA, CPU], driver=False) == [CUDA, CPU]  # asked for: tried, warned about


def test_select_providers_rejects_unknown_device() -> None:
    with pytest.raises(ConfigError):
        select_providers("tpu", [CPU])


def test_catalog_loads_from_bundle(quick_bundle: Path) -> None:
    cat = Catalog.load(quick_bundle)
    assert len(cat) == 2000 and cat.dim == 32
    assert cat.lookup("trk-00042") == 42 and cat.lookup("nope") is None
    assert cat.track_ids[42] == "trk-00042" and cat.index["trk-00042"] == 42
    assert cat.embeddings.dtype == np.float32 and cat.embeddings.shape == (2000, 32)
    assert not cat.embeddings.flags.writeable
    assert cat.artist_of[0].startswith("art-") and cat.genre_of[0]
    assert cat.model_version == json.loads((quick_bundle / "manifest.json").read_text())["model_version"]


def test_catalog_missing_bundle_says_how_to_train(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="python -m models_onnx.train --out"):
        Catalog.load(tmp_path)


def test_cpu_scorer(quick_bundle: Path) -> None:
    s = OnnxScorer.load(quick_bundle, device="cpu")
    assert s.provider == CPU and s.signature == 1 and s.dim == 32
    assert s.model_version == Catalog.load(quick_bundle).model_version
    rng = np.random.default_rng(0)
    out = s.score(
        rng.normal(size=(3, 32)),  # float64 and any layout are accepted
        rng.normal(size=(3, 32)),
        rng.normal(size=(3, 32)),
        rng.normal(size=(3, 8)),
        np.asfortranarray(rng.normal(size=(3, 10, 32))),
    )
    assert out.shape == (3, 10) and out.dtype == np.float32 and np.isfinite(out).all()
    empty = s.score(*(np.zeros((0, 32)),) * 3, np.zeros((0, 8)), np.zeros((0, 5, 32)))
    assert empty.shape == (0, 5)
    with pytest.raises(ValueError, match="context"):
        s.score(*(np.zeros((2, 32)),) * 3, np.zeros((2, 7)), np.zeros((2, 5, 32)))
    with pytest.raises(ValueError, match="candidates"):
        s.score(*(np.zeros((2, 32)),) * 3, np.zeros((2, 8)), np.zeros((2, 5, 16)))


def test_a_large_cpu_call_runs_in_parts_with_the_same_scores(quick_bundle: Path, monkeypatch) -> None:
    s = OnnxScorer.load(quick_bundle, device="cpu")
    rng = np.random.default_rng(1)
    b, k = 7, 50
    args = [rng.normal(size=(b, 32)) for _ in range(3)] + [rng.normal(size=(b, 8)), rng.normal(size=(b, k, 32))]
    whole = s.score(*args)  # 350 candidates: one run
    runs = []
    session = s._session

    class Counting:
        def run(self, outputs, feeds):
            runs.append(len(next(iter(feeds.values()))))
            return session.run(outputs, feeds)

    monkeypatch.setattr(s, "_session", Counting())
    monkeypatch.setattr(scorer_mod, "CPU_CANDIDATES_PER_RUN", 2 * k)  # two users per run
    parts = s.score(*args)
    assert runs == [2, 2, 2, 1]
    assert parts.shape == (b, k) and np.allclose(parts, whole, atol=1e-5)


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_gpu_devices_report_the_provider_actually_used(quick_bundle: Path, device: str) -> None:
    s = OnnxScorer.load(quick_bundle, device=device)
    assert s.provider == s.session.get_providers()[0]
    assert s.provider in (CUDA, CPU)
    if CUDA not in s.session.get_providers():  # no usable GPU here: fell back, and says so
        assert s.provider == CPU


def test_cuda_without_cuda_provider_warns_and_uses_cpu(
    quick_bundle: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    with caplog.at_level(logging.WARNING, logger="serving.scorer"):
        s = OnnxScorer.load(quick_bundle, device="cuda")
    assert s.provider == CPU and s.requested_providers == [CPU]
    assert any("cuda" in r.getMessage().lower() for r in caplog.records)


def test_cuda_session_failure_falls_back_to_cpu(
    quick_bundle: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = scorer_mod._session

    def flaky(path: Path, opts: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
        if CUDA in providers:
            raise RuntimeError("CUDA driver exploded")
        return real(path, opts, providers)

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(scorer_mod, "_session", flaky)
    with caplog.at_level(logging.WARNING, logger="serving.scorer"):
        s = OnnxScorer.load(quick_bundle, device="cuda")
    assert s.provider == CPU
    assert any("exploded" in r.getMessage() for r in caplog.records)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def _set_model_meta(path: Path, key: str, value: str) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(path / "model.onnx"))
    for p in model.metadata_props:
        if p.key == key:
            p.value = value
    onnx.save(model, str(path / "model.onnx"))


def test_wrong_model_signature_is_refused(quick_bundle: Path, tmp_path: Path) -> None:
    b = _copy(quick_bundle, tmp_path)
    _set_model_meta(b, "segue.signature", "2")
    with pytest.raises(ModelError, match="signature"):
        OnnxScorer.load(b, device="cpu")


def test_wrong_manifest_signature_is_refused(quick_bundle: Path, tmp_path: Path) -> None:
    b = _copy(quick_bundle, tmp_path)
    manifest = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps({**manifest, "signature": 3}))
    with pytest.raises(ModelError, match="signature"):
        OnnxScorer.load(b, device="cpu")
    (b / "manifest.json").write_text(json.dumps({**manifest, "signature": 2}))  # v2 without its track stats
    with pytest.raises(ModelError, match="candidate features"):
        OnnxScorer.load(b, device="cpu")


def test_model_not_matching_its_manifest_is_refused(quick_bundle: Path, tmp_path: Path) -> None:
    b = _copy(quick_bundle, tmp_path)
    manifest = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps({**manifest, "dim": 16}))
    with pytest.raises(ModelError, match="dim"):
        OnnxScorer.load(b, device="cpu")
    (b / "manifest.json").write_text(json.dumps({**manifest, "model_version": "other"}))
    with pytest.raises(ModelError, match="other"):
        OnnxScorer.load(b, device="cpu")


def test_renamed_input_is_refused(quick_bundle: Path, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    b = _copy(quick_bundle, tmp_path)
    model = onnx.load(str(b / "model.onnx"))
    model.graph.input[4].name = "items"
    for node in model.graph.node:
        node.input[:] = ["items" if x == "candidates" else x for x in node.input]
    onnx.save(model, str(b / "model.onnx"))
    with pytest.raises(ModelError, match="inputs"):
        OnnxScorer.load(b, device="cpu")


def test_corrupt_model_file_is_a_model_error(quick_bundle: Path, tmp_path: Path) -> None:
    b = _copy(quick_bundle, tmp_path)
    (b / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot load"):
        OnnxScorer.load(b, device="cpu")


# --- Behaviour of the trained model ---------------------------------------------------------------


def _base(**kw: object) -> dict:
    return {"user_id": "user-0001", "session_id": "s-1", **kw}


def _play(cat: Catalog, state: SessionState, track: int, ts: int) -> SessionState:
    e = Play(
        event_id=f"p{ts}",
        track_id=cat.track_ids[track],
        ts_ms=ts,
        played_ms=200_000,
        duration_ms=200_000,
        **_base(),
    )
    return apply_event(state, e, track, cat.embeddings[track])


def _score_all(s: OnnxScorer, cat: Catalog, states: list[SessionState], now: int) -> np.ndarray:
    """Scores of the whole catalog for each state: float32 [len(states), N]."""
    b = len(states)
    return s.score(
        np.stack([x.pos for x in states]),
        np.stack([x.neg for x in states]),
        np.stack([x.taste for x in states]),
        np.stack([context_features(x, now) for x in states]),
        np.broadcast_to(cat.embeddings, (b, *cat.embeddings.shape)),
    )


def _ranks(scores: np.ndarray) -> np.ndarray:
    """0-based rank of every candidate (0 = best) per row."""
    return np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)


def test_a_skip_pushes_the_skipped_track_down(quick_bundle: Path) -> None:
    cat, s = Catalog.load(quick_bundle), OnnxScorer.load(quick_bundle, device="cpu")
    rng = np.random.default_rng(0)
    drops = []
    for _ in range(12):
        a, t = rng.choice(len(cat), size=2, replace=False)
        state = _play(cat, SessionState.empty(cat.dim), int(a), T0)
        skip = Skip(event_id="s1", track_id=cat.track_ids[t], ts_ms=T0 + 200_000, played_ms=5_000, **_base())
        skipped = apply_event(state, skip, int(t), cat.embeddings[t])
        neutral_scores, skip_scores = _score_all(s, cat, [state, skipped], T0 + 205_000)
        assert skip_scores[t] < neutral_scores[t]
        # The same state with only ``neg`` set to the track: the track's score drops too.
        only_neg = replace(state, neg=cat.embeddings[t].copy())
        assert _score_all(s, cat, [only_neg], T0 + 205_000)[0, t] < neutral_scores[t]
        ranks = _ranks(np.stack([neutral_scores, skip_scores]))
        drops.append(ranks[1, t] - ranks[0, t])
    assert np.median(drops) > 100  # the skipped track falls far down the catalog


def test_a_like_lifts_the_liked_tracks_neighbours(quick_bundle: Path) -> None:
    cat, s = Catalog.load(quick_bundle), OnnxScorer.load(quick_bundle, device="cpu")
    rng = np.random.default_rng(1)
    sims = cat.embeddings @ cat.embeddings.T
    improved = []
    for _ in range(12):
        a = int(rng.integers(len(cat)))
        t = int(rng.choice(np.flatnonzero(sims[a] < 0.3)))  # a like that moves the session elsewhere
        state = _play(cat, SessionState.empty(cat.dim), a, T0)
        like = Like(event_id="l1", track_id=cat.track_ids[t], ts_ms=T0 + 200_000, **_base())
        liked = apply_event(state, like, int(t), cat.embeddings[t])
        neighbours = [int(i) for i in np.argsort(-sims[t])[1:11]]  # 10 nearest, without t itself
        ranks = _ranks(_score_all(s, cat, [state, liked], T0 + 400_000))
        before, after = ranks[0, neighbours].mean(), ranks[1, neighbours].mean()
        improved.append(after < before)
        assert after < 0.1 * len(cat)  # after the like, the neighbours are near the top
    assert all(improved)
