"""The IOBinding path of the scorer (``BoundRunner``), exercised on CPU buffers; CUDA session options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from serving import scorer as scorer_mod
from serving.scorer import CPU, CUDA, BoundRunner, OnnxScorer


def _inputs(rng: np.random.Generator, b: int, k: int, d: int = 32) -> list[np.ndarray]:
    return [rng.normal(size=(b, d)) for _ in range(3)] + [rng.normal(size=(b, 8)), rng.normal(size=(b, k, d))]


def test_binding_is_on_by_default_only_on_cuda(quick_bundle: Path) -> None:
    s = OnnxScorer.load(quick_bundle, device="cpu")
    assert s.provider == CPU and s.io_binding is False
    forced = OnnxScorer.load(quick_bundle, device="cpu", io_binding=True)
    assert forced.io_binding is True


def test_bound_scores_equal_plain_scores_across_shapes(quick_bundle: Path) -> None:
    plain = OnnxScorer.load(quick_bundle, device="cpu")
    bound = OnnxScorer.load(quick_bundle, device="cpu", io_binding=True)
    rng = np.random.default_rng(3)
    kept = []
    for b, k in [(3, 10), (8, 200), (3, 10), (1, 1), (5, 7)]:
        x = _inputs(rng, b, k)
        x[4] = np.asfortranarray(x[4])  # any layout and float64 are accepted, as on the plain path
        got = bound.score(*x)
        want = plain.score(*x)
        assert got.shape == (b, k) and got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
        kept.append((got.copy(), got))
    # a later call with the same shape never overwrites scores already returned
    for frozen, returned in kept:
        np.testing.assert_array_equal(frozen, returned)
    assert bound.score(*(np.zeros((0, 32)),) * 3, np.zeros((0, 8)), np.zeros((0, 4, 32))).shape == (0, 4)


def test_runner_keeps_the_most_recent_shapes(quick_bundle: Path) -> None:
    session = OnnxScorer.load(quick_bundle, device="cpu").session
    runner = BoundRunner(session, "cpu", slots=2)
    rng = np.random.default_rng(0)
    for b, k in [(1, 4), (2, 4), (1, 4), (3, 4)]:
        x = [np.ascontiguousarray(a, dtype=np.float32) for a in _inputs(rng, b, k)]
        assert runner.run(x).shape == (b, k)
    assert runner.shapes == [(1, 4), (3, 4)]
    with pytest.raises(ValueError, match="slots"):
        BoundRunner(session, "cpu", slots=0)


def test_cuda_sessions_ask_for_full_float32(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def fake(path: str, sess_options: ort.SessionOptions, providers: list[str], provider_options: list[dict]) -> str:
        seen.update(providers=providers, provider_options=provider_options)
        return "session"

    monkeypatch.setattr(ort, "InferenceSession", fake)
    scorer_mod._session(tmp_path / "model.onnx", ort.SessionOptions(), [CUDA, CPU])
    assert seen == {"providers": [CUDA, CPU], "provider_options": [{"use_tf32": "0"}, {}]}
    scorer_mod._session(tmp_path / "model.onnx", ort.SessionOptions(), [CPU])
    assert seen["provider_options"] == [{}]
