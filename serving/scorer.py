"""The session model at serving time: an ONNX Runtime session checked against signature v1 or v2.

``OnnxScorer.load(bundle_dir, device)`` picks execution providers with ``select_providers``, creates
the session, and reports in ``.provider`` the provider ONNX Runtime actually uses
(``session.get_providers()[0]``), not the one asked for: onnxruntime-gpu lists CUDA as available even
where the CUDA libraries are missing, and then runs on CPU (after logging an error of its own). "auto" on a
machine without the NVIDIA driver (``libcuda.so.1`` does not load) asks for CPU only, so no such error is
logged where there is no GPU at all. Asking for "cuda" where CUDA cannot be used logs a warning and serves on
CPU; it never fails the load. A model
whose inputs, outputs or metadata do not match v1 (or its bundle's manifest) is refused with
``ModelError``. A v2 model (``models_onnx.signature``) also takes per-candidate evidence
(``cand_features``); its bundle's track stats are loaded into ``OnnxScorer.features``
(``serving.features.FeatureBuilder``), which ``serving.rescore.Rescorer`` uses to compute them.

On CUDA, ``score`` runs through an IOBinding (``BoundRunner``): per input shape it keeps device buffers
(the four small inputs packed back to back, the candidates, the output), copies the host arrays into them
(two ``OrtValue.update_inplace`` calls), runs ``session.run_with_iobinding`` and copies the scores back,
so ONNX Runtime allocates and binds nothing per call. On CPU it calls ``session.run`` as it always did.
Both paths take and return the same tensors. CUDA sessions run with TF32 off (``CUDA_OPTIONS``).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import onnxruntime as ort

from models_onnx.bundle import MODEL, read_manifest, read_track_stats, train_hint
from models_onnx.signature import (
    CANDIDATE_FEATURES,
    META_CANDIDATE_FEATURES,
    META_CONTEXT,
    META_DIM,
    META_MODEL_VERSION,
    META_SIGNATURE,
    N_CANDIDATE_FEATURES,
    SIGNATURE,
    input_names,
    input_shapes,
    output_names,
)
from serving.features import FeatureBuilder
from streams.errors import ConfigError, ModelError
from streams.session import CONTEXT_FEATURES

log = logging.getLogger(__name__)

CUDA: Final = "CUDAExecutionProvider"
CPU: Final = "CPUExecutionProvider"
DEVICES: Final = ("auto", "cuda", "cpu")
# Full float32 matrix products on CUDA: with the provider's TF32 default, scores moved by up to 7e-3 from CPU's
# and up to 12% of users got another top-20 (docs/benchmarks.md, "GPU rescoring"); this small model gains
# nothing measurable from TF32.
CUDA_OPTIONS: Final = {"use_tf32": "0"}
# On CPU a call is run in parts of at most this many candidates (users x candidates per user): the model's
# [users, K, *] intermediates then stay in cache. 256 users x 250 candidates in one run cost 49 us per user,
# in parts of 64 users 30 us (docs/benchmarks.md, "What each optimisation changed"); scores differ by float rounding.
CPU_CANDIDATES_PER_RUN: Final = 16_384


def select_providers(device: str, available: Sequence[str], driver: bool = True) -> list[str]:
    """Execution providers to request for ``device`` given ONNX Runtime's ``available`` providers.

    "cpu" -> CPU only; "auto" and "cuda" -> CUDA then CPU when CUDA is available, else CPU only; "auto" without
    the NVIDIA driver (``driver`` False) -> CPU only.
    """
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu" or CUDA not in available or (device == "auto" and not driver):
        return [CPU]
    return [CUDA, CPU]


def nvidia_driver_present() -> bool:
    """True if the NVIDIA driver's user-space library (``libcuda.so.1``) loads: without it no GPU can run."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class _Slot:
    """The buffers of one input shape (batch B, candidates K), on the session's device.

    ``packed`` holds session_pos, session_neg, taste [B, D] and context [B, 8] back to back (float32
    [B * (3D + 8)]), bound to the four inputs at their offsets, so a call makes two host -> device copies
    (``staging`` into ``packed``, then the candidates), not five.
    """

    binding: ort.IOBinding
    staging: np.ndarray  # host float32 [B * (3D + 8)]
    packed: ort.OrtValue  # device float32 [B * (3D + 8)]
    per_candidate: list[ort.OrtValue]  # device: candidates float32 [B, K, D] (v2: and cand_features [B, K, F])
    outputs: list[ort.OrtValue]  # device float32 [B, K] each


