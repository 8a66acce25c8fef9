"""The evaluation protocol: which test positions are scored, and how a method's outputs become metrics.

Positions: every play after its user's cut-off that continues a session (``pos > 0``) is a candidate;
whole sessions are drawn in a seeded random order until at least ``n_positions`` positions are taken,
so every sampled session is scored completely (needed for the WSDM per-session accuracy). Metrics
are means over positions; their 95% intervals come from a cluster bootstrap over users
(``models_onnx.metrics.Bootstrap``), the same replicates for every method (paired comparisons).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from models_onnx.metrics import (
    Bootstrap,
    ci,
    hit,
    ndcg,
    rank_of,
    reciprocal_rank,
    session_average_accuracy,
    weighted_auc,
)
from models_onnx.realdata import Fold

NEXT_METRICS = ("HR@10", "HR@20", "MRR@20", "NDCG@20")
SKIP_METRICS = ("AUC", "accuracy", "MAA")
POSITION_BUCKETS = ((1, 1), (2, 2), (3, 4), (5, 9), (10, 19), (20, 49), (50, 10**9))


@dataclass(frozen=True, eq=False)
class Positions:
    """The scored positions of one fold; arrays [P] sorted by test row."""

    rows: np.ndarray  # int64 row of fold.test being predicted
    user: np.ndarray
    session: np.ndarray
    pos: np.ndarray  # position of the predicted play in its session (>= 1)
    length: np.ndarray  # plays in the session
    target: np.ndarray  # vocabulary index of the played track, -1 outside the training catalog
    skip: np.ndarray  # bool: the predicted play was skipped

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def sample_positions(fold: Fold, n_positions: int, seed: int) -> Positions:
    """Draw whole test sessions in a seeded order until ``n_positions`` positions (or all) are taken."""
    t = fold.test
    cand = np.flatnonzero(fold.scored & (t.pos > 0))
    sessions, counts = np.unique(t.session[cand], return_counts=True)
    order = np.random.default_rng([seed, 19]).permutation(len(sessions))
    take = int(np.searchsorted(np.cumsum(counts[order]), n_positions)) + 1
    chosen = np.isin(t.session[cand], sessions[order[:take]])
    rows = cand[chosen]
    lengths = np.bincount(t.session, minlength=int(t.session.max()) + 1 if len(t) else 0)
    return Positions(
        rows=rows,
        user=t.user[rows],
        session=t.session[rows],
        pos=t.pos[rows],
        length=lengths[t.session[rows]],
        target=fold.test_items[rows],
        skip=t.skip[rows],
    )


def rank_targets(
    scores: Callable[[np.ndarray], np.ndarray], p: Positions, desc: str, batch: int = 128, progress: bool = True
) -> np.ndarray:
    """float [P]: rank of each target under ``scores(rows) -> [B, N]``, in batches with a progress bar."""
    out = np.empty(len(p))
    for s in tqdm(range(0, len(p), batch), desc=desc, unit="batch", disable=not progress, leave=False):
        out[s : s + batch] = rank_of(scores(p.rows[s : s + batch]), p.target[s : s + batch])
    return out


@dataclass
class Result:
    """One method's figures in one fold: ``values[metric] = (point, lo, hi)``; replicates for comparisons."""

    method: str
    task: str  # "next" or "skip"
    values: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    reps: dict[str, np.ndarray] = field(default_factory=dict)
    by_position: dict[str, list[float]] = field(default_factory=dict)
    calibration: list[tuple[float, float, int]] = field(default_factory=list)  # (mean p, observed rate, n)
    note: str = ""


def _bucket_of(pos: np.ndarray) -> np.ndarray:
    b = np.zeros(len(pos), np.int64)
    for i, (lo, hi) in enumerate(POSITION_BUCKETS):
        b[(pos >= lo) & (pos <= hi)] = i
    return b


def next_result(method: str, ranks: np.ndarray, p: Positions, boot: Bootstrap, note: str = "") -> Result:
    """HR@10, HR@20, MRR@20, NDCG@20 with cluster-bootstrap intervals, and HR@20 by session position."""
    res = Result(method, "next", note=note)
    per = {"HR@10": hit(ranks, 10), "HR@20": hit(ranks, 20), "MRR@20": reciprocal_rank(ranks, 20)}
    per["NDCG@20"] = ndcg(ranks, 20)
    for name, v in per.items():
        point, reps = boot.mean(v)
        res.values[name] = (point, *ci(reps))
        res.reps[name] = reps
    b = _bucket_of(p.pos)
    res.by_position["HR@20"] = [
        float(per["HR@20"][b == i].mean()) if (b == i).any() else float("nan") for i in range(len(POSITION_BUCKETS))
    ]
    return res


def skip_result(method: str, prob: np.ndarray, p: Positions, boot: Bootstrap, note: str = "") -> Result:
    """AUC, accuracy (threshold 0.5) and WSDM mean average accuracy; AUC by position; calibration bins."""
    res = Result(method, "skip", note=note)
    y = p.skip
    point, reps = boot.statistic(lambda w: weighted_auc(prob, y, w))
    res.values["AUC"], res.reps["AUC"] = (point, *ci(reps)), reps
    correct = (prob >= 0.5) == y
    point, reps = boot.mean(correct.astype(np.float64))
    res.values["accuracy"], res.reps["accuracy"] = (point, *ci(reps)), reps
    sess, aa = session_average_accuracy(correct, p.session, p.pos, p.length)
    sess_user = p.user[np.searchsorted(p.session, sess)]
    point, reps = boot.mean(aa, cluster=sess_user)
    res.values["MAA"], res.reps["MAA"] = (point, *ci(reps)), reps
    b = _bucket_of(p.pos)
    res.by_position["AUC"] = [
        float(weighted_auc(prob[b == i], y[b == i])) if (b == i).sum() > 1 else float("nan")
        for i in range(len(POSITION_BUCKETS))
    ]
    edges = np.linspace(0.0, 1.0, 11)
    idx = np.clip(np.digitize(prob, edges) - 1, 0, 9)
    res.calibration = [
        (float(prob[idx == i].mean()), float(y[idx == i].mean()), int((idx == i).sum()))
        for i in range(10)
        if (idx == i).any()
    ]
    return res


def paired_difference(a: Result, b: Result, metric: str) -> tuple[float, float, float]:
    """(a - b point, 95% interval) of ``metric`` over the shared bootstrap replicates."""
    d = a.reps[metric] - b.reps[metric]
    return a.values[metric][0] - b.values[metric][0], *ci(d)
