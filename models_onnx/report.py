"""The offline report: a markdown table of every method in every mode, PNG plots and a model card.

Everything written here is aggregate (means, intervals, bucketed curves): no per-user rows.
Files in ``out``: ``report.md``, ``model_card.md``, ``summary.json``, ``hr20_by_position.png``,
``skip_auc_by_position.png``, ``skip_calibration.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from models_onnx.protocol import NEXT_METRICS, POSITION_BUCKETS, SKIP_METRICS, Result, paired_difference

SEGUE = "segue"


def _fmt(v: tuple[float, float, float]) -> str:
    return f"{v[0]:.4f} [{v[1]:.4f}, {v[2]:.4f}]"


def tables(folds: dict[str, dict[str, Any]]) -> str:
    """Markdown tables: next-track and skip metrics per mode, with 95% cluster-bootstrap intervals."""
    lines: list[str] = []
    for mode, f in folds.items():
        lines.append(
            f"### Mode `{mode}`: {f['n_positions']} positions in {f['n_sessions']} sessions of {f['n_users']} "
            f"users; catalog {f['catalog']} tracks from {f['train_plays']} training plays of {f['train_users']} "
            f"users; {f['oov_targets']:.1%} of targets outside the catalog; skip rate {f['skip_rate']:.1%}\n"
        )
        for task, metrics in (("next", NEXT_METRICS), ("skip", SKIP_METRICS)):
            rows = [r for r in f["results"] if r.task == task]
            lines.append(f"| {'next track' if task == 'next' else 'skip'} | " + " | ".join(metrics) + " |")
            lines.append("|---|" + "---:|" * len(metrics))
            for r in rows:
                name = f"**{r.method}**" if r.method.startswith(SEGUE) else r.method
                lines.append(f"| {name} | " + " | ".join(_fmt(r.values[m]) for m in metrics) + " |")
            lines.append("")
        notes = [f"* {r.method}: {r.note}" for r in f["results"] if r.note]
        lines += notes + ([""] if notes else [])
    return "\n".join(lines)


def verdict(folds: dict[str, dict[str, Any]]) -> str:
    """Does the segue model beat every baseline on HR@20, MRR@20 and skip AUC beyond the intervals?"""
    out = [
        "| mode | metric | segue | best baseline | difference [95% CI, paired] | beats beyond CI |",
        "|---|---|---:|---|---:|---|",
    ]
    ok_all = True
    for mode, f in folds.items():
        for metric, task in (("HR@20", "next"), ("MRR@20", "next"), ("AUC", "skip")):
            rows = [r for r in f["results"] if r.task == task]
            seg = [r for r in rows if r.method.startswith(SEGUE)]
            base = [r for r in rows if not r.method.startswith(SEGUE)]
            if not seg or not base:
                ok_all = False
                continue
            best = max(base, key=lambda r: r.values[metric][0])
            d, lo, hi = paired_difference(seg[0], best, metric)
            beats = all(paired_difference(seg[0], b, metric)[1] > 0 for b in base)
            ok_all &= beats
            out.append(
                f"| {mode} | {metric} | {seg[0].values[metric][0]:.4f} | {best.method} {best.values[metric][0]:.4f} "
                f"| {d:+.4f} [{lo:+.4f}, {hi:+.4f}] | {'yes' if beats else 'no'} |"
            )
    out.append("")
    out.append(
        "Success criterion met: **yes**." if ok_all else "Success criterion met: **no** (see the rows marked `no`)."
    )
    return "\n".join(out)


def _plots(out: Path, folds: dict[str, dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{lo}" if lo == hi else (f"{lo}+" if hi > 10**8 else f"{lo}-{hi}") for lo, hi in POSITION_BUCKETS]
    for fname, task, key, ylabel in (
        ("hr20_by_position.png", "next", "HR@20", "HR@20"),
        ("skip_auc_by_position.png", "skip", "AUC", "skip AUC"),
    ):
        fig, axes = plt.subplots(1, len(folds), figsize=(6 * len(folds), 4), squeeze=False)
        for ax, (mode, f) in zip(axes[0], folds.items(), strict=True):
            for r in f["results"]:
                if r.task == task:
                    ax.plot(
                        labels,
                        r.by_position[key],
                        marker="o",
                        lw=2.5 if r.method.startswith(SEGUE) else 1.2,
                        label=r.method,
                    )
            ax.set_title(f"{ylabel} by position in session ({mode})")
            ax.set_xlabel("position of the predicted play")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
    fig, axes = plt.subplots(1, len(folds), figsize=(5 * len(folds), 4.5), squeeze=False)
    for ax, (mode, f) in zip(axes[0], folds.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
        for r in f["results"]:
            if r.task == "skip" and len(r.calibration) > 2:
                ax.plot([c[0] for c in r.calibration], [c[1] for c in r.calibration], marker="o", label=r.method)
        ax.set_title(f"skip probability calibration ({mode})")
        ax.set_xlabel("predicted P(skip), decile bins")
        ax.set_ylabel("observed skip rate")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "skip_calibration.png", dpi=110)
    plt.close(fig)


def model_card(folds: dict[str, dict[str, Any]], summary: dict[str, Any]) -> str:
    """The model card of the real-data segue model (data, split, metrics, limits)."""
    segue_notes = sorted(
        {r.note for f in folds.values() for r in f["results"] if r.method.startswith(SEGUE) and r.note}
    )
    return "\n".join(
        [
            "# Model card: segue session model trained on real listening histories",
            "",
            "**Internal evaluation model. Never the shipped default** (that stays the generated-data bundle in "
            "`.segue/models/default`). The training data has no licence and is personal data: the bundles under "
            "`bundles/` must not leave this machine's ignored directories.",
            "",
            "## Model",
            "* Item embeddings: PPMI of kept-track co-occurrence in training sessions (window 4, 1/distance), "
            "randomised truncated SVD, rare tracks shrunk toward their artist's mean vector, plus two descriptive "
            "coordinates (training skip rate, popularity); L2-normalised (`models_onnx.realscorer.meta_embeddings`).",
            "* Session scorer: `models_onnx.realscorer.FeatureScorer` (ONNX signature v2: session_pos, session_neg, "
            "taste, context[8], candidates, cand_features[F] -> scores, keep), inputs from `streams.session."
            "apply_event` replays; scores = the next-track logit (embedding match + an MLP over the candidate "
            "evidence of `models_onnx.signature.CANDIDATE_FEATURES`, computed by `serving.features.FeatureBuilder` "
            "from the session state, the bundle's co-occurrence table and the listener's history).",
            "* Candidates: the session's played then skipped tracks, co-occurrence neighbours of the session's last "
            "tracks, the listener's most recent distinct tracks (the session's older plays first), retrieval by "
            "`query_vector` (`CandidateSource`).",
            "* Training: a softmax of the next track against negatives drawn from those candidates and by "
            "popularity, each logit corrected by the log of how often its candidate is drawn (logQ), so the head "
            "of the list, drawn at nearly every row, is not pushed down.",
            "* Skip probability: P(skip) = 1 - sigmoid(keep) of the played track (the `keep` output, trained with "
            "a binary cross-entropy; a share of targets shown as tracks outside the catalog).",
            *[f"* {n}" for n in segue_notes],
            "",
            "## Data",
            f"* `{summary['data']}`: {summary['plays']} plays of {summary['users']} users (Spotify basic exports).",
            "* Sessions: a new session after more than 30 minutes between consecutive `end_time`s (the worker's rule).",
            "* Skip label: `ms_played < 30 s` (Spotify's stream threshold; the export has no skip flag and no track "
            "duration for most plays). Plays of 30 s or more are `play` events with no duration (full weight).",
            "* Timestamps are UTC at minute resolution; hour-of-day context is UTC, not the listener's local time.",
            "",
            "## Split",
            "* `time`: per user, the earlier 80% of the time span trains, the rest is scored.",
            "* `users`: held-out users (never trained on); their first 80% of time is replayed history.",
            "* The session model's own training rows (`--segue-holdout N`, default 5, both modes): the bundle "
            "(embeddings, co-occurrence table, popularity, skip rates) never learns from them. In `users` mode it "
            "learns from (N-1)/N of the training users and the model trains on the plays of the other 1/N, so it "
            "learns to rank for listeners the bundle never saw; in `time` mode the model trains on each listener's "
            "last plays, which the bundle leaves out, as the scored plays come after the bundle's.",
            "* Catalog = tracks played in the training plays only; targets outside it count as misses for all methods.",
            "",
            "## Metrics",
            "",
            verdict(folds),
            "",
            "Full tables: `report.md`.",
            "",
            "## Limits",
            "* The population is small and skewed (mostly students publishing their exports); CIs resample users.",
            "* No likes, no context (device, shuffle, playlist): `log_likes` is always 0.",
            "* The listener's history (history candidates and features, the long-term skip rate, the previous "
            "play's skip when its track is outside the catalog) exists in the offline replay only: the worker's "
            "session state (format v2) has none, so online the history features are 0 (`history_known` = 0).",
            "* The 30 s skip proxy mixes skips with short plays and tracks ended by the listener for other reasons.",
            "",
        ]
    )


def _jsonable(folds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode, f in folds.items():
        d = {k: v for k, v in f.items() if k != "results"}
        d["results"] = [
            {
                "method": r.method,
                "task": r.task,
                "values": r.values,
                "by_position": r.by_position,
                "calibration": r.calibration,
                "note": r.note,
            }
            for r in f["results"]
        ]
        out[mode] = d
    return out


def write_report(out: Path, folds: dict[str, dict[str, Any]], summary: dict[str, Any]) -> None:
    """Write ``report.md``, ``model_card.md``, ``summary.json`` and the plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    _plots(out, folds)
    timing = ", ".join(f"{k} {v}s" for k, v in summary["timings_s"].items())
    md = [
        "# Offline evaluation on real listening sessions",
        "",
        f"Data: `{summary['data']}`"
        + (f", test users from `{summary['test']}`" if summary["test"] else "")
        + f"; {summary['plays']} plays, {summary['users']} users. Seed {summary['config']['seed']}; "
        f"{summary['config']['bootstrap']} cluster-bootstrap replicates over users; values are "
        "`mean [95% CI]`.",
        "",
        tables(folds),
        "## Segue against every baseline",
        "",
        verdict(folds),
        "",
        "Plots: `hr20_by_position.png`, `skip_auc_by_position.png`, `skip_calibration.png`. "
        "Model card: `model_card.md`.",
        "",
        f"Runtime: {summary['seconds']} s ({timing}).",
        "",
    ]
    (out / "report.md").write_text("\n".join(md))
    (out / "model_card.md").write_text(model_card(folds, summary))
    (out / "summary.json").write_text(json.dumps(summary | {"folds": _jsonable(folds)}, indent=1, default=_np) + "\n")


def _np(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Result):
        return o.method
    raise TypeError(type(o))