class BoundRunner:
    """Runs a v1 session through an IOBinding with device buffers reused per input shape.

    ``device_type`` is where the buffers live ("cuda" for the CUDA provider; "cpu" works too and is what the
    unit tests exercise). At most ``slots`` shapes (batch, k) are kept, least recently used dropped first.
    One call at a time (a lock): a slot's buffers are overwritten by the next call of the same shape.
    """

    def __init__(self, session: ort.InferenceSession, device_type: str, device_id: int = 0, slots: int = 8) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self._session = session
        self.device_type = device_type
        self.device_id = device_id
        self._slots_max = slots
        self._slots: OrderedDict[tuple[int, int], _Slot] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """The (batch, k) shapes that have buffers, least recently used first."""
        return list(self._slots)

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Scores float32 [B, K] (the first output) for contiguous float32 ``inputs``, already checked."""
        return self.run_all(inputs)[0]

    def run_all(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Outputs float32 [B, K] (in the signature's order) for contiguous float32 ``inputs`` in the
        signature's input order, already checked."""
        key = (int(inputs[0].shape[0]), int(inputs[4].shape[1]))
        with self._lock:
            slot = self._slots.pop(key, None) or self._slot(inputs)
            self._slots[key] = slot
            while len(self._slots) > self._slots_max:
                self._slots.popitem(last=False)
            offset = 0
            for arr in inputs[:4]:
                slot.staging[offset : offset + arr.size] = arr.ravel()
                offset += arr.size
            # update_inplace copies host -> device and waits for the copy (a synchronous cudaMemcpy on CUDA).
            slot.packed.update_inplace(slot.staging)
            for value, arr in zip(slot.per_candidate, inputs[4:], strict=True):
                value.update_inplace(arr)
            self._session.run_with_iobinding(slot.binding)
            outs = slot.binding.copy_outputs_to_cpu()  # device -> host, float32 [B, K] each
            # On CPU the returned arrays may share the slot's buffers, which the next call overwrites.
            return [o.copy() for o in outs] if self.device_type == "cpu" else list(outs)

    def _slot(self, inputs: Sequence[np.ndarray]) -> _Slot:
        binding = self._session.io_binding()
        total = sum(arr.size for arr in inputs[:4])
        packed = ort.OrtValue.ortvalue_from_shape_and_type((total,), np.float32, self.device_type, self.device_id)
        offset = 0
        wanted = input_names(2) if len(inputs) > 5 else input_names(1)
        for name, arr in zip(wanted[:4], inputs[:4], strict=True):
            ptr = packed.data_ptr() + offset * np.dtype(np.float32).itemsize
            binding.bind_input(name, self.device_type, self.device_id, np.float32, list(arr.shape), ptr)
            offset += arr.size
        per_candidate = []
        for name, arr in zip(wanted[4:], inputs[4:], strict=True):
            value = ort.OrtValue.ortvalue_from_shape_and_type(arr.shape, np.float32, self.device_type, self.device_id)
            binding.bind_ortvalue_input(name, value)
            per_candidate.append(value)
        shape = (inputs[0].shape[0], inputs[4].shape[1])
        outs = []
        for o in self._session.get_outputs():
            out = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, self.device_type, self.device_id)
            binding.bind_ortvalue_output(o.name, out)
            outs.append(out)
        return _Slot(binding, np.empty(total, np.float32), packed, per_candidate, outs)


