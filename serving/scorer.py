"""The session model at serving time: an ONNX Runtime session checked against signature v1.

``OnnxScorer.load(bundle_dir, device)`` picks execution providers with ``select_providers``, creates
the session, and reports in ``.provider`` the provider ONNX Runtime actually uses
(``session.get_providers()[0]``), not the one asked for: onnxruntime-gpu lists CUDA as available even
where the CUDA libraries are missing, and then runs on CPU (after logging an error of its own). Asking
for "cuda" where CUDA cannot be used logs a warning and serves on CPU; it never fails the load. A model
whose inputs, outputs or metadata do not match v1 (or its bundle's manifest) is refused with
``ModelError``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
import onnxruntime as ort

from models_onnx.bundle import MODEL, read_manifest, train_hint
from models_onnx.signature import (
    INPUT_NAMES,
    META_CONTEXT,
    META_DIM,
    META_MODEL_VERSION,
    META_SIGNATURE,
    OUTPUT_NAMES,
    SIGNATURE,
    input_shapes,
)
from streams.errors import ConfigError, ModelError
from streams.session import CONTEXT_FEATURES

log = logging.getLogger(__name__)

CUDA: Final = "CUDAExecutionProvider"
CPU: Final = "CPUExecutionProvider"
DEVICES: Final = ("auto", "cuda", "cpu")


def select_providers(device: str, available: Sequence[str]) -> list[str]:
    """Execution providers to request for ``device`` given ONNX Runtime's ``available`` providers.

    "cpu" -> CPU only; "auto" and "cuda" -> CUDA then CPU when CUDA is available, else CPU only.
    """
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu" or CUDA not in available:
        return [CPU]
    return [CUDA, CPU]


class OnnxScorer:
    """Scores candidates for a batch of session states with a v1 model. Use ``OnnxScorer.load``."""

    def __init__(self, session: ort.InferenceSession, model_version: str, dim: int, requested: list[str]) -> None:
        self._session = session
        self.model_version = model_version
        self.dim = dim
        self.signature = SIGNATURE
        self.requested_providers = requested
        self.provider: str = session.get_providers()[0]

    @staticmethod
    def load(bundle_dir: Path | str, device: str = "auto", intra_op_threads: int = 1) -> OnnxScorer:
        """Load and validate ``model.onnx`` of the bundle at ``bundle_dir``; ModelError if unservable."""
        manifest = read_manifest(bundle_dir)
        path = Path(bundle_dir) / MODEL
        if not path.is_file():
            raise ModelError(f"model bundle {bundle_dir} has no {MODEL}: {train_hint(bundle_dir)}")
        requested = select_providers(device, ort.get_available_providers())
        if device == "cuda" and CUDA not in requested:
            log.warning("device=cuda but this onnxruntime has no CUDA provider; scoring on CPU")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = _session(path, opts, requested)
        except Exception as exc:  # noqa: BLE001 - a CUDA provider that fails hard must not stop serving
            if requested == [CPU]:
                raise ModelError(f"ONNX Runtime cannot load {path}: {exc}") from exc
            log.warning("could not create a CUDA session (%s); scoring on CPU", exc)
            requested = [CPU]
            try:
                session = _session(path, opts, requested)
            except Exception as exc2:  # noqa: BLE001
                raise ModelError(f"ONNX Runtime cannot load {path}: {exc2}") from exc2
        actual = session.get_providers()[0]
        if CUDA in requested and actual != CUDA:
            level = logging.WARNING if device == "cuda" else logging.INFO
            log.log(level, "CUDA requested (device=%s) but not usable here; scoring on %s", device, actual)
        dim = int(manifest["dim"])
        version = validate_session(session, dim, str(manifest["model_version"]), str(path))
        return OnnxScorer(session, version, dim, requested)

    @property
    def session(self) -> ort.InferenceSession:
        return self._session

    def score(
        self,
        session_pos: np.ndarray,  # [B, D]
        session_neg: np.ndarray,  # [B, D]
        taste: np.ndarray,  # [B, D]
        context: np.ndarray,  # [B, 8]
        candidates: np.ndarray,  # [B, K, D]
    ) -> np.ndarray:  # float32 [B, K]
        """One ONNX Runtime run; ValueError if the shapes do not fit signature v1 with this ``dim``."""
        inputs = [
            np.ascontiguousarray(a, dtype=np.float32) for a in (session_pos, session_neg, taste, context, candidates)
        ]
        b = inputs[0].shape[0] if inputs[0].ndim == 2 else -1
        k = inputs[4].shape[1] if inputs[4].ndim == 3 else -1
        for name, arr in zip(INPUT_NAMES, inputs, strict=True):
            want = tuple(b if ax == "batch" else k if ax == "k" else ax for ax in input_shapes(self.dim)[name])
            if b < 0 or k < 0 or arr.shape != want:
                raise ValueError(f"{name} has shape {arr.shape}, expected {want} (batch, k, dim={self.dim})")
        if b == 0 or k == 0:
            return np.zeros((b, k), np.float32)
        (scores,) = self._session.run(list(OUTPUT_NAMES), dict(zip(INPUT_NAMES, inputs, strict=True)))
        return scores


def _session(path: Path, opts: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def validate_session(session: ort.InferenceSession, dim: int, model_version: str, where: str) -> str:
    """Check inputs, outputs and metadata against signature v1 and the manifest; return the model version."""
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get(META_SIGNATURE) != str(SIGNATURE):
        raise ModelError(f"{where} has {META_SIGNATURE}={meta.get(META_SIGNATURE)!r}; this code serves {SIGNATURE}")
    if meta.get(META_DIM) != str(dim):
        raise ModelError(f"{where} has {META_DIM}={meta.get(META_DIM)!r} but its manifest says dim={dim}")
    if meta.get(META_CONTEXT) != ",".join(CONTEXT_FEATURES):
        raise ModelError(f"{where} expects context features {meta.get(META_CONTEXT)!r}")
    if meta.get(META_MODEL_VERSION) != model_version:
        raise ModelError(f"{where} is model {meta.get(META_MODEL_VERSION)!r} but its manifest says {model_version!r}")
    expected = input_shapes(dim)
    got = {i.name: i for i in session.get_inputs()}
    if set(got) != set(expected):
        raise ModelError(f"{where} has inputs {sorted(got)}, signature v1 needs {sorted(expected)}")
    for name, shape in expected.items():
        node = got[name]
        ok = node.type == "tensor(float)" and len(node.shape) == len(shape)
        # A dynamic axis of v1 must be dynamic in the model too; a fixed axis must have the right size.
        ok = ok and all(
            not isinstance(s, int) if isinstance(ax, str) else s == ax for s, ax in zip(node.shape, shape, strict=False)
        )
        if not ok:
            raise ModelError(f"{where}: input {name} is {node.type} {node.shape}, signature v1 needs float {shape}")
    outs = session.get_outputs()
    if [o.name for o in outs] != list(OUTPUT_NAMES) or outs[0].type != "tensor(float)" or len(outs[0].shape) != 2:
        raise ModelError(f"{where}: outputs must be exactly float scores [batch, k]")
    return model_version
