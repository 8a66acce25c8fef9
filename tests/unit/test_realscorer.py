"""The real-data session scorer: embeddings with descriptive coordinates, heads, and a v1 ONNX export."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models_onnx.export import export_model, random_inputs  # noqa: E402
from models_onnx.realscorer import N_META, RealScorer, meta_embeddings  # noqa: E402


def test_meta_embeddings_are_unit_rows_that_order_tracks_by_skip_rate_and_popularity() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(5, 6))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    skip = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    counts = np.array([1000, 100, 10, 1, 0])
    emb = meta_embeddings(base, skip, counts)
    assert emb.shape == (5, 6 + N_META) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    assert np.all(np.diff(emb[:, -2]) > 0) and np.all(np.diff(emb[:, -1]) < 0)


def test_score_is_next_plus_weighted_keep_and_exports_as_signature_v1() -> None:
    torch.manual_seed(0)
    model = RealScorer(8, hidden=16, keep_weight=3.0).eval()
    inputs = [torch.from_numpy(a) for a in random_inputs(4, 5, 8, np.random.default_rng(1))]
    with torch.no_grad():
        nxt, keep = model.heads(*inputs)
        torch.testing.assert_close(model(*inputs), nxt + 3.0 * keep)
    onnx_bytes = export_model(model, 8, "test-real", np.random.default_rng(2))  # checker + parity inside
    assert len(onnx_bytes) > 1000
