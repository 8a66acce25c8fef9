"""The segue model on real listening histories: train, export, bundle, and evaluate through serving code.

1. Item embeddings from the training plays (``models_onnx.cooc_embeddings``).
2. Replay plays through ``streams.session.apply_event`` (``replay_states``): a play of < 30 s is a ``Skip``
   event, any other a ``Play`` event; tracks outside the catalog are not applied (the worker dead-letters
   them). The state before each wanted row is recorded with ``context_features(state, ts)``.
3. Fit ``models_onnx.model.SessionScorer`` with ``models_onnx.trainer.fit`` (negatives by popularity^0.75)
   on each training user's last plays; fit the skip calibration P(skip) = 1 - sigmoid(a * score + b).
4. Export with ``models_onnx.export.export_model`` (checker + ONNX/torch parity) and write a v1 bundle.
5. Evaluate through serving: ``serving.catalog.Catalog.load`` + ``serving.scorer.OnnxScorer.load`` +
   ``serving.rescore.Rescorer`` (exact retrieval by ``query_vector`` of ``n_candidates``, excluding the
   session's recent tracks, then ONNX rescoring). Tracks outside the candidates rank after them in
   retrieval order; the excluded recent tracks rank last.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models_onnx.bundle import write_bundle
from models_onnx.cooc_embeddings import sparse_item_embeddings
from models_onnx.dataset import Examples
from models_onnx.export import export_model
from models_onnx.metrics import Bootstrap
from models_onnx.model import SessionScorer
from models_onnx.protocol import Positions, Result, next_result, skip_result
from models_onnx.realdata import Fold, Plays
from models_onnx.skips import fit_logistic
from models_onnx.trainer import FitConfig, fit
from serving.catalog import Catalog
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from streams.records import Play, Skip
from streams.session import SessionState, apply_event, context_features, outcome_of, query_vector

MAX_PLAYED_MS = 86_400_000
WARMUP = 1500  # plays replayed before the first wanted row of a user (long-term taste settles)


def _event(plays: Plays, r: int) -> Play | Skip:
    cls = Skip if plays.ms_played[r] < 30_000 else Play
    return cls(
        event_id=f"r{r}",
        user_id=str(plays.user_ids[plays.user[r]]),
        track_id=str(plays.track_ids[plays.track[r]]),
        ts_ms=int(plays.ts_ms[r]),
        played_ms=int(min(plays.ms_played[r], MAX_PLAYED_MS)),
        session_id=f"s{plays.session[r]}",
    )


def replay_states(
    plays: Plays, items: np.ndarray, emb: np.ndarray, wanted: np.ndarray, desc: str, progress: bool = True
) -> Iterator[tuple[int, SessionState]]:
    """Yield (row, state before the row) for each row in ``wanted`` (increasing), replaying each user's
    plays from ``WARMUP`` rows before their first wanted row. ``items`` int64 [E] vocabulary index or -1."""
    starts, ends = plays.user_bounds()
    want = np.zeros(len(plays), bool)
    want[wanted] = True
    spans = []
    for s, e in zip(starts, ends, strict=True):
        w = np.flatnonzero(want[s:e])
        if len(w):
            spans.append((max(s, s + int(w[0]) - WARMUP), s + int(w[-1]) + 1))
    total = sum(e - s for s, e in spans)
    bar = tqdm(total=total, desc=desc, unit="play", disable=not progress, leave=False, mininterval=1.0)
    dim = emb.shape[1]
    for s, e in spans:
        state = SessionState.empty(dim)
        for r in range(s, e):
            if want[r]:
                yield r, state
            it = int(items[r])
            if it >= 0:
                state = apply_event(state, _event(plays, r), it, emb[it])
        bar.update(e - s)
    bar.close()


def _examples(plays: Plays, items: np.ndarray, emb: np.ndarray, rows: np.ndarray, progress: bool) -> Examples:
    pos, neg, taste, ctx, target, outcome, last_skip = [], [], [], [], [], [], []
    for r, st in replay_states(plays, items, emb, rows, "segue: replay training plays", progress):
        pos.append(st.pos)
        neg.append(st.neg)
        taste.append(st.taste)
        ctx.append(context_features(st, int(plays.ts_ms[r])))
        target.append(items[r])
        outcome.append(outcome_of(_event(plays, r)))
        skipped = [t for t, o in zip(st.recent, st.outcomes, strict=True) if o == 1]
        last_skip.append(skipped[-1] if skipped else -1)
    n = len(target)
    return Examples(
        np.stack(pos), np.stack(neg), np.stack(taste), np.stack(ctx), np.asarray(target, np.int64),
        np.asarray(outcome, np.int64), np.zeros(n, np.int64), np.asarray(last_skip, np.int64),
    )  # fmt: skip


def training_rows(fold: Fold, max_rows: int) -> np.ndarray:
    """Each training user's last plays that continue a session, about ``max_rows`` in all."""
    t = fold.train
    starts, ends = t.user_bounds()
    per_user = max(1, max_rows // max(1, len(starts)))
    keep = np.zeros(len(t), bool)
    for s, e in zip(starts, ends, strict=True):
        keep[max(s, e - per_user) : e] = True
    return np.flatnonzero(keep & (t.pos > 0) & (fold.train_items >= 0))


def train_bundle(
    fold: Fold, out: Path, dim: int, epochs: int, max_rows: int, seed: int, progress: bool
) -> dict[str, Any]:
    """Train on ``fold.train`` and write a v1 bundle to ``out``; return the training summary."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 29])
    n = len(fold.vocab)
    kept = ~fold.train.skip
    _, artist = np.unique(fold.vocab.artist_ids, return_inverse=True)
    emb, counts = sparse_item_embeddings(fold.train_items[kept], fold.train.session[kept], n, dim, [artist], rng)
    ex = _examples(fold.train, fold.train_items, emb, training_rows(fold, max_rows), progress)
    q = fold.vocab.counts.astype(np.float64) ** 0.75
    model = SessionScorer(dim, 64)
    loss = fit(model, ex, emb, FitConfig(epochs=epochs, batch=1024), rng, progress, neg_p=q / q.sum())
    with torch.no_grad():
        s = np.concatenate([
            model(*(torch.from_numpy(a[i : i + 8192]) for a in (ex.pos, ex.neg, ex.taste, ex.context)),
                  torch.from_numpy(emb[ex.target[i : i + 8192]][:, None, :]))[:, 0].numpy()
            for i in range(0, len(ex), 8192)
        ])  # fmt: skip
    a, b = fit_logistic(s[:, None].astype(np.float64), (ex.outcome != 1).astype(np.float64))
    digest = hashlib.sha256(emb.tobytes())
    for tensor in model.state_dict().values():
        digest.update(tensor.numpy().tobytes())
    version = f"real-{fold.name}-s{seed}-{digest.hexdigest()[:10]}"
    onnx_bytes = export_model(model, dim, version, np.random.default_rng([seed, 31]))
    top = float(fold.vocab.counts.max())
    tracks = [
        {"track_id": str(t), "artist_id": str(ar), "genre": "", "popularity": round(float(c) / top, 6), "features": {}}
        for t, ar, c in zip(fold.vocab.track_ids, fold.vocab.artist_ids, fold.vocab.counts, strict=True)
    ]
    summary = {
        "seed": seed,
        "data": "real listening histories (internal evaluation only; not shippable)",
        "fold": fold.name,
        "train_examples": len(ex),
        "final_loss": round(loss, 5),
        "cold_tracks": int((counts == 0).sum()),
        "skip_calibration": {"a": float(a), "b": float(b), "p_skip": "1 - sigmoid(a * score + b)"},
    }
    write_bundle(out, onnx_bytes, emb, tracks, version, summary)
    return summary


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def evaluate_segue(fold: Fold, p: Positions, boot: Bootstrap, cfg: Any, bundle_dir: Path) -> list[Result]:
    """Train, export and bundle the model, then score ``p`` through the serving code; two results."""
    summary = train_bundle(fold, bundle_dir, 64, cfg.segue_epochs, cfg.segue_max_train, cfg.seed, cfg.progress)
    catalog = Catalog.load(bundle_dir)
    scorer = OnnxScorer.load(bundle_dir, device="cpu", intra_op_threads=2)
    emb = catalog.embeddings
    k = int(cfg.candidates)
    rescorer = Rescorer(emb, ExactRetriever(emb), scorer, n_candidates=k, n_recs=k)
    cal = summary["skip_calibration"]
    ranks = np.empty(len(p))
    p_skip = np.empty(len(p))
    batch: list[tuple[int, SessionState]] = []
    where = {int(r): i for i, r in enumerate(p.rows)}

    def flush() -> None:
        idx = np.array([where[r] for r, _ in batch])
        states = [s for _, s in batch]
        now = [int(fold.test.ts_ms[r]) for r, _ in batch]
        rankings = rescorer.rank(states, now)
        target = p.target[idx]
        q = np.stack([query_vector(s) for s in states])
        sims = q @ emb.T  # [B, N], as the retriever computes them
        for j, (rk, st) in enumerate(zip(rankings, states, strict=True)):
            t = int(target[j])
            if t < 0:
                ranks[idx[j]] = np.inf
                continue
            hit = np.flatnonzero(rk.indices == t)
            excluded = set(st.recent)
            if len(hit):
                ranks[idx[j]] = 1.0 + hit[0]
            elif t in excluded:
                ranks[idx[j]] = len(emb) - len(excluded) + (len(excluded) + 1) / 2.0
            else:
                row = sims[j].copy()
                row[list(excluded)] = -np.inf
                ranks[idx[j]] = 1.0 + (row > row[t]).sum() + ((row == row[t]).sum() - 1) / 2.0
        cand = np.where((target >= 0)[:, None], emb[np.maximum(target, 0)], 0.0)[:, None, :]
        score = scorer.score(
            np.stack([s.pos for s in states]), np.stack([s.neg for s in states]), np.stack([s.taste for s in states]),
            np.stack([context_features(s, t) for s, t in zip(states, now, strict=True)]), cand,
        )[:, 0]  # fmt: skip
        p_skip[idx] = 1.0 - _sigmoid(cal["a"] * score + cal["b"])
        batch.clear()

    for r, st in replay_states(
        fold.test, fold.test_items, emb, p.rows, f"{fold.name}: segue replay+score", cfg.progress
    ):
        batch.append((r, st))
        if len(batch) == 128:
            flush()
    if batch:
        flush()
    note = (
        f"served bundle {scorer.model_version} via OnnxScorer ({scorer.provider}) + Rescorer: exact retrieval top-{k} "
        f"by query_vector (session's recent tracks excluded), ONNX rescoring; other tracks after, in retrieval order"
    )
    return [
        next_result("segue (ONNX, serving path)", ranks, p, boot, note=note),
        skip_result("segue (ONNX, calibrated score)", p_skip, p, boot),
    ]
