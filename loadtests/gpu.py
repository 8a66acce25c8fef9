"""GPU rescoring benchmark: the session model on the CPU provider against the CUDA provider, same inputs.

    python -m loadtests.gpu                                   # default bundle, batches 1,8,32,128,512, K=200
    python -m loadtests.gpu --batches 1,64,1024 --candidates 500 --cpu-threads 1,16 --repeats 300
    python -m loadtests.gpu --render DIR                      # re-write report.md and the plot from results.json

For each batch size B (users per model call) it builds one set of v1 inputs (``make_inputs``: candidates
drawn from the bundle's item embeddings) and times ``serving.scorer.OnnxScorer.score`` on it for every
variant: ``cpu-<T>t`` (CPUExecutionProvider, T intra-op threads; 1 is what the worker uses), ``cuda``
(CUDAExecutionProvider, plain ``session.run``) and ``cuda+iobinding`` (the scorer's default on CUDA:
``serving.scorer.BoundRunner``). A timed call is the serving call: host numpy in, host numpy scores out,
copies included. ``cuda-resident`` is no serving call but its floor: the inputs already on the GPU, the
scores left there (``resident_call``), so the difference to the others is what the host copies cost.
Reported per variant and B: median and p95 ms per call, users/s and candidate-scores/s at the median, and
the largest absolute difference of its scores from the first CPU variant's (parity) with the share of
users whose top-20 is the same. With ``--mixed MAX`` it also times calls whose size changes every call
(uniform in 1..MAX users, the same sequence for every variant), as the worker's micro-batches do. It also
loads the scorer with ``device="cuda"`` in a child process that sees no GPU (``CUDA_VISIBLE_DEVICES=""``)
and records the provider it falls back to.

Where CUDA cannot be used the CPU variants are still measured and the report says
"GPU path not measured: <why>". Needs only numpy and onnxruntime (onnxruntime-gpu for CUDA) beside the
scorer's own modules; tqdm and matplotlib are used when installed (``--render`` draws the plot later).
Output in ``--out`` (default ``.segue/bench/gpu-<timestamp>``): results.json, report.md, gpu.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnxruntime as ort

from loadtests import gpu_report
from models_onnx.bundle import read_manifest
from models_onnx.signature import INPUT_NAMES, N_CONTEXT, OUTPUT_NAMES
from serving.scorer import CUDA, OnnxScorer
from streams.errors import ModelError

DEFAULT_BUNDLE: Final = Path(".segue/models/default")  # streams.settings.DEFAULT_MODEL_DIR (pydantic-free here)
FORMAT: Final = "segue-gpu-bench"
VERSION: Final = 1
TOP_N: Final = 20
ROOT: Final = Path(__file__).resolve().parents[1]  # where ``python -m loadtests.gpu`` resolves


@dataclass(frozen=True)
class Variant:
    """One way of running the model: ``device`` for ``OnnxScorer.load``, its threads and IOBinding choice."""

    name: str
    device: str
    threads: int
    io_binding: bool
    resident: bool = False  # inputs already on the GPU, scores left there: the floor, not a serving call


def variants(cpu_threads: Sequence[int]) -> list[Variant]:
    """The CPU variants (one per thread count, the first is the parity reference), then the CUDA ones."""
    cpu = [Variant(f"cpu-{t}t", "cpu", t, False) for t in cpu_threads]
    return [
        *cpu,
        Variant("cuda", "cuda", 1, False),
        Variant("cuda+iobinding", "cuda", 1, True),
        Variant("cuda-resident", "cuda", 1, False, resident=True),
    ]


def make_inputs(items: np.ndarray, batch: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """v1 inputs for ``batch`` users: session_pos, session_neg, taste [B, D], context [B, 8], candidates [B, K, D].

    ``items`` [N, D] are the catalog's embeddings; candidates are drawn from them, the session vectors are
    unit means of a few items each, context features are uniform in [0, 1). All float32, C-contiguous.
    """
    n, _ = items.shape

    def unit_means(m: int) -> np.ndarray:  # [B, D]
        v = items[rng.integers(0, n, size=(batch, m))].mean(axis=1)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-6)

    candidates = items[rng.integers(0, n, size=(batch, k))]  # [B, K, D]
    context = rng.random((batch, N_CONTEXT))  # [B, 8]
    arrays = (unit_means(5), unit_means(3), unit_means(20), context, candidates)
    return tuple(np.ascontiguousarray(a, dtype=np.float32) for a in arrays)


def time_calls(
    fn: Callable[[], object],
    repeats: int,
    warmup: int,
    max_seconds: float = math.inf,
    min_calls: int = 20,
    clock: Callable[[], float] = time.perf_counter,
) -> np.ndarray:
    """Milliseconds per call of ``fn`` [n], after ``warmup`` untimed calls.

    ``n`` is ``repeats``, or fewer once the timed calls took ``max_seconds`` and at least ``min_calls`` ran.
    """
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    spent = 0.0
    for i in range(repeats):
        t0 = clock()
        fn()
        out[i] = clock() - t0
        spent += out[i]
        if spent >= max_seconds and i + 1 >= min_calls:
            return out[: i + 1] * 1000.0
    return out * 1000.0


def resident_call(scorer: OnnxScorer, inputs: Sequence[np.ndarray]) -> tuple[Callable[[], object], np.ndarray]:
    """A model call with the v1 ``inputs`` copied to the GPU once and the scores [B, K] left there.

    Returns the call (``run_with_iobinding`` only: what the GPU costs without host copies) and the scores of
    one such call, for parity.
    """
    binding = scorer.session.io_binding()
    values = [ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0) for arr in inputs]
    for name, value in zip(INPUT_NAMES, values, strict=True):
        binding.bind_ortvalue_input(name, value)
    binding.bind_output(OUTPUT_NAMES[0], "cuda", 0)

    def call() -> object:
        scorer.session.run_with_iobinding(binding)  # returns once the provider's stream is done
        return values

    call()
    return call, binding.copy_outputs_to_cpu()[0]


def mixed_cell(
    scorer: OnnxScorer, inputs: Sequence[np.ndarray], sizes: np.ndarray, args: argparse.Namespace
) -> dict[str, float]:
    """Calls whose users per call follow ``sizes`` [n] (cycled), each the first b rows of ``inputs``.

    ``inputs`` are v1 inputs for ``max(sizes)`` users; row slices of C-contiguous arrays stay contiguous.
    Returns the median/p95 ms per call, the mean users per call and users/s over the timed calls.
    """
    position = [0]

    def call() -> object:
        b = int(sizes[position[0] % len(sizes)])
        position[0] += 1
        return scorer.score(*(a[:b] for a in inputs))

    ms = time_calls(call, args.repeats, args.warmup, args.cell_seconds)
    users = sizes[(args.warmup + np.arange(len(ms))) % len(sizes)]  # the sizes of the timed calls
    return {
        "median_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "calls": int(len(ms)),
        "mean_users": float(users.mean()),
        "users_per_s": float(users.sum() / (ms.sum() / 1000.0)),
    }


def summarise(ms: np.ndarray, batch: int, k: int) -> dict[str, float]:
    """Median/p95/mean/min ms per call and, at the median, users/s and candidate-scores/s."""
    median = float(np.median(ms))
    per_s = 1000.0 / median if median > 0 else float("nan")
    return {
        "median_ms": median,
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "calls": int(len(ms)),
        "users_per_s": batch * per_s,
        "scores_per_s": batch * k * per_s,
    }


def parity(scores: np.ndarray, reference: np.ndarray, top_n: int = TOP_N) -> dict[str, float]:
    """Largest |scores - reference| and the share of users [B] whose top-``top_n`` set is the same."""
    n = min(top_n, scores.shape[1])
    top = np.sort(np.argsort(-scores, axis=1, kind="stable")[:, :n], axis=1)
    ref = np.sort(np.argsort(-reference, axis=1, kind="stable")[:, :n], axis=1)
    return {
        "max_abs_diff": float(np.abs(scores - reference).max()),
        "top_same": float(np.mean(np.all(top == ref, axis=1))),
    }


def gpu_name() -> dict[str, str] | None:
    """Name, driver and memory of GPU 0 from nvidia-smi, or None where there is none."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    query = "--query-gpu=name,driver_version,memory.total"
    try:
        line = subprocess.run(
            [smi, query, "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True
        ).stdout.splitlines()[0]
    except (subprocess.SubprocessError, OSError, IndexError):
        return None
    name, driver, memory = (part.strip() for part in [*line.split(","), "", ""][:3])
    return {"name": name, "driver": driver, "memory": memory}


def device_info() -> dict[str, Any]:
    """What ran the benchmark: onnxruntime, its providers, the GPU (nvidia-smi) and the CPU."""
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    build = getattr(ort, "get_build_info", lambda: "")()
    return {
        "onnxruntime": ort.__version__,
        "onnxruntime_build": build,
        "available_providers": ort.get_available_providers(),
        "gpu": gpu_name(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def why_not_cuda(scorer: OnnxScorer | None, error: str | None) -> str:
    """The reason the CUDA provider is not in use, for the report."""
    if error:
        return f"the scorer could not be loaded with device=cuda: {error}"
    if CUDA not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} here has no CUDAExecutionProvider (install onnxruntime-gpu)"
    smi = "no NVIDIA driver (nvidia-smi not found)" if shutil.which("nvidia-smi") is None else "nvidia-smi found"
    provider = scorer.provider if scorer else "?"
    return (
        f"onnxruntime {ort.__version__} lists CUDAExecutionProvider but could not create it, so the session runs "
        f"on {provider} ({smi}; it needs a CUDA device and the CUDA 13 / cuDNN 9 libraries)"
    )


def load_variants(bundle: Path, chosen: Sequence[Variant]) -> tuple[dict[str, OnnxScorer], dict[str, dict[str, Any]]]:
    """Scorers for the variants that run where asked, and per variant what it runs on or why it is skipped."""
    scorers: dict[str, OnnxScorer] = {}
    status: dict[str, dict[str, Any]] = {}
    for v in chosen:
        scorer, error = None, None
        try:
            scorer = OnnxScorer.load(bundle, device=v.device, intra_op_threads=v.threads, io_binding=v.io_binding)
        except Exception as exc:  # noqa: BLE001 - reported, the other variants still run
            error = f"{type(exc).__name__}: {exc}"
        usable = scorer is not None and (v.device == "cpu" or scorer.provider == CUDA)
        status[v.name] = {
            "device": v.device,
            "threads": v.threads,
            "io_binding": v.io_binding,
            "resident": v.resident,
            "provider": scorer.provider if scorer else None,
            "measured": usable,
            "reason": None if usable else why_not_cuda(scorer, error) if v.device == "cuda" else error,
        }
        if usable and scorer is not None:
            scorers[v.name] = scorer
    return scorers, status


def fallback_check(bundle: Path) -> dict[str, Any]:
    """Load the scorer with device=cuda in a child process that sees no GPU; its provider and log lines."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "loadtests.gpu", "--probe-provider", str(Path(bundle).resolve())]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    except (subprocess.SubprocessError, OSError) as exc:
        return {"env": "CUDA_VISIBLE_DEVICES=''", "ok": False, "error": str(exc)}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    return {"env": "CUDA_VISIBLE_DEVICES=''", "ok": done.returncode == 0 and bool(result), **result} | (
        {} if done.returncode == 0 else {"error": done.stderr[-2000:]}
    )


def probe_provider(bundle: Path) -> dict[str, Any]:
    """``OnnxScorer.load(bundle, device="cuda")``, one scoring call; the provider used and warnings logged."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("serving.scorer")
    handler = Keep(logging.WARNING)
    logger.addHandler(handler)
    try:
        scorer = OnnxScorer.load(bundle, device="cuda")
    finally:
        logger.removeHandler(handler)
    items = np.load(Path(bundle) / "items.npy")
    scores = scorer.score(*make_inputs(items, 2, 5, np.random.default_rng(0)))
    return {
        "device": "cuda",
        "provider": scorer.provider,
        "requested": scorer.requested_providers,
        "io_binding": scorer.io_binding,
        "scored": list(scores.shape),
        "warnings": records,
    }


def _progress(steps: list[tuple[int, Variant]], show: bool) -> Iterable[tuple[int, Variant]]:
    if not show:
        return steps
    try:
        from tqdm import tqdm
    except ImportError:  # optional where the benchmark runs: numpy + onnxruntime are enough
        return steps
    return tqdm(steps, desc="batch x variant", unit="step", file=sys.stderr)


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """Measure every variant at every batch size; the results as written to results.json."""
    bundle = Path(args.bundle)
    manifest = read_manifest(bundle)
    items = np.load(bundle / "items.npy")  # [N, D]
    chosen = variants(args.cpu_threads)
    scorers, status = load_variants(bundle, chosen)
    reference = chosen[0].name
    if reference not in scorers:
        raise ModelError(f"the CPU scorer for {bundle} could not be loaded: {status[reference]['reason']}")
    cuda_reasons = [status[v.name]["reason"] for v in chosen if v.device == "cuda" and status[v.name]["reason"]]
    rows: list[dict[str, Any]] = []
    steps = [(b, v) for b in args.batches for v in chosen if v.name in scorers]
    ref_scores: dict[int, np.ndarray] = {}
    for b, v in _progress(steps, not args.no_progress):
        inputs = make_inputs(items, b, args.candidates, np.random.default_rng([args.seed, b]))
        scorer = scorers[v.name]
        if v.resident:
            call, scores = resident_call(scorer, inputs)
        else:
            call, scores = (lambda s=scorer, x=inputs: s.score(*x)), scorer.score(*inputs)
        if v.name == reference:
            ref_scores[b] = scores
        ms = time_calls(call, args.repeats, args.warmup, args.cell_seconds)
        rows.append({"batch": b, "variant": v.name} | summarise(ms, b, args.candidates) | parity(scores, ref_scores[b]))
    mixed = None
    if args.mixed:
        rng = np.random.default_rng([args.seed, 0, args.mixed])
        sizes = rng.integers(1, args.mixed + 1, size=max(args.repeats, 64))  # [n] users per call
        inputs = make_inputs(items, args.mixed, args.candidates, rng)
        cells = [v for v in chosen if v.name in scorers and not v.resident]
        mixed = {
            "max_users": args.mixed,
            "rows": [{"variant": v.name} | mixed_cell(scorers[v.name], inputs, sizes, args) for v in cells],
        }
    return {
        "format": FORMAT,
        "version": VERSION,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m loadtests.gpu " + " ".join(argv),
        "bundle": {"path": str(bundle), "model_version": manifest["model_version"], "dim": int(manifest["dim"])},
        "candidates": args.candidates,
        "batches": list(args.batches),
        "repeats": args.repeats,
        "cell_seconds": args.cell_seconds,
        "warmup": args.warmup,
        "reference": reference,
        "device": device_info(),
        "variants": status,
        "gpu_measured": not cuda_reasons,
        "gpu_reason": cuda_reasons[0] if cuda_reasons else None,
        "fallback": fallback_check(bundle) if not args.no_fallback_check else None,
        "rows": rows,
        "mixed": mixed,
    }


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,8,32, got {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="model bundle (default %(default)s)")
    p.add_argument("--batches", type=_ints, default=[1, 8, 32, 128, 512], help="users per call, e.g. 1,8,32")
    p.add_argument("--candidates", type=int, default=200, help="candidates per user (K, default %(default)s)")
    p.add_argument("--cpu-threads", type=_ints, default=[1], help="CPU variants' intra-op threads, e.g. 1,16")
    p.add_argument("--repeats", type=int, default=200, help="timed calls per batch size and variant")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls first")
    p.add_argument(
        "--cell-seconds", type=float, default=5.0, help="stop a cell's timed calls after this long (>= 20 calls)"
    )
    p.add_argument("--preload-cuda", action="store_true", help="onnxruntime.preload_dlls() first (pip CUDA libs)")
    p.add_argument(
        "--mixed", type=int, default=0, metavar="MAX", help="also calls of 1..MAX users, a new size each call"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="output dir (default .segue/bench/gpu-<timestamp>)")
    p.add_argument("--no-plot", action="store_true", help="skip gpu.png (render it later with --render)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-fallback-check", action="store_true", help="skip the CUDA_VISIBLE_DEVICES='' child")
    p.add_argument("--render", type=Path, default=None, metavar="DIR", help="re-write report.md + gpu.png")
    p.add_argument("--probe-provider", type=Path, default=None, metavar="BUNDLE", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.candidates < 1 or args.repeats < 1 or args.warmup < 0 or args.mixed < 0:
        p.error("--candidates and --repeats must be at least 1, --warmup and --mixed at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.probe_provider is not None:
        print(json.dumps(probe_provider(args.probe_provider)), flush=True)
        return 0
    if args.render is not None:
        gpu_report.write(args.render, gpu_report.read(args.render), plot=True)
        print(f"rendered {args.render / gpu_report.REPORT} and {args.render / gpu_report.PLOT}")
        return 0
    if not (Path(args.bundle) / "model.onnx").is_file():
        print(f"no model bundle at {args.bundle}: run `make model` or pass --bundle DIR", file=sys.stderr)
        return 2
    if args.preload_cuda and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels of this environment, before any session
    out = args.out or Path(".segue/bench") / datetime.now(UTC).strftime("gpu-%Y%m%dT%H%M%SZ")
    results = run(args, argv)
    gpu_report.write(out, results, plot=not args.no_plot)
    print(gpu_report.markdown(results))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
