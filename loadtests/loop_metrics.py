"""Figures of the closed loop, pure: rates by position with listener-bootstrap CIs, and list-quality metrics.

Outcomes are a matrix ``kinds`` [L listeners, P positions] of "play" / "skip" / "like"; the bootstrap
resamples listeners (a listener's positions stay together, they are not independent), with the same
resampled listeners for every recommender so that paired comparisons keep their pairing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

CI_LEVEL = 0.95


def indicator(kinds: Sequence[Sequence[str]], kind: str) -> np.ndarray:
    """float64 [L, P]: 1.0 where the outcome is ``kind``."""
    return np.array([[1.0 if k == kind else 0.0 for k in row] for row in kinds], dtype=np.float64)


def bootstrap_indices(n_listeners: int, n_boot: int, seed: int) -> np.ndarray:
    """int64 [n_boot, L]: listener indices drawn with replacement (shared by all recommenders)."""
    return np.random.default_rng([seed, 97]).integers(0, n_listeners, size=(n_boot, n_listeners))


def _ci(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [(1 - CI_LEVEL) / 2, 1 - (1 - CI_LEVEL) / 2], axis=0)
    return float(lo), float(hi)


def rate_by_position(x: np.ndarray, boot: np.ndarray) -> dict[str, list[float]]:
    """x [L, P] -> mean per position with its bootstrap CI: {"mean", "lo", "hi"} each [P]."""
    means = x.mean(axis=0)
    samples = x[boot].mean(axis=1)  # [B, P]
    lo, hi = np.quantile(samples, [(1 - CI_LEVEL) / 2, 1 - (1 - CI_LEVEL) / 2], axis=0)
    return {"mean": means.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}


def window_rate(x: np.ndarray, boot: np.ndarray, start: int, stop: int | None = None) -> dict[str, float]:
    """The rate over positions ``start:stop`` (per listener, then averaged) with its bootstrap CI."""
    per_listener = x[:, start:stop].mean(axis=1)  # [L]
    lo, hi = _ci(per_listener[boot].mean(axis=1))
    return {"mean": float(per_listener.mean()), "lo": lo, "hi": hi}


def relative_reduction(
    ours: np.ndarray, theirs: np.ndarray, boot: np.ndarray, start: int, stop: int | None = None
) -> dict[str, float]:
    """1 - rate(ours) / rate(theirs) over positions ``start:stop``, paired bootstrap CI over listeners.

    ``ours`` and ``theirs`` are [L, P] indicators of the same listeners (row i is listener i in both).
    """
    a = ours[:, start:stop].mean(axis=1)
    b = theirs[:, start:stop].mean(axis=1)
    point = 1.0 - a.mean() / b.mean() if b.mean() > 0 else float("nan")
    sa, sb = a[boot].mean(axis=1), b[boot].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        samples = 1.0 - sa / sb
    samples = samples[np.isfinite(samples)]
    lo, hi = _ci(samples) if samples.size else (float("nan"), float("nan"))
    return {"reduction": float(point), "lo": lo, "hi": hi, "ours": float(a.mean()), "theirs": float(b.mean())}


def paired_difference(
    x: np.ndarray, boot: np.ndarray, early: tuple[int, int], late: tuple[int, int | None]
) -> dict[str, float]:
    """Rate over ``early`` positions minus rate over ``late`` positions of the same listeners, with a CI."""
    d = x[:, early[0] : early[1]].mean(axis=1) - x[:, late[0] : late[1]].mean(axis=1)  # [L]
    lo, hi = _ci(d[boot].mean(axis=1))
    return {"difference": float(d.mean()), "lo": lo, "hi": hi}


def slope(x: np.ndarray, boot: np.ndarray, start: int = 0, stop: int | None = None) -> dict[str, float]:
    """The least-squares slope of the rate against the position over positions ``start:stop``, per 10 positions,
    with its bootstrap CI. It is the mean of the listeners' own slopes (the positions are the same for all), so
    resampling listeners resamples it; negative: the rate falls as the session goes on."""
    y = x[:, start:stop]
    p = np.arange(y.shape[1], dtype=np.float64)
    if len(p) < 2:
        return {"per_10": float("nan"), "lo": float("nan"), "hi": float("nan")}
    w = (p - p.mean()) / ((p - p.mean()) ** 2).sum()  # [P] slope weights
    per_listener = 10.0 * (y @ w)  # [L]
    lo, hi = _ci(per_listener[boot].mean(axis=1))
    return {"per_10": float(per_listener.mean()), "lo": lo, "hi": hi}


def trend(x: np.ndarray, boot: np.ndarray, late_from: int) -> dict[str, Any]:
    """How a rate x [L, P] moves over the session, each figure with a paired bootstrap CI: positions 1-3 minus
    positions >= ``late_from + 1`` (``first_minus_late``), positions 2..``late_from`` minus the same late ones
    (``early_minus_late``; position 1 is served the list made at the end of the listener's previous session),
    and the slope over all positions and from position 2 (``slope``, ``slope_from_2``)."""
    return {
        "first_minus_late": paired_difference(x, boot, (0, 3), (late_from, None)),
        "early_minus_late": paired_difference(x, boot, (1, late_from), (late_from, None)),
        "slope": slope(x, boot),
        "slope_from_2": slope(x, boot, 1),
        "windows": {
            "1": float(x[:, :1].mean()),
            f"2-{late_from}": float(x[:, 1:late_from].mean()),
            f"{late_from + 1}-{x.shape[1]}": float(x[:, late_from:].mean()),
        },
    }


def list_quality(
    lists: Sequence[Sequence[np.ndarray]], embeddings: np.ndarray, popularity: np.ndarray, n_tracks: int
) -> dict[str, float]:
    """Catalog coverage, intra-list diversity and novelty of the recommendation lists a run showed.

    ``lists[l][p]``: int [k] track indices of the top-k list listener ``l`` was shown at position ``p``;
    ``embeddings`` float32 [N, D] unit rows; ``popularity`` [N] in (0, 1]. coverage: at each position, the
    distinct tracks in all listeners' lists / N, averaged over positions (one list per listener, as catalog
    coverage is usually defined, so that it does not saturate with the session length); intra-list diversity:
    mean over lists of the mean pairwise cosine distance (1 - cos) within the list; novelty: mean of
    -log2 popularity over every listed track.
    """
    flat = [lst for row in lists for lst in row]
    if not flat:
        return {"coverage": 0.0, "intra_list_diversity": 0.0, "novelty": 0.0, "lists": 0}
    positions = max(len(row) for row in lists)
    cover = [len({int(t) for row in lists if p < len(row) for t in row[p]}) / n_tracks for p in range(positions)]
    ild, nov = [], []
    for lst in flat:
        idx = np.asarray(lst, dtype=np.int64)
        nov.extend((-np.log2(np.maximum(popularity[idx], 1e-12))).tolist())
        k = len(idx)
        if k >= 2:
            e = embeddings[idx]
            cos = e @ e.T  # [k, k]
            off = cos[~np.eye(k, dtype=bool)]
            ild.append(float(np.mean(1.0 - off)))
    return {
        "coverage": float(np.mean(cover)),
        "intra_list_diversity": float(np.mean(ild)) if ild else 0.0,
        "novelty": float(np.mean(nov)),
        "lists": len(flat),
    }


def summarise_arm(kinds: Sequence[Sequence[str]], boot: np.ndarray, late_from: int) -> dict[str, Any]:
    """Per-position skip and like rates with CIs, and the skip rate from ``late_from`` on."""
    skip, like = indicator(kinds, "skip"), indicator(kinds, "like")
    prev, nxt = skip[:, :-1].ravel(), skip[:, 1:].ravel()
    return {
        "skip_after_skip": float(nxt[prev == 1].mean()) if (prev == 1).any() else float("nan"),
        "skip_after_keep": float(nxt[prev == 0].mean()) if (prev == 0).any() else float("nan"),
        "skip_by_position": rate_by_position(skip, boot),
        "like_by_position": rate_by_position(like, boot),
        "skip_overall": window_rate(skip, boot, 0),
        "like_overall": window_rate(like, boot, 0),
        "skip_late": window_rate(skip, boot, late_from),
        "like_late": window_rate(like, boot, late_from),
    }


def headline(arms: Mapping[str, Sequence[Sequence[str]]], boot: np.ndarray, late_from: int) -> dict[str, Any]:
    """The closed loop's must-show figures: segue vs static from ``late_from`` on, and segue's own trend."""
    skip = {name: indicator(k, "skip") for name, k in arms.items()}
    out: dict[str, Any] = {"late_from": late_from}
    if "segue" in skip and "static" in skip:
        out["segue_vs_static"] = relative_reduction(skip["segue"], skip["static"], boot, late_from)
    if "segue" in skip and "random" in skip:
        out["segue_vs_random"] = relative_reduction(skip["segue"], skip["random"], boot, late_from)
    if "segue" in skip:
        out["segue_trend"] = paired_difference(skip["segue"], boot, (0, 3), (late_from, None))
    out["trends"] = {name: trend(x, boot, late_from) for name, x in skip.items()}
    if "segue" in skip and "static" in skip:  # segue's slope against the listeners' own drift, paired
        out["segue_minus_static_slope"] = slope(skip["segue"] - skip["static"], boot)
    if "segue" in skip and "oracle" in skip:  # segue's regret against the hidden-mood oracle, by position
        out["segue_minus_oracle_slope"] = slope(skip["segue"] - skip["oracle"], boot)
    return out


def mood_breakdown(
    kinds: Sequence[Sequence[str]],
    tracks: Sequence[Sequence[int]],
    foci: Sequence[Sequence[int]],
    genre: np.ndarray,
    known: Sequence[set[int]],
    late_from: int,
) -> dict[str, Any]:
    """Where the skips come from, by the simulated listener's hidden mood (a diagnosis; no recommender sees it).

    ``foci[l][p]``: listener l's focus genre when it heard position p; ``genre`` int [N] per track; ``known[l]``:
    the genres listener l's history shows (``closed_loop.known_genres``). Per window (positions before
    ``late_from`` and from it on): the share of positions whose focus is no longer the session's first
    (``switched``), the share of picks in the focus genre (``in_focus``), and the skip rate of positions whose
    focus genre the history does not show (``skip_focus_unknown``, with its share ``focus_unknown``), and the
    share and skip rate of the known-genre positions whose focus is still the session's first (``unchanged``,
    ``skip_unchanged``) or has moved (``changed_known``, ``skip_changed_known``): a recommender can fall within
    each mood state while its overall rate rises with the share of moved moods; overall
    the skip rate of picks in and off the focus genre, and by positions since the focus last changed
    (``since_switch``: "0" is the first track after the change; "never": not changed since position 1)."""
    skip = indicator(kinds, "skip")  # [L, P]
    f = np.asarray(foci, dtype=np.int64)
    g = genre[np.asarray(tracks, dtype=np.int64)]
    switched = f != f[:, :1]
    in_focus = g == f
    unknown = np.array([[int(x) not in k for x in row] for row, k in zip(f, known, strict=True)], dtype=bool)
    since = np.full(f.shape, -1, np.int64)  # positions since the last change, -1: never changed
    for p in range(1, f.shape[1]):
        changed = f[:, p] != f[:, p - 1]
        since[:, p] = np.where(changed, 0, np.where(since[:, p - 1] >= 0, since[:, p - 1] + 1, -1))

    def rate(mask: np.ndarray, sl: Any = np.s_[:, :]) -> dict[str, float]:
        n = int(mask.sum())
        return {"skip": float(skip[sl][mask].mean()) if n else float("nan"), "n": n}

    windows = {f"1-{late_from}": (0, late_from), f"{late_from + 1}-{f.shape[1]}": (late_from, f.shape[1])}
    out: dict[str, Any] = {"windows": {}}
    for name, (a, b) in windows.items():
        sl = np.s_[:, a:b]
        out["windows"][name] = {
            "switched": float(switched[sl].mean()),
            "in_focus": float(in_focus[sl].mean()),
            "focus_unknown": float(unknown[sl].mean()),
            "skip_focus_unknown": rate(unknown[sl], sl)["skip"],
            "skip_focus_known": rate(~unknown[sl], sl)["skip"],
            "unchanged": float((~switched[sl] & ~unknown[sl]).mean()),
            "skip_unchanged": rate(~switched[sl] & ~unknown[sl], sl)["skip"],
            "changed_known": float((switched[sl] & ~unknown[sl]).mean()),
            "skip_changed_known": rate(switched[sl] & ~unknown[sl], sl)["skip"],
        }
    out["in_focus"] = rate(in_focus)
    out["off_focus"] = rate(~in_focus)
    out["since_switch"] = {"never": rate(since < 0)} | {
        (f"{k}" if k < 5 else "5+"): rate(since == k if k < 5 else since >= 5) for k in range(6)
    }
    return out


def reaction(
    kinds: Sequence[Sequence[str]], tracks: Sequence[Sequence[int]], served: Sequence[Sequence[np.ndarray]], k: int
) -> dict[str, float]:
    """Does a recommender react to what was just heard? From each listener's rankings before each position:

    ``skipped_relisted``: share of skips whose track is in the very next ranking (segue must give 0);
    ``turnover_after_skip`` / ``turnover_after_play``: mean number of tracks of the next top ``k`` that were
    not in the previous top ``k`` (the heard track itself not counted), after a skip and after a play or like.
    """
    relisted, skips = 0, 0
    after: dict[str, list[int]] = {"skip": [], "play": []}
    for ks, ts, rankings in zip(kinds, tracks, served, strict=True):
        for t in range(len(ks) - 1):
            nxt = rankings[t + 1]
            if ks[t] == "skip":
                skips += 1
                relisted += int(ts[t] in set(nxt.tolist()))
            before = set(rankings[t][:k].tolist()) - {ts[t]}
            new = len(set(nxt[:k].tolist()) - before)
            after["skip" if ks[t] == "skip" else "play"].append(new)
    return {
        "skipped_relisted": relisted / skips if skips else 0.0,
        "skips": float(skips),
        "turnover_after_skip": float(np.mean(after["skip"])) if after["skip"] else 0.0,
        "turnover_after_play": float(np.mean(after["play"])) if after["play"] else 0.0,
    }
