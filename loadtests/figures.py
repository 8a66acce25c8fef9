"""Pure computations of the benchmark's figures from what the probes collected (no I/O here)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from infra.prom_text import histogram_quantile
from loadtests.probes import Sample, merge_buckets

QUANTILES = (0.5, 0.95, 0.99, 0.999)


def _q_name(q: float) -> str:
    return "p" + f"{q * 100:g}".replace(".", "_")


def active_window(rows: Sequence[Sample], target: float) -> tuple[Sample, Sample] | None:
    """The sample just before processing started and the first one at ``target`` events (or the last)."""
    if len(rows) < 2:
        return None
    started = next((i for i, r in enumerate(rows) if r.events > 0), None)
    if started is None:
        return None
    a = rows[max(0, started - 1)]
    b = next((r for r in rows[started:] if r.events >= target), rows[-1])
    return (a, b) if b.t > a.t else None


def throughput(rows: Sequence[Sample], target: float) -> float:
    """Events processed per second between the start of processing and ``target`` events."""
    w = active_window(rows, target)
    return (w[1].events - w[0].events) / (w[1].t - w[0].t) if w else math.nan


def hist_quantiles(buckets: dict[float, float]) -> dict[str, float]:
    """p50..p99.9 in milliseconds, interpolated inside buckets as PromQL does."""
    pairs = list(buckets.items())
    return {_q_name(q): histogram_quantile(q, pairs) * 1000.0 for q in QUANTILES} | {
        "count": max(buckets.values(), default=0.0)
    }


def final_hist(rows: Sequence[Sample], which: str) -> dict[float, float]:
    last = rows[-1]
    return merge_buckets([getattr(w, which) for w in last.workers])


def sample_quantiles(values_ms: np.ndarray) -> dict[str, float]:
    if len(values_ms) == 0:
        return {_q_name(q): math.nan for q in QUANTILES} | {"count": 0}
    qs = np.percentile(values_ms, [q * 100 for q in QUANTILES])
    return {_q_name(q): float(v) for q, v in zip(QUANTILES, qs, strict=True)} | {
        "count": int(len(values_ms)),
        "max": float(values_ms.max()),
    }


def series(rows: Sequence[Sample], step: int = 2) -> dict[str, list[float]]:
    """Per-interval figures over time: processed and produced rates, histogram p50/p99 (ms), lag, backlog."""
    out: dict[str, list[float]] = {k: [] for k in ("t", "processed_per_s", "produced_per_s", "p50_ms", "p99_ms")}
    out["lag"] = [r.lag for r in rows]
    out["backlog"] = [r.produced - r.events for r in rows]
    out["t_all"] = [r.t for r in rows]
    for i in range(step, len(rows), step):
        a, b = rows[i - step], rows[i]
        dt = b.t - a.t
        ha, hb = (merge_buckets([w.e2e for w in r.workers]) for r in (a, b))
        delta = [(le, hb.get(le, 0.0) - ha.get(le, 0.0)) for le in hb]
        out["t"].append(b.t)
        out["processed_per_s"].append((b.events - a.events) / dt)
        out["produced_per_s"].append((b.produced - a.produced) / dt)
        out["p50_ms"].append(histogram_quantile(0.5, delta) * 1000.0)
        out["p99_ms"].append(histogram_quantile(0.99, delta) * 1000.0)
    return out


def process_usage(rows: Sequence[Sample], window: tuple[Sample, Sample] | None) -> dict[str, dict[str, Any]]:
    """Per process: mean CPU (% of one core) over the window and peak RSS (MiB) over the run."""
    out: dict[str, dict[str, Any]] = {}
    names = {n for r in rows for n in r.procs}
    for name in sorted(names):
        rss = [r.procs[name].rss_bytes for r in rows if r.procs.get(name) is not None]  # type: ignore[union-attr]
        cpu = math.nan
        if window is not None:
            a, b = window[0].procs.get(name), window[1].procs.get(name)
            if a is not None and b is not None and window[1].t > window[0].t:
                cpu = 100.0 * (b.cpu_s - a.cpu_s) / (window[1].t - window[0].t)
        out[name] = {"cpu_percent": cpu, "rss_peak_mib": max(rss) / 2**20 if rss else math.nan}
    return out


def freshness_series(rows_ms: np.ndarray, t0_ms: float, bin_s: float = 1.0) -> dict[str, list[float]]:
    """Per ``bin_s`` of receive time: p50 and p99 of generated - event (ms), from the recommendations topic."""
    out: dict[str, list[float]] = {"t": [], "p50_ms": [], "p99_ms": []}
    if len(rows_ms) == 0:
        return out
    t = (rows_ms[:, 0] - t0_ms) / 1000.0
    lat = rows_ms[:, 2] - rows_ms[:, 1]
    bins = np.floor(t / bin_s).astype(np.int64)
    for b in np.unique(bins):
        sel = lat[bins == b]
        out["t"].append(float((b + 1) * bin_s))
        out["p50_ms"].append(float(np.percentile(sel, 50)))
        out["p99_ms"].append(float(np.percentile(sel, 99)))
    return out


def worker_counts(last: Sample) -> dict[str, float]:
    """Recommendation lists by kind and the mean micro-batch size, summed over the workers."""
    model = sum(w.recs_model for w in last.workers)
    fallback = sum(w.recs_fallback for w in last.workers)
    batches = sum(w.batches for w in last.workers)
    return {
        "recs_model": model,
        "recs_fallback": fallback,
        "fallback_share": fallback / (model + fallback) if model + fallback else math.nan,
        "batches": batches,
        "mean_batch_events": sum(w.batch_events for w in last.workers) / batches if batches else math.nan,
    }


def per_cpu_second(events_per_s: float, processes: dict[str, dict[str, Any]], prefix: str) -> float:
    """Events per CPU-second of the processes named ``prefix*``: a throughput less sensitive to a shared
    machine than events/s (it ignores time spent waiting for a core)."""
    cpu = sum(
        p["cpu_percent"] for n, p in processes.items() if n.startswith(prefix) and math.isfinite(p["cpu_percent"])
    )
    return events_per_s / (cpu / 100.0) if cpu > 0 else math.nan
