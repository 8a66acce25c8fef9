"""The closed loop's output: ``results.json``, ``report.md`` and PNG plots in the output directory."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from loadtests.report import json_safe  # noqa: E402

PLOTS = ("skip_like_by_position.png", "tradeoff.png")
ARM_STYLE = {
    "segue": ("segue (live stack)", "tab:blue"),
    "segue-inprocess": ("segue rule + model in-process", "tab:cyan"),
    "segue-no-intent": ("segue in-process, no session intent", "tab:green"),
    "segue-no-separation": ("segue in-process, no artist separation", "tab:purple"),
    "static": ("static (no session context)", "tab:orange"),
    "random": ("random", "tab:gray"),
    "oracle": ("oracle (reads the hidden mood; a reference)", "tab:red"),
}


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def _ci(d: dict[str, float]) -> str:
    return f"{_pct(d['mean'])} [{_pct(d['lo'])}, {_pct(d['hi'])}]"


def plot_positions(out: Path, r: dict[str, Any]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    for name, arm in r["arms"].items():
        label, colour = ARM_STYLE.get(name, (name, None))
        for ax, key in zip(axes, ("skip_by_position", "like_by_position"), strict=True):
            s = arm[key]
            x = list(range(1, len(s["mean"]) + 1))
            style = {"ls": "--", "lw": 1.0} if name == "segue-inprocess" else {"lw": 2.5 if name == "segue" else 1.5}
            ax.plot(x, s["mean"], marker="o", ms=3, label=label, color=colour, **style)
            ax.fill_between(x, s["lo"], s["hi"], alpha=0.15, color=colour)
    late = r["config"]["late_from"] + 1
    for ax, title in zip(axes, ("skip rate", "like rate"), strict=True):
        ax.axvline(late - 0.5, color="k", lw=0.8, ls=":")
        ax.set(xlabel="position in session (1 = first track)", ylabel=title, title=f"{title} by position (95% CI)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / PLOTS[0], dpi=100)
    plt.close(fig)


def plot_tradeoff(out: Path, r: dict[str, Any]) -> None:
    pts = r["curve"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), sharey=True)
    for ax, key, name in zip(
        axes,
        ("coverage", "intra_list_diversity", "novelty"),
        (
            "catalog coverage (share of tracks listed)",
            "intra-list diversity (mean 1 - cos)",
            "novelty (mean -log2 pop.)",
        ),
        strict=True,
    ):
        xs = [p[key] for p in pts]
        ys = [p["skip"]["mean"] for p in pts]
        err = [[p["skip"]["mean"] - p["skip"]["lo"] for p in pts], [p["skip"]["hi"] - p["skip"]["mean"] for p in pts]]
        ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3)
        for p, x, y in zip(pts, xs, ys, strict=True):
            ax.annotate(
                f"e{p['exploration']:g}/d{p['diversity']:g}",
                (x, y),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set(xlabel=name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("skip rate (all positions, 95% CI)")
    fig.suptitle("Exploration / diversity knob: list quality against skip rate")
    fig.tight_layout()
    fig.savefig(out / PLOTS[1], dpi=100)
    plt.close(fig)


def _diff(d: dict[str, float], key: str = "difference") -> str:
    return f"{100 * d[key]:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"


def trend_lines(h: dict[str, Any], late: int) -> list[str]:
    """The by-position trend of every recommender's skip rate (``loop_metrics.trend``), as a table."""
    trends = h.get("trends") or {}
    if not trends:
        return []
    first = next(iter(trends.values()))["windows"]
    names = list(first)
    lines = [
        "",
        "### Skip rate over the session",
        "",
        "Differences in points, paired over the same listeners, 95% CI; slopes in points per 10 positions "
        "(least squares over positions; negative: falling). Position 1 is the first read of a new session: the "
        "stored list was made at the end of the listener's previous session, and the API re-ranks it for the new "
        "one (long-term taste at the current hour; the in-process arms do the same).",
        "",
        f"| recommender | pos. {names[0]} | pos. {names[1]} | pos. {names[2]} | 1-3 minus {names[2]} | "
        f"{names[1]} minus {names[2]} | slope | slope from pos. 2 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, t in trends.items():
        w = t["windows"]
        lines.append(
            f"| {ARM_STYLE.get(name, (name,))[0]} | {_pct(w[names[0]])} | {_pct(w[names[1]])} | {_pct(w[names[2]])} | "
            f"{_diff(t['first_minus_late'])} | {_diff(t['early_minus_late'])} | {_diff(t['slope'], 'per_10')} | "
            f"{_diff(t['slope_from_2'], 'per_10')} |"
        )
    d = h.get("segue_minus_static_slope")
    if d:
        lines += [
            "",
            f"Slope of segue's skip rate minus static's (per listener and position, paired): {_diff(d, 'per_10')} "
            "points per 10 positions: how segue moves against the drift its listeners bring (static hears the same "
            "moods).",
        ]
    d = h.get("segue_minus_oracle_slope")
    if d:
        lines += [
            "",
            f"Slope of segue's skip rate minus the oracle's: {_diff(d, 'per_10')} points per 10 positions (the "
            "oracle reads the listener's hidden mood and utility: what is left is what segue has not learnt).",
        ]
    return lines


def mood_lines(r: dict[str, Any]) -> list[str]:
    """The diagnosis by the listeners' hidden moods (``loop_metrics.mood_breakdown``), as tables."""
    arms = {n: a["mood"] for n, a in r["arms"].items() if "mood" in a}
    if not arms:
        return []
    early, late = list(next(iter(arms.values()))["windows"])
    lines = [
        "## Where the skips come from (diagnosis by the hidden moods)",
        "",
        "The simulator knows each listener's focus genre at every position (no recommender sees it). The moods are "
        "the same whichever recommender is heard: the focus has moved away from the session's first one at "
        + ", ".join(
            f"{_pct(w['switched'])} of positions {name}" for name, w in next(iter(arms.values()))["windows"].items()
        )
        + ". 'Unknown' genre: one the listener's history does not show (fewer than 3 tracks of it kept).",
        "",
        f"| recommender | pick in the focus genre, {early} / {late} | skip in focus / off focus | "
        f"focus genre unknown, {late}: share, skip | focus genre known, {late}: skip |",
        "|---|---|---|---|---|",
    ]
    for name, m in arms.items():
        e, w = m["windows"][early], m["windows"][late]
        lines.append(
            f"| {ARM_STYLE.get(name, (name,))[0]} | {_pct(e['in_focus'])} / {_pct(w['in_focus'])} | "
            f"{_pct(m['in_focus']['skip'])} / {_pct(m['off_focus']['skip'])} | {_pct(w['focus_unknown'])}, "
            f"{_pct(w['skip_focus_unknown'])} | {_pct(w['skip_focus_known'])} |"
        )
    if "unchanged" in next(iter(arms.values()))["windows"][late]:
        lines += [
            "",
            "Skip rate by mood state and window (share of the window's positions, skip rate): the focus still the "
            "session's first (a genre the history shows), moved to another genre the history shows, or a genre "
            "it does not show. The overall rate by window mixes these: a rising share of moved moods raises it "
            "even where each state's rate falls.",
            "",
            "| recommender | "
            + " | ".join(f"{state}, {w}" for state in ("unchanged", "moved, known", "unknown") for w in (early, late))
            + " |",
            "|---|" + "---|" * 6,
        ]
        for name, m in arms.items():
            cells = []
            for share, skip in (
                ("unchanged", "skip_unchanged"),
                ("changed_known", "skip_changed_known"),
                ("focus_unknown", "skip_focus_unknown"),
            ):
                cells += [f"{_pct(m['windows'][w][share])}, {_pct(m['windows'][w][skip])}" for w in (early, late)]
            lines.append(f"| {ARM_STYLE.get(name, (name,))[0]} | " + " | ".join(cells) + " |")
    keys = list(next(iter(arms.values()))["since_switch"])
    lines += [
        "",
        "Skip rate by positions since the listener's focus genre last changed (0: the first track after the "
        "change; never: the session's first focus), with the number of positions:",
        "",
        "| recommender | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for name, m in arms.items():
        cells = [f"{_pct(m['since_switch'][k]['skip'])} ({m['since_switch'][k]['n']})" for k in keys]
        lines.append(f"| {ARM_STYLE.get(name, (name,))[0]} | " + " | ".join(cells) + " |")
    return lines + [""]


def markdown(r: dict[str, Any]) -> str:
    c, h = r["config"], r["headline"]
    late = c["late_from"]
    lines = [
        "# Closed loop: skip and like rates by position in session",
        "",
        f"Model `{r['model_version']}`; {c['listeners']} simulated listeners, {c['positions']} positions each, "
        f"{c['history_sessions']} earlier sessions of {c['history_length']} tracks per listener; seed {c['seed']}; "
        f"95% CIs from {c['boot']} bootstrap resamples of listeners.",
        "",
        "## Headline",
        "",
    ]
    vs = h.get("segue_vs_static")
    if vs:
        lines += [
            f"Skip rate at positions >= {late + 1} (1-based): segue {_pct(vs['ours'])}, static {_pct(vs['theirs'])}: "
            f"relative reduction **{_pct(vs['reduction'])}** (95% CI {_pct(vs['lo'])} .. {_pct(vs['hi'])}).",
            "",
            f"Target (reduction >= 30% with the whole CI above it): **{'met' if h['target']['met'] else 'not met'}**.",
        ]
    tr = h.get("segue_trend")
    if tr:
        lines += [
            "",
            f"segue's skip rate, positions 1-3 minus positions >= {late + 1}: {_pct(tr['difference'])} "
            f"(95% CI {_pct(tr['lo'])} .. {_pct(tr['hi'])}): "
            f"{'falls' if h['target']['skip_falls_over_session'] else 'does not fall significantly'} over the session.",
        ]
    lines += trend_lines(h, late)
    fp = r.get("focus_preference") or []
    if fp:
        lines += [
            "",
            f"The listeners' drift: the hidden preference of the genre their mood is in (1 = their favourite) is "
            f"{fp[0]:.3f} at position 1, {sum(fp[1:late]) / max(len(fp[1:late]), 1):.3f} over positions 2-{late} "
            f"and {sum(fp[late:]) / max(len(fp[late:]), 1):.3f} from position {late + 1}: sessions start in the "
            "favourite genre more often than they stay there, so later positions ask more of every recommender.",
        ]
    lines += [
        "",
        f"The listeners' own picks in their earlier sessions (the history segue learns the long-term taste from) "
        f"were skipped {_pct(r['history']['skip'])} and liked {_pct(r['history']['like'])} of the time.",
        "",
        "## By recommender",
        "",
        f"| recommender | skip, all | skip, >= {late + 1} | like, all | like, >= {late + 1} | coverage | "
        "intra-list div. | novelty |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, a in r["arms"].items():
        lines.append(
            f"| {ARM_STYLE.get(name, (name,))[0]} | {_ci(a['skip_overall'])} | {_ci(a['skip_late'])} | "
            f"{_ci(a['like_overall'])} | {_ci(a['like_late'])} | {a['coverage']:.3f} | "
            f"{a['intra_list_diversity']:.3f} | {a['novelty']:.2f} |"
        )
    lines += [
        "",
        "Reaction (from the ranking read before each position): a skipped track relisted in the next ranking, and "
        f"how many of the next top {c['list_k']} are new (not in the previous top {c['list_k']}) after a skip and "
        "after a play or like:",
        "",
        "| recommender | skipped track relisted | new in top after a skip | new in top after a play/like | "
        "P(skip after a skip) | P(skip after a play/like) |",
        "|---|---|---|---|---|---|",
    ]
    for name, a in r["arms"].items():
        re_ = a["reaction"]
        lines.append(
            f"| {ARM_STYLE.get(name, (name,))[0]} | {_pct(re_['skipped_relisted'])} of {re_['skips']:.0f} | "
            f"{re_['turnover_after_skip']:.2f} | {re_['turnover_after_play']:.2f} | {_pct(a['skip_after_skip'])} | "
            f"{_pct(a['skip_after_keep'])} |"
        )
    lines += ["", "![skip and like rate by position](skip_like_by_position.png)", ""]
    lv = r.get("live") or {}
    if lv:
        w = lv["event_to_visible_ms"]
        lines += [
            f"Live loop round trip (all listeners' events of a position sent at once, then every list polled "
            f"through the store until it answers its event, lists read through the API; the harness's polling "
            f"included, so not segue's "
            f"latency, which docs/benchmarks.md measures): p50 {w['p50']:.0f} ms, "
            f"p95 {w['p95']:.0f} ms, p99 {w['p99']:.0f} ms; "
            f"fallback (unscored) lists: {_pct(lv['fallback_share'])} of {lv['lists_read']} read.",
            "",
        ]
    lines += mood_lines(r)
    if r["curve"]:
        lines += [
            "## Exploration / diversity trade-off",
            "",
            f"segue with the knob (`serving/diversity.py` via `Rescorer.rank(prefs=...)`, run {r['curve_on']}); "
            "in these runs the listener picks from the top 10 with a position bias (rank r with weight 0.6^r), so "
            "that what the knob changes below the first place reaches the listener.",
            "",
            "| exploration | diversity | skip rate | like rate | coverage | intra-list div. | novelty |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in r["curve"]:
            lines.append(
                f"| {p['exploration']:g} | {p['diversity']:g} | {_ci(p['skip'])} | {_ci(p['like'])} | "
                f"{p['coverage']:.3f} | {p['intra_list_diversity']:.3f} | {p['novelty']:.2f} |"
            )
        lines += ["", "![trade-off](tradeoff.png)", ""]
    lines += [
        "## Definitions",
        "",
        "* skip/like rate: share of positions whose track was skipped/liked; by position: over listeners.",
        "* coverage: at each position the distinct tracks in all listeners' top-10 lists / catalog size, averaged "
        "over positions; intra-list diversity: mean pairwise cosine distance of the bundle's item embeddings "
        "within a shown list; novelty: mean -log2 popularity "
        "(catalog popularity in (0, 1]) of listed tracks.",
        "* static: segue's retrieval and model on a state whose session vectors and counters are zero (long-term "
        "taste as at session start); random: uniformly random unheard tracks; oracle: every unheard track ranked by "
        "the listener's hidden utility in its current mood (a reference no recommender can match). Same listeners, "
        "seeds and moods.",
        "",
    ]
    return "\n".join(lines)


def write_report(out: Path, results: dict[str, Any]) -> None:
    """Write ``results.json``, ``report.md`` and the PNGs into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    results = json_safe(results)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot_positions(out, results)
    if results["curve"]:
        plot_tradeoff(out, results)
    (out / "report.md").write_text(markdown(results))
