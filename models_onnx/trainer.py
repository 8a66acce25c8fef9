"""Fitting the session scorer on replayed examples, and the held-out figures reported for it.

Each training row is one replayed state with ``2 + n_neg`` candidates: the track that came next
(label 1 if it was played or liked, 0 if skipped), the session's latest skipped track offered again
(label 0), and ``n_neg`` tracks drawn uniformly from the catalog (label 0, total weight 1 per row).
Binary cross-entropy on the logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from models_onnx.dataset import Examples, labels
from models_onnx.model import SessionScorer
from streams.session import LIKED


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 8
    batch: int = 512
    lr: float = 3e-3
    weight_decay: float = 1e-5
    n_neg: int = 4
    like_weight: float = 1.5
    reskip_weight: float = 0.5


def _candidates(
    ex: Examples, n_items: int, cfg: FitConfig, rng: np.random.Generator, neg_p: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate indices int64 [E, K], labels float32 [E, K] and weights float32 [E, K], K = 2 + n_neg.

    Column 0 is the next track; column 1 re-offers the session's latest skip (a listener who just skipped
    a track skips it again; weight 0 where the session has no skip); the rest are random tracks, uniform
    or drawn with probabilities ``neg_p`` float [n_items] (e.g. by popularity).
    """
    e = len(ex)
    if neg_p is None:
        negs = rng.integers(0, n_items, size=(e, cfg.n_neg))
    else:
        negs = rng.choice(n_items, size=(e, cfg.n_neg), p=neg_p)
    has_skip = ex.last_skip >= 0
    again = np.where(has_skip, ex.last_skip, negs[:, 0])
    cand = np.concatenate([ex.target[:, None], again[:, None], negs], axis=1)
    y = np.zeros(cand.shape, np.float32)
    y[:, 0] = labels(ex.outcome)
    w = np.full(cand.shape, 1.0 / max(cfg.n_neg, 1), np.float32)
    w[:, 0] = np.where(ex.outcome == LIKED, cfg.like_weight, 1.0)
    w[:, 1] = np.where(has_skip, cfg.reskip_weight, 0.0)
    return cand, y, w


def _tensors(ex: Examples, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(a[rows]) for a in (ex.pos, ex.neg, ex.taste, ex.context))


def fit(
    model: SessionScorer,
    train: Examples,
    items: np.ndarray,
    cfg: FitConfig,
    rng: np.random.Generator,
    progress: bool | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    neg_p: np.ndarray | None = None,
) -> float:
    """Train ``model`` in place on ``train`` (item embeddings ``items`` float32 [N, D]); return the last
    epoch's mean weighted loss. Torch randomness must be seeded by the caller. ``neg_p`` float [N]:
    sampling probabilities of the random negative candidates (default uniform)."""
    items_t = torch.from_numpy(items)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    last = float("nan")
    model.train()
    disable = None if progress is None else not progress  # None: bars on a terminal only
    for epoch in tqdm(range(cfg.epochs), desc="train", unit="epoch", disable=disable):
        order = rng.permutation(len(train))
        cand, y, w = _candidates(train, items.shape[0], cfg, rng, neg_p)
        total, weight = 0.0, 0.0
        for start in range(0, len(order), cfg.batch):
            rows = order[start : start + cfg.batch]
            scores = model(*_tensors(train, rows), items_t[torch.from_numpy(cand[rows])])  # [B, K]
            wt = torch.from_numpy(w[rows])
            loss = (loss_fn(scores, torch.from_numpy(y[rows])) * wt).sum() / wt.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * float(wt.sum())
            weight += float(wt.sum())
        sched.step()
        last = total / max(weight, 1e-12)
        if on_epoch is not None:
            on_epoch(epoch, last)
    model.eval()
    return last


def auc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """P(a positive outscores a negative), ties counting half (Mann-Whitney); NaN if either is empty."""
    if len(pos_scores) == 0 or len(neg_scores) == 0:
        return float("nan")
    allv = np.concatenate([pos_scores, neg_scores])
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    mid = np.cumsum(counts) - (counts - 1) / 2.0  # average 1-based rank of each distinct value
    ranks = mid[inv]
    n_pos = len(pos_scores)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * len(neg_scores)))


def evaluate(
    score: Callable[[Examples, np.ndarray], np.ndarray],
    ex: Examples,
    items: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, float]:
    """Held-out AUCs for ``score(examples, candidates [E, K, D]) -> [E, K]``.

    ``auc_skip``: next track kept vs next track skipped; ``auc_random``: next kept track vs a uniformly
    random catalog track for the same state.
    """
    if len(ex) == 0:
        return {"auc_skip": float("nan"), "auc_random": float("nan")}
    rand = rng.integers(0, items.shape[0], size=len(ex))
    cand = items[np.stack([ex.target, rand], axis=1)]  # [E, 2, D]
    s = score(ex, cand)  # [E, 2]
    kept = labels(ex.outcome) > 0
    return {"auc_skip": auc(s[kept, 0], s[~kept, 0]), "auc_random": auc(s[kept, 0], s[kept, 1])}


def model_score(model: SessionScorer) -> Callable[[Examples, np.ndarray], np.ndarray]:
    """``evaluate``'s scoring function for a torch model."""

    def run(ex: Examples, cand: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for s in range(0, len(ex), 4096):
                rows = np.arange(s, min(s + 4096, len(ex)))
                out.append(model(*_tensors(ex, rows), torch.from_numpy(cand[rows])).numpy())
        return np.concatenate(out)

    return run


def baseline_score(ex: Examples, cand: np.ndarray) -> np.ndarray:
    """The retrieval rule alone (``streams.session.query_vector``'s weights), as a reference."""

    def unit(x: np.ndarray) -> np.ndarray:
        n = np.linalg.norm(x, axis=-1, keepdims=True)
        return np.divide(x, n, out=np.zeros_like(x), where=n > 0)

    q = unit(ex.pos) + 0.3 * unit(ex.taste) - 0.7 * unit(ex.neg)  # [E, D]
    return np.einsum("ekd,ed->ek", cand, q)
