"""Export the session scorer to ONNX (signature v1 or v2) and prove the file computes what torch computes.

``export_model`` returns the serialised ONNX model only after ``onnx.checker.check_model`` passed and
ONNX Runtime (CPU) matched torch within ``PARITY_ATOL`` on random inputs at several batch and candidate
sizes; any failure raises ``ModelError``. The TorchScript-based exporter (``dynamo=False``) is used: it
needs no extra packages and handles this model's plain tensor code. A model with a ``for_export()`` method
(``SessionScorer``) is exported in the form that method returns, the same function in ops that run faster
in ONNX Runtime; the parity check compares the file with the model's own forward.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

from models_onnx.signature import (
    N_CANDIDATE_FEATURES,
    N_CONTEXT,
    SIGNATURE,
    input_names,
    input_shapes,
    metadata,
    output_names,
)
from streams.errors import ModelError

OPSET = 17
PARITY_ATOL = 1e-4
PARITY_SIZES: tuple[tuple[int, int], ...] = ((1, 1), (2, 7), (5, 64), (16, 200), (3, 513))


def export_model(
    model: torch.nn.Module, dim: int, model_version: str, rng: np.random.Generator, signature: int = SIGNATURE
) -> bytes:
    """Export ``model`` with the names, dynamic axes and metadata of ``signature``; check it and its parity;
    return bytes."""
    model.eval()
    graph = export_form(model).eval()
    example = tuple(torch.from_numpy(a) for a in random_inputs(2, 3, dim, rng, signature))
    dynamic_axes = {
        name: {i: ax for i, ax in enumerate(shape) if isinstance(ax, str)}
        for name, shape in input_shapes(dim, signature).items()
    }
    for out in output_names(signature):
        dynamic_axes[out] = {0: "batch", 1: "k"}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but still supported
        torch.onnx.export(
            graph,
            example,
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=list(input_names(signature)),
            output_names=list(output_names(signature)),
            dynamic_axes=dynamic_axes,
        )
    proto = onnx.load_from_string(buf.getvalue())
    onnx.helper.set_model_props(proto, metadata(model_version, dim, signature))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"exported ONNX model failed the checker: {exc}") from exc
    data = proto.SerializeToString()
    check_parity(model, data, dim, rng, signature=signature)
    return data


def export_form(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose graph is written for ``model``: ``model.for_export()`` where it has one, else itself."""
    for_export = getattr(model, "for_export", None)
    return for_export() if callable(for_export) else model


def random_inputs(
    batch: int, k: int, dim: int, rng: np.random.Generator, signature: int = SIGNATURE
) -> tuple[np.ndarray, ...]:
    """Plausible random inputs: state vectors of varied norm (some zero), unit candidates; v2 adds
    candidate features in [0, 1] (about half of them zero)."""
    pos = rng.normal(size=(batch, dim)) * rng.uniform(0.0, 3.0, size=(batch, 1))  # [B, D]
    neg = rng.normal(size=(batch, dim)) * rng.uniform(0.0, 3.0, size=(batch, 1))
    neg[rng.random(batch) < 0.3] = 0.0  # sessions without skips
    taste = rng.normal(size=(batch, dim)) * rng.uniform(0.0, 1.0, size=(batch, 1))
    context = rng.uniform(-1.0, 1.0, size=(batch, N_CONTEXT))  # [B, 8]
    cand = rng.normal(size=(batch, k, dim))  # [B, K, D]
    cand /= np.linalg.norm(cand, axis=-1, keepdims=True)
    arrays = [pos, neg, taste, context, cand]
    if signature >= 2:
        feats = rng.uniform(0.0, 1.0, size=(batch, k, N_CANDIDATE_FEATURES))
        feats[rng.random(feats.shape) < 0.5] = 0.0
        arrays.append(feats)
    return tuple(np.ascontiguousarray(a, dtype=np.float32) for a in arrays)


def check_parity(
    model: torch.nn.Module,
    onnx_bytes: bytes,
    dim: int,
    rng: np.random.Generator,
    sizes: Sequence[tuple[int, int]] = PARITY_SIZES,
    atol: float = PARITY_ATOL,
    signature: int = SIGNATURE,
) -> float:
    """Max |ORT (CPU) - torch| over every output on random inputs at ``sizes`` (batch, k); ModelError above
    ``atol``."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    worst = 0.0
    model.eval()
    for batch, k in sizes:
        inputs = random_inputs(batch, k, dim, rng, signature)
        with torch.no_grad():
            out = model(*(torch.from_numpy(a) for a in inputs))
        expected = [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]  # [B, K] each
        got_all = session.run(None, dict(zip(input_names(signature), inputs, strict=True)))
        if len(got_all) != len(expected):
            raise ModelError(f"ONNX model has {len(got_all)} outputs, torch {len(expected)}")
        for got, exp in zip(got_all, expected, strict=True):
            if got.shape != (batch, k) or got.dtype != np.float32:
                raise ModelError(f"ONNX output is {got.dtype} {got.shape}, expected float32 {(batch, k)}")
            diff = float(np.max(np.abs(got - exp)))
            if not diff <= atol:  # also catches NaN
                raise ModelError(f"ONNX Runtime and torch disagree by {diff:.3g} at batch={batch}, k={k}")
            worst = max(worst, diff)
    return worst
