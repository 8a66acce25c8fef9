"""The benchmark's output: ``results.json``, ``report.md`` and PNG plots in the output directory."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from loadtests.figures import per_cpu_second  # noqa: E402
from loadtests.profiling import summarise  # noqa: E402
from streams.metrics import LATENCY_BUCKETS  # noqa: E402

PLOTS = ("throughput.png", "latency.png", "lag.png")
TOP_BUCKET_MS = LATENCY_BUCKETS[-1] * 1000.0


def json_safe(x: Any) -> Any:
    """``x`` with non-finite floats as ``None`` and dict keys as strings (JSON has neither NaN nor int keys)."""
    if isinstance(x, float):
        return None if not math.isfinite(x) else x
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def _f(x: Any, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:,.{digits}f}" if isinstance(x, float) else f"{x:,}"


def _lat(x: Any, hist: bool) -> str:
    if hist and isinstance(x, float) and x >= TOP_BUCKET_MS:
        return f">= {TOP_BUCKET_MS:,.0f} (top bucket)"
    return _f(x, 1)


def _per_list(w: dict) -> float:
    lists = (w.get("recs_model") or 0) + (w.get("recs_fallback") or 0)
    return w["events"] / lists if lists and w.get("events") else math.nan


def _lat_row(name: str, q: dict[str, Any], hist: bool = False) -> str:
    cells = " | ".join(_lat(q.get(k), hist) for k in ("p50", "p95", "p99", "p99_9"))
    return f"| {name} | {cells} | {_f(q.get('count'), 0)} |"


def plots(out: Path, r: dict[str, Any]) -> None:
    s, fr = r["series"], r["freshness_series"]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(s["t"], s["processed_per_s"], label="processed by worker(s)")
    ax.plot(s["t"], s["produced_per_s"], label="produced by generator", alpha=0.6)
    ax.set(xlabel="s since start", ylabel="events/s", title="Throughput over time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(s["t"], s["p50_ms"], label=f"histogram p50 (per interval; capped at {TOP_BUCKET_MS / 1000:g} s)")
    ax.plot(s["t"], s["p99_ms"], label="histogram p99 (per interval)")
    ax.plot(fr["t"], fr["p50_ms"], "--", label="topic p50 (generated - event)")
    ax.plot(fr["t"], fr["p99_ms"], "--", label="topic p99 (generated - event)")
    ax.set(xlabel="s since start", ylabel="ms", title="Event -> fresh recommendations latency", yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(s["t_all"], s["lag"], label="consumer lag (high watermark, worker metric)")
    ax.plot(s["t_all"], s["backlog"], "--", label="produced - processed", alpha=0.7)
    ax.set(xlabel="s since start", ylabel="events", title="Consumer lag over time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "lag.png", dpi=100)
    plt.close(fig)


def markdown(r: dict[str, Any]) -> str:
    w, c, n, g, env = r["worker"], r.get("ceiling"), r.get("naive"), r["generator"], r["environment"]
    lines = [
        "# segue benchmark",
        "",
        f"`{r['command']}`",
        "",
        f"Measured on a {env['cpus']}-core machine with broker, Redis, worker and generator co-located; "
        f"load average before/after: {env['load_before']} / {env['load_after']}.",
        f"Source: {r['source']['description']}. {r['source']['events']:,} events, {r['source']['users']:,} users, "
        f"{r['source']['mean_bytes']:.0f} bytes per event, {r['partitions']} partitions, {r['workers']} worker(s), "
        f"{r['candidates']} candidates rescored per user, scorer provider {r['provider']}, "
        f"BLAS threads in the workers: {env.get('blas_threads', 'default')}, worker settings "
        f"{r.get('worker_settings', 'default')}.",
        "",
        f"**{r['gpu']}**",
        "",
        "## Throughput",
        "",
        "| what | events/s |",
        "|---|---:|",
        f"| generator (produced and acknowledged, its own rate; target: {g['target']}) | {_f(g['rate'], 0)} |",
        f"| worker(s): events fully processed (consumed, state, rescored, recs written and published) "
        f"| {_f(w['events_per_s'], 0)} |",
    ]
    gen_cpu = 100.0 * g["cpu_s"] / g["seconds"] if g.get("cpu_s") is not None and g["seconds"] else None
    tail = [
        f"Generator: {g['sent']:,} events in {g['seconds']:.2f} s, {_f(gen_cpu, 0)}% of one core, {g['errors']} errors."
    ]
    if c:
        lines.append(f"| ceiling: aiokafka getmany + msgspec decode only | {_f(c['events_per_s'], 0)} |")
    lines.append(f"| worker(s) per CPU-second of the worker processes | {_f(w.get('events_per_cpu_s'), 0)} |")
    if n:
        lines.append(f"| naive Faust worker, one event at a time | {_f(n['events_per_s'], 0)} |")
        lines.append(f"| naive worker per CPU-second of its process | {_f(n.get('events_per_cpu_s'), 0)} |")
        lines.append(f"| ratio worker / naive | {_f(r.get('ratio_worker_naive'), 2)} |")
    lines += ["", *tail]
    lines += [
        "",
        "## Latency (ms)",
        "",
        "| measurement | p50 | p95 | p99 | p99.9 | count |",
        "|---|---:|---:|---:|---:|---:|",
        _lat_row("event -> recs, worker histogram (per event, bucket-interpolated)", w["e2e_hist_ms"], True),
        _lat_row("event -> recs, recs topic: generated_ms - event_ms (per record)", w["e2e_topic_generated_ms"]),
        _lat_row("event -> recs, recs topic: received - event_ms (per record)", w["e2e_topic_received_ms"]),
        _lat_row("rescoring per batch, worker histogram", w["rescore_hist_ms"]),
    ]
    if n:
        lines.append(_lat_row("naive: event -> recs, histogram", n["e2e_hist_ms"], True))
        lines.append(_lat_row("naive: rescoring per event, histogram", n["rescore_hist_ms"]))
    lines += [
        "",
        f"Consumer lag (sum over partitions, from the fetch high watermark): max {_f(w['lag_max'], 0)}, "
        f"at the end {_f(w['lag_end'], 0)}. Recommendation records read: {w['recs_records']:,}.",
        f"Micro-batches: {_f(w.get('batches'), 0)}, mean {_f(w.get('mean_batch_events'), 1)} events. Lists ranked by "
        f"the model {_f(w.get('recs_model'), 0)}, by retrieval only (model call over its timeout) "
        f"{_f(w.get('recs_fallback'), 0)} ({_f(100 * (w.get('fallback_share') or 0.0), 1)}%); "
        f"{_f(_per_list(w), 2)} events per list (a user's events of one micro-batch make one ranking).",
        "",
        "## Processes (during the worker phase)",
        "",
        "| process | CPU % of one core | peak RSS MiB |",
        "|---|---:|---:|",
    ]
    for name, p in w["processes"].items():
        lines.append(f"| {name} | {_f(p['cpu_percent'], 0)} | {_f(p['rss_peak_mib'], 1)} |")
    prof = r.get("profile") or {}
    if prof.get("stages"):
        lines += ["", f"## Worker profile (py-spy, {prof['seconds']:.0f} s under load, active samples)", ""]
        lines += ["| stage | samples | share |", "|---|---:|---:|"]
        lines += [f"| {st} | {c:,} | {sh:.1%} |" for st, c, sh in prof["stages"]]
    elif prof.get("error"):
        lines += ["", f"Worker profile: {prof['error']}"]
    m = r["redis_memory"]
    lines += [
        "",
        "## Redis memory",
        "",
        f"used_memory {m['before']:,} -> {m['after']:,} bytes for {m['users']:,} users with state: "
        f"**{_f(m['bytes_per_user'], 0)} bytes per user** (state hash + recommendations, incl. key overhead).",
        "",
        "## Plots",
        "",
        *[f"![{p}]({p})" for p in PLOTS],
        "",
    ]
    return "\n".join(lines)


def write(out: Path, r: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(json_safe(r), indent=2) + "\n")
    (out / "report.md").write_text(markdown(r))
    plots(out, r)


def main(argv: list[str] | None = None) -> int:
    """Re-render report.md and the plots from a results.json: ``python -m loadtests.report DIR``."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0])
    r = json.loads((out / "results.json").read_text())
    w, n = r["worker"], r.get("naive")
    w.setdefault("events_per_cpu_s", per_cpu_second(w["events_per_s"], w["processes"], "worker"))
    if n:
        n.setdefault("events_per_cpu_s", per_cpu_second(n["events_per_s"], n["processes"], "naive"))
    if (out / "profile-worker.txt").is_file():  # summarised again with the current stage rules
        r.setdefault("profile", {})["stages"] = summarise((out / "profile-worker.txt").read_text())
    (out / "report.md").write_text(markdown(r))
    plots(out, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
