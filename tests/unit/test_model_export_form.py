"""The exported form of the session scorer (``ServingScorer``) computes what the training forward computes,
in torch and in ONNX Runtime, including for candidates that are not unit vectors or are zero."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

from models_onnx.export import export_model, random_inputs  # noqa: E402
from models_onnx.model import ServingScorer, SessionScorer  # noqa: E402
from models_onnx.signature import input_names  # noqa: E402

ATOL = 1e-5


class _Plain(nn.Module):
    """The scorer without ``for_export``: ``export_model`` writes the training forward's graph."""

    def __init__(self, model: SessionScorer) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(*inputs)


def _trained_looking(dim: int, hidden: int, seed: int) -> SessionScorer:
    """Random parameters, not the cosine-rule initialisation."""
    torch.manual_seed(seed)
    model = SessionScorer(dim=dim, hidden=hidden)
    for p in model.parameters():
        nn.init.normal_(p, std=0.3)
    return model.eval()


def _hard_inputs(batch: int, k: int, dim: int, seed: int) -> tuple[np.ndarray, ...]:
    """``random_inputs`` plus what they lack: zero and non-unit candidates, zero state vectors."""
    pos, neg, taste, context, cand = random_inputs(batch, k, dim, np.random.default_rng(seed))
    cand[0, : min(k, 3)] = 0.0  # a zero candidate must score as the EPS in the model's normalisation makes it
    cand[-1] *= np.linspace(1e-3, 50.0, k, dtype=np.float32)[:, None]
    pos[0] = 0.0
    taste[-1] = 0.0
    return pos, neg, taste, context, cand


def _run(onnx_bytes: bytes, inputs: tuple[np.ndarray, ...]) -> np.ndarray:
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip(input_names(1), inputs, strict=True)))[0]


@pytest.mark.parametrize(("dim", "hidden"), [(12, 16), (32, 32), (8, 64)])
def test_export_form_matches_the_training_forward(dim: int, hidden: int) -> None:
    model = _trained_looking(dim, hidden, seed=dim + hidden)
    form = model.for_export()
    assert isinstance(form, ServingScorer)
    inputs = tuple(torch.from_numpy(a) for a in _hard_inputs(6, 41, dim, seed=1))
    with torch.no_grad():
        got, want = form(*inputs), model(*inputs)
    assert got.shape == want.shape == (6, 41)
    assert torch.allclose(got, want, atol=ATOL), float((got - want).abs().max())


def test_exported_graph_scores_as_the_training_forward_graph() -> None:
    dim = 32
    model = _trained_looking(dim, 32, seed=5)
    fast = export_model(model, dim, "t-fast", np.random.default_rng(0))  # parity with torch checked inside
    plain = export_model(_Plain(model), dim, "t-plain", np.random.default_rng(0))
    assert fast != plain
    for batch, k in ((1, 1), (3, 250), (64, 17)):
        inputs = _hard_inputs(batch, k, dim, seed=batch)
        got, want = _run(fast, inputs), _run(plain, inputs)
        with torch.no_grad():
            torch_scores = model(*(torch.from_numpy(a) for a in inputs)).numpy()
        assert got.shape == (batch, k) and got.dtype == np.float32
        assert np.abs(got - want).max() <= ATOL
        assert np.abs(got - torch_scores).max() <= ATOL