class OnnxScorer:
    """Scores candidates for a batch of session states with a v1 or v2 model. Use ``OnnxScorer.load``.

    ``features``: for a v2 model, the builder of its candidate features (from the bundle), else None.

    ``io_binding``: None (default) binds inputs and outputs when the provider in use is CUDA and calls
    ``session.run`` otherwise; True or False forces either path (benchmarks, tests).
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        model_version: str,
        dim: int,
        requested: list[str],
        io_binding: bool | None = None,
        signature: int = SIGNATURE,
        features: FeatureBuilder | None = None,
    ) -> None:
        self._session = session
        self.model_version = model_version
        self.dim = dim
        self.signature = signature
        self.features = features
        self.requested_providers = requested
        self.provider: str = session.get_providers()[0]
        on_cuda = self.provider == CUDA
        self.io_binding: bool = on_cuda if io_binding is None else io_binding
        self._runner: BoundRunner | None = None
        if self.io_binding:
            self._runner = BoundRunner(session, "cuda" if on_cuda else "cpu", _device_id(session) if on_cuda else 0)

    @staticmethod
    def load(
        bundle_dir: Path | str, device: str = "auto", intra_op_threads: int = 1, io_binding: bool | None = None
    ) -> OnnxScorer:
        """Load and validate ``model.onnx`` of the bundle at ``bundle_dir``; ModelError if unservable.

        ``io_binding`` as in ``OnnxScorer``: None binds on CUDA only.
        """
        manifest = read_manifest(bundle_dir)
        path = Path(bundle_dir) / MODEL
        if not path.is_file():
            raise ModelError(f"model bundle {bundle_dir} has no {MODEL}: {train_hint(bundle_dir)}")
        available = ort.get_available_providers()
        requested = select_providers(device, available, driver=CUDA not in available or nvidia_driver_present())
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
        signature = int(manifest["signature"])
        version = validate_session(session, dim, str(manifest["model_version"]), str(path), signature)
        features = FeatureBuilder(read_track_stats(bundle_dir, manifest)) if signature >= 2 else None
        return OnnxScorer(session, version, dim, requested, io_binding, signature, features)

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
        cand_features: np.ndarray | None = None,  # v2: [B, K, F]; None: zeros (no evidence)
    ) -> np.ndarray:  # float32 [B, K]
        """One ONNX Runtime run (bound on CUDA); ValueError if the shapes do not fit the signature with this
        ``dim``. A v1 model ignores ``cand_features``."""
        return self.score_all(session_pos, session_neg, taste, context, candidates, cand_features)[0]

    def score_all(
        self,
        session_pos: np.ndarray,  # [B, D]
        session_neg: np.ndarray,  # [B, D]
        taste: np.ndarray,  # [B, D]
        context: np.ndarray,  # [B, 8]
        candidates: np.ndarray,  # [B, K, D]
        cand_features: np.ndarray | None = None,  # v2: [B, K, F]
    ) -> list[np.ndarray]:  # float32 [B, K] per output: v1 scores; v2 scores, keep
        """Every output of the model (``models_onnx.signature.output_names``)."""
        arrays = [session_pos, session_neg, taste, context, candidates]
        if self.signature >= 2:
            if cand_features is None:
                shape = np.shape(candidates)
                cand_features = np.zeros((*shape[:2], N_CANDIDATE_FEATURES), np.float32)
            arrays.append(cand_features)
        inputs = [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]
        b = inputs[0].shape[0] if inputs[0].ndim == 2 else -1
        k = inputs[4].shape[1] if inputs[4].ndim == 3 else -1
        names = input_names(self.signature)
        shapes = input_shapes(self.dim, self.signature)
        for name, arr in zip(names, inputs, strict=True):
            want = tuple(b if ax == "batch" else k if ax == "k" else ax for ax in shapes[name])
            if b < 0 or k < 0 or arr.shape != want:
                raise ValueError(f"{name} has shape {arr.shape}, expected {want} (batch, k, dim={self.dim})")
        outputs = output_names(self.signature)
        if b == 0 or k == 0:
            return [np.zeros((b, k), np.float32) for _ in outputs]
        if self._runner is not None:
            return self._runner.run_all(inputs)
        rows = max(1, CPU_CANDIDATES_PER_RUN // k) if self.provider == CPU else b
        if b <= rows:
            return list(self._session.run(list(outputs), dict(zip(names, inputs, strict=True))))
        parts = [
            self._session.run(list(outputs), dict(zip(names, [a[i : i + rows] for a in inputs], strict=True)))
            for i in range(0, b, rows)
        ]
        return [np.concatenate([part[o] for part in parts]) for o in range(len(outputs))]


def _session(path: Path, opts: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    options = [dict(CUDA_OPTIONS) if p == CUDA else {} for p in providers]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers, provider_options=options)


def _device_id(session: ort.InferenceSession) -> int:
    """The GPU the session's CUDA provider runs on (its ``device_id`` option, 0 when unset)."""
    return int(session.get_provider_options().get(CUDA, {}).get("device_id", 0))


def validate_session(
    session: ort.InferenceSession, dim: int, model_version: str, where: str, signature: int = SIGNATURE
) -> str:
    """Check inputs, outputs and metadata against ``signature`` and the manifest; return the model version."""
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get(META_SIGNATURE) != str(signature):
        raise ModelError(f"{where} has {META_SIGNATURE}={meta.get(META_SIGNATURE)!r}; its manifest says {signature}")
    if signature >= 2 and meta.get(META_CANDIDATE_FEATURES) != ",".join(CANDIDATE_FEATURES):
        raise ModelError(f"{where} expects candidate features {meta.get(META_CANDIDATE_FEATURES)!r}")
    if meta.get(META_DIM) != str(dim):
        raise ModelError(f"{where} has {META_DIM}={meta.get(META_DIM)!r} but its manifest says dim={dim}")
    if meta.get(META_CONTEXT) != ",".join(CONTEXT_FEATURES):
        raise ModelError(f"{where} expects context features {meta.get(META_CONTEXT)!r}")
    if meta.get(META_MODEL_VERSION) != model_version:
        raise ModelError(f"{where} is model {meta.get(META_MODEL_VERSION)!r} but its manifest says {model_version!r}")
    expected = input_shapes(dim, signature)
    got = {i.name: i for i in session.get_inputs()}
    if set(got) != set(expected):
        raise ModelError(f"{where} has inputs {sorted(got)}, signature v{signature} needs {sorted(expected)}")
    for name, shape in expected.items():
        node = got[name]
        ok = node.type == "tensor(float)" and len(node.shape) == len(shape)
        # A dynamic axis of v1 must be dynamic in the model too; a fixed axis must have the right size.
        ok = ok and all(
            not isinstance(s, int) if isinstance(ax, str) else s == ax for s, ax in zip(node.shape, shape, strict=False)
        )
        if not ok:
            raise ModelError(
                f"{where}: input {name} is {node.type} {node.shape}, signature v{signature} needs float {shape}"
            )
    outs = session.get_outputs()
    names = list(output_names(signature))
    if [o.name for o in outs] != names or any(o.type != "tensor(float)" or len(o.shape) != 2 for o in outs):
        raise ModelError(f"{where}: outputs must be exactly float {', '.join(names)} [batch, k]")
    return model_version
