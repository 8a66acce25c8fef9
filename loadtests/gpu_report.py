"""Output of ``loadtests.gpu``: results.json, report.md and gpu.png (matplotlib optional, imported on use)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

RESULTS: Final = "results.json"
REPORT: Final = "report.md"
PLOT: Final = "gpu.png"


def read(out: Path) -> dict[str, Any]:
    """The results.json of a ``loadtests.gpu`` run in ``out``; ValueError if it is no such file."""
    path = Path(out) / RESULTS
    if not path.is_file():
        raise ValueError(f"{path} does not exist: run `python -m loadtests.gpu --out {out}` first")
    results: dict[str, Any] = json.loads(path.read_text())
    if results.get("format") != "segue-gpu-bench" or results.get("version") != 1:
        raise ValueError(f"{path} is not a segue-gpu-bench v1 result (format={results.get('format')!r})")
    return results


def write(out: Path, results: dict[str, Any], plot: bool = True) -> None:
    """results.json and report.md into ``out``; gpu.png too when ``plot`` and matplotlib is installed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS).write_text(json.dumps(results, indent=2) + "\n")
    drawn = plot and draw(out / PLOT, results)
    text = markdown(results)
    if drawn:
        text += f"\n![latency and throughput per batch size]({PLOT})\n"
    elif plot:
        text += f"\nNo plot: matplotlib is not installed here (`python -m loadtests.gpu --render {out}` elsewhere).\n"
    (out / REPORT).write_text(text)


def _names(results: dict[str, Any]) -> list[str]:
    return [name for name, v in results["variants"].items() if v["measured"]]


def _cell(rows: Sequence[dict[str, Any]], batch: int, name: str, fmt: str) -> str:
    row = next((r for r in rows if r["batch"] == batch and r["variant"] == name), None)
    return fmt.format(**row) if row else "-"


def _rate(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f}"


def device_line(device: dict[str, Any]) -> str:
    gpu = device.get("gpu")
    gpu_text = f"{gpu['name']} (driver {gpu['driver']}, {gpu['memory']})" if gpu else "none (no nvidia-smi)"
    return (
        f"GPU: {gpu_text}; CPU: {device.get('cpu') or '?'}, {device.get('cpu_count')} logical cores; "
        f"onnxruntime {device['onnxruntime']} (providers {', '.join(device['available_providers'])}); "
        f"Python {device.get('python')}"
    )


def markdown(results: dict[str, Any]) -> str:
    """The report: device, GPU verdict, latency, throughput and parity tables, variants, fallback check."""
    names = _names(results)
    rows = results["rows"]
    batches = results["batches"]
    bundle = results["bundle"]
    head = "| users per call | " + " | ".join(names) + " |\n|---:|" + "---:|" * len(names) + "\n"
    if results["gpu_measured"]:
        verdict = "**GPU path measured** (CUDAExecutionProvider, plain run and IOBinding)."
    else:
        verdict = f"**GPU path not measured: {results['gpu_reason']}**"
    lines = [
        "# GPU rescoring benchmark",
        "",
        f"`{results['command']}` ({results['created_utc']})",
        "",
        f"* Device: {device_line(results['device'])}",
        f"* Model: bundle `{bundle['path']}`, model {bundle['model_version']}, dim {bundle['dim']}; "
        f"{results['candidates']} candidates per user; per cell {results['warmup']} warm-up calls, then "
        f"{results['repeats']} timed calls or as many as fit in {results['cell_seconds']:g} s (at least 20); "
        "a call is `OnnxScorer.score` from host arrays to host scores.",
        f"* {verdict}",
        "",
        "## Milliseconds per call: median (p95)",
        "",
        head
        + "".join(
            f"| {b} | " + " | ".join(_cell(rows, b, n, "{median_ms:.3f} ({p95_ms:.3f})") for n in names) + " |\n"
            for b in batches
        ),
        "## Candidate scores per second at the median (users per second)",
        "",
        head
        + "".join(
            f"| {b} | "
            + " | ".join(
                next(
                    (
                        f"{_rate(r['scores_per_s'])} ({_rate(r['users_per_s'])})"
                        for r in rows
                        if r["batch"] == b and r["variant"] == n
                    ),
                    "-",
                )
                for n in names
            )
            + " |\n"
            for b in batches
        ),
        f"## Parity against {results['reference']} (same inputs)",
        "",
        "max |score difference| / share of users with the same top-20",
        "",
        head
        + "".join(
            f"| {b} | " + " | ".join(_cell(rows, b, n, "{max_abs_diff:.2e} / {top_same:.0%}") for n in names) + " |\n"
            for b in batches
        ),
        "## Variants",
        "",
        "| variant | asked for | provider in use | intra-op threads | IOBinding | measured |",
        "|---|---|---|---:|---|---|",
        *(
            f"| {name} | device={v['device']} | {v['provider'] or '-'} | {v['threads']} | "
            f"{'inputs resident on the GPU' if v.get('resident') else 'yes' if v['io_binding'] else 'no'} | "
            f"{'yes' if v['measured'] else 'no: ' + str(v['reason'])} |"
            for name, v in results["variants"].items()
        ),
        "",
    ]
    mixed = results.get("mixed")
    if mixed:
        lines += [
            f"## Mixed batch sizes: 1..{mixed['max_users']} users per call (uniform), a new size every call",
            "",
            "| variant | ms per call, median (p95) | mean users per call | users per second |",
            "|---|---:|---:|---:|",
            *(
                f"| {r['variant']} | {r['median_ms']:.3f} ({r['p95_ms']:.3f}) | {r['mean_users']:.1f} | "
                f"{_rate(r['users_per_s'])} |"
                for r in mixed["rows"]
            ),
            "",
        ]
    fb = results.get("fallback")
    if fb:
        lines += ["## CUDA fallback without a visible GPU", ""]
        if fb.get("ok"):
            warned = "; ".join(fb.get("warnings") or []) or "none"
            lines.append(
                f'`OnnxScorer.load(bundle, device="cuda")` with {fb["env"]}: provider in use {fb["provider"]} '
                f"(requested {', '.join(fb['requested'])}), scored {fb['scored']}; warnings logged: {warned}."
            )
        else:
            lines.append(f"The check with {fb['env']} failed: {fb.get('error', '?')}")
        lines.append("")
    return "\n".join(lines)


def draw(path: Path, results: dict[str, Any]) -> bool:
    """Median ms per call and candidate-scores/s against users per call; False where matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name in _names(results):
        mine = sorted((r for r in results["rows"] if r["variant"] == name), key=lambda r: r["batch"])
        if not mine:
            continue
        b = [r["batch"] for r in mine]
        ax1.plot(b, [r["median_ms"] for r in mine], marker="o", label=name)
        ax2.plot(b, [r["scores_per_s"] for r in mine], marker="o", label=name)
    gpu = results["device"].get("gpu")
    title = gpu["name"] if gpu else "no GPU"
    ax1.set(xscale="log", yscale="log", xlabel="users per call", ylabel="ms per call (median)", title=title)
    ax2.set(
        xscale="log",
        yscale="log",
        xlabel="users per call",
        ylabel="candidate scores / s",
        title=f"{results['candidates']} candidates per user",
    )
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True
