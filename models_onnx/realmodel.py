"""The segue model on real listening histories: train, export, bundle, and evaluate through serving code.

1. Item embeddings (``models_onnx.realscorer.meta_embeddings``): PPMI/SVD co-occurrence dimensions of
   the training plays (``models_onnx.cooc_embeddings``) plus each track's training skip rate and
   popularity as descriptive coordinates.
2. Replay plays through ``streams.session.apply_event`` (``replay_states``): a play of < 30 s is a ``Skip``
   event, any other a ``Play`` event; tracks outside the catalog are not applied (the worker dead-letters
   them). The state before each wanted row is recorded with ``context_features(state, ts)``.
3. Fit ``models_onnx.realscorer.RealScorer`` (``fit_real``) on each training user's last plays: a sampled
   softmax of the next track against the candidates serving would rescore, at their places in the serving
   list (``replay_training``: the session's played tracks and the listener's recent distinct tracks from
   ``CandidateSource.fixed``; tracks drawn by popularity^0.75 at places in the retrieval part), and a
   binary cross-entropy for "played through"; then the skip calibration P(skip) = 1 - sigmoid(a * score + b)
   on the played tracks' scores.
4. Export with ``models_onnx.export.export_model`` (checker + ONNX/torch parity) and write a v1 bundle.
5. Evaluate through serving: ``serving.catalog.Catalog.load`` + ``serving.scorer.OnnxScorer.load`` +
   ``serving.rescore.Rescorer`` with ``serving.candidates.CandidateSource`` (session repeats on, the
   listener's ``history`` most recent distinct tracks, retrieval by ``query_vector`` filling up to
   ``n_candidates``), then ONNX rescoring. Tracks outside the candidates rank after them in retrieval
   order; the session's recent tracks that were not candidates rank last. The candidate list's own order
   is reported too, as a baseline without the model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models_onnx.bundle import write_bundle
from models_onnx.cooc_embeddings import sparse_item_embeddings
from models_onnx.export import export_model
from models_onnx.metrics import Bootstrap
from models_onnx.protocol import Positions, Result, next_result, skip_result
from models_onnx.realdata import Fold, Plays
from models_onnx.realscorer import N_META, RealScorer, meta_embeddings
from models_onnx.skips import PRIOR_WEIGHT, fit_logistic
from serving.candidates import CandidateSource
from serving.catalog import Catalog
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from streams.records import Play, Skip
from streams.session import SessionState, apply_event, context_features, query_vector

MAX_PLAYED_MS = 86_400_000
WARMUP = 1500  # plays replayed before the first wanted row of a user (long-term taste settles)
N_FIXED_NEG = 30  # per training row: negatives drawn from the repeats and history candidates serving offers
HISTORY_WINDOW = 3000  # plays looked back for a listener's most recent distinct tracks
KEEP_WEIGHT = 3.0  # served score = next + KEEP_WEIGHT * keep logit (models_onnx.realscorer)


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


def recent_distinct(items: np.ndarray, start: int, r: int, n: int, window: int = HISTORY_WINDOW) -> np.ndarray:
    """int64 [<= n]: the distinct known items of ``items[start:r]`` (one user's earlier plays), most recent
    first, looking back at most ``window`` plays."""
    seg = items[max(start, r - window) : r][::-1]
    seg = seg[seg >= 0]
    uniq, first = np.unique(seg, return_index=True)
    return uniq[np.argsort(first, kind="stable")][:n]


def row_starts(plays: Plays) -> np.ndarray:
    """int64 [E]: the first row of each row's user."""
    starts, ends = plays.user_bounds()
    return np.repeat(starts, ends - starts)


@dataclass(frozen=True)
class TrainRows:
    """Replayed training states; arrays share length R."""

    pos: np.ndarray  # float32 [R, D]
    neg: np.ndarray  # float32 [R, D]
    taste: np.ndarray  # float32 [R, D]
    context: np.ndarray  # float32 [R, 8]
    target: np.ndarray  # int64 [R]
    kept: np.ndarray  # float32 [R]: 1 if the target was played through
    cand: np.ndarray  # int64 [R, 1 + N_FIXED_NEG]: the target, then tracks of the fixed candidates, -1 pad
    place: np.ndarray  # int64 [R, 1 + N_FIXED_NEG]: their positions in the serving candidate list
    n_fixed: np.ndarray  # int64 [R]: length of the fixed part (repeats + history) of the serving list

    def __len__(self) -> int:
        return int(self.target.shape[0])


def training_rows(fold: Fold, max_rows: int) -> np.ndarray:
    """Each training user's last plays that continue a session, about ``max_rows`` in all."""
    t = fold.train
    starts, ends = t.user_bounds()
    per_user = max(1, max_rows // max(1, len(starts)))
    keep = np.zeros(len(t), bool)
    for s, e in zip(starts, ends, strict=True):
        keep[max(s, e - per_user) : e] = True
    return np.flatnonzero(keep & (t.pos > 0) & (fold.train_items >= 0))


def replay_training(
    fold: Fold, emb: np.ndarray, rows: np.ndarray, history: int, k: int, rng: np.random.Generator, progress: bool
) -> TrainRows:
    """Replay the training plays and collect one example per row of ``rows`` with the candidates serving
    would offer: ``CandidateSource.fixed`` (the session's played tracks, the ``history`` most recent distinct
    tracks) at their list positions. A target outside that part gets a random position in the retrieval
    part (up to ``k``)."""
    source = CandidateSource(emb, ExactRetriever(emb), repeats=True, history=history)
    items = fold.train_items
    first = row_starts(fold.train)
    pos, neg, taste, ctx, cand, place, n_fixed = [], [], [], [], [], [], []
    for r, st in replay_states(fold.train, items, emb, rows, "segue: replay training plays", progress):
        pos.append(st.pos)
        neg.append(st.neg)
        taste.append(st.taste)
        ctx.append(context_features(st, int(fold.train.ts_ms[r])))
        fixed = source.fixed(st, recent_distinct(items, int(first[r]), r, history) if history else None)[:k]
        t = int(items[r])
        where = fixed.index(t) if t in fixed else -1
        t_place = where if where >= 0 else len(fixed) + int(rng.integers(0, max(1, k - len(fixed))))
        others = np.delete(np.arange(len(fixed)), where) if where >= 0 else np.arange(len(fixed))
        pick = rng.choice(others, size=min(N_FIXED_NEG, len(others)), replace=False) if len(others) else others
        pad = N_FIXED_NEG - len(pick)
        cand.append([t, *(fixed[i] for i in pick), *([-1] * pad)])
        place.append([t_place, *pick.tolist(), *([0] * pad)])
        n_fixed.append(len(fixed))
    return TrainRows(
        np.stack(pos), np.stack(neg), np.stack(taste), np.stack(ctx), items[rows].astype(np.int64),
        (~fold.train.skip[rows]).astype(np.float32), np.asarray(cand, np.int64), np.asarray(place, np.int64),
        np.asarray(n_fixed, np.int64),
    )  # fmt: skip


def fit_real(
    model: RealScorer,
    data: TrainRows,
    emb: np.ndarray,
    epochs: int,
    rng: np.random.Generator,
    neg_p: np.ndarray,
    n_pop: int = 20,
    k: int = 1000,
    batch: int = 1024,
    lr: float = 3e-3,
    progress: bool = True,
) -> float:
    """Train ``model`` in place; return the last epoch's mean loss (softmax next + BCE kept).

    Candidates per row: the target and the fixed-candidate draws of ``data`` at their list positions, and
    ``n_pop`` tracks drawn with probabilities ``neg_p`` float [N] at random positions of the retrieval part
    (up to ``k``); a negative equal to the target (or missing) is masked."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread is faster than two on a shared machine
    items_t = torch.from_numpy(emb)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(data) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.1)
    bce = torch.nn.BCEWithLogitsLoss()
    last = float("nan")
    model.train()
    tensors = [torch.from_numpy(a) for a in (data.pos, data.neg, data.taste, data.context)]
    for _epoch in tqdm(range(epochs), desc="segue: train", unit="epoch", disable=not progress, leave=False):
        order = rng.permutation(len(data))
        pop = rng.choice(len(emb), size=(len(data), n_pop), p=neg_p)
        spread = np.maximum(1, k - data.n_fixed)[:, None]
        pop_place = data.n_fixed[:, None] + rng.integers(0, spread, (len(data), n_pop))
        cand = np.concatenate([data.cand, pop], axis=1)  # [R, K']
        place_t = torch.from_numpy(np.concatenate([data.place, pop_place], axis=1))
        bad = (cand < 0) | (cand == data.target[:, None])
        bad[:, 0] = False
        cand_t, bad_t = torch.from_numpy(np.maximum(cand, 0)), torch.from_numpy(bad)
        kept_t = torch.from_numpy(data.kept)
        total, n = 0.0, 0
        for s in range(0, len(order), batch):
            rows = torch.from_numpy(order[s : s + batch])
            nxt, keep = model.heads(*(t[rows] for t in tensors), items_t[cand_t[rows]], place_t[rows])  # [b, K']
            score = (nxt + model.keep_weight * keep).masked_fill(bad_t[rows], -1e9)  # the served score
            loss = torch.nn.functional.cross_entropy(score, torch.zeros(len(rows), dtype=torch.long))
            loss = loss + bce(keep[:, 0], kept_t[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(rows)
            n += len(rows)
        last = total / max(n, 1)
    model.eval()
    torch.set_num_threads(threads)
    return last


def _skip_rates(fold: Fold) -> np.ndarray:
    n = len(fold.vocab)
    prior = float(fold.train.skip.mean())
    skips = np.bincount(fold.train_items, weights=fold.train.skip.astype(np.float64), minlength=n)
    counts = np.bincount(fold.train_items, minlength=n).astype(np.float64)
    return (skips + PRIOR_WEIGHT * prior) / (counts + PRIOR_WEIGHT)


def train_bundle(
    fold: Fold, out: Path, dim: int, epochs: int, max_rows: int, seed: int, progress: bool, history: int, k: int
) -> dict[str, Any]:
    """Train on ``fold.train`` and write a v1 bundle to ``out``; return the training summary."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 29])
    n = len(fold.vocab)
    kept = ~fold.train.skip
    _, artist = np.unique(fold.vocab.artist_ids, return_inverse=True)
    base, counts = sparse_item_embeddings(
        fold.train_items[kept], fold.train.session[kept], n, dim - N_META, [artist], rng
    )
    emb = meta_embeddings(base, _skip_rates(fold), fold.vocab.counts)
    data = replay_training(fold, emb, training_rows(fold, max_rows), history, k, rng, progress)
    q = fold.vocab.counts.astype(np.float64) ** 0.75
    model = RealScorer(dim, keep_weight=KEEP_WEIGHT)
    loss = fit_real(model, data, emb, epochs, rng, q / q.sum(), k=k, progress=progress)
    with torch.no_grad():
        s = np.concatenate([
            model(*(torch.from_numpy(a[i : i + 8192]) for a in (data.pos, data.neg, data.taste, data.context)),
                  torch.from_numpy(emb[data.target[i : i + 8192]][:, None, :]))[:, 0].numpy()
            for i in range(0, len(data), 8192)
        ])  # fmt: skip
    a, b = fit_logistic(s[:, None].astype(np.float64), data.kept.astype(np.float64))
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
        "train_examples": len(data),
        "epochs": epochs,
        "final_loss": round(loss, 5),
        "cold_tracks": int((counts == 0).sum()),
        "skip_calibration": {"a": float(a), "b": float(b), "p_skip": "1 - sigmoid(a * score + b)"},
    }
    write_bundle(out, onnx_bytes, emb, tracks, version, summary)
    return summary


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def evaluate_segue(fold: Fold, p: Positions, boot: Bootstrap, cfg: Any, bundle_dir: Path) -> list[Result]:
    """Train, export and bundle the model, then score ``p`` through the serving code; three results: the
    candidate list's own order (a baseline without the model), the served ranking and the skip prediction."""
    k, h = int(cfg.candidates), int(cfg.history)
    summary = train_bundle(fold, bundle_dir, 64, cfg.segue_epochs, cfg.segue_max_train, cfg.seed, cfg.progress, h, k)
    catalog = Catalog.load(bundle_dir)
    scorer = OnnxScorer.load(bundle_dir, device="cpu", intra_op_threads=2)
    emb = catalog.embeddings
    retriever = ExactRetriever(emb)
    source = CandidateSource(emb, retriever, repeats=True, history=h)
    rescorer = Rescorer(emb, retriever, scorer, n_candidates=k, n_recs=k, candidates=source)
    cal = summary["skip_calibration"]
    ranks = np.empty(len(p))
    order_ranks = np.empty(len(p))  # the candidate list as CandidateSource orders it, without the model
    p_skip = np.empty(len(p))
    batch: list[tuple[int, SessionState]] = []
    where = {int(r): i for i, r in enumerate(p.rows)}
    first = row_starts(fold.test)

    def flush() -> None:
        idx = np.array([where[r] for r, _ in batch])
        states = [s for _, s in batch]
        now = [int(fold.test.ts_ms[r]) for r, _ in batch]
        hist = [recent_distinct(fold.test_items, int(first[r]), r, h) for r, _ in batch] if h else None
        rankings = rescorer.rank(states, now, hist)
        target = p.target[idx]
        q = np.stack([query_vector(s) for s in states])
        sims = q @ emb.T  # [B, N], as the retriever computes them
        for j, (rk, st) in enumerate(zip(rankings, states, strict=True)):
            t = int(target[j])
            if t < 0:
                ranks[idx[j]] = order_ranks[idx[j]] = np.inf
                continue
            fixed = source.fixed(st, hist[j] if hist else None)[:k]
            if t in fixed:
                order_ranks[idx[j]] = 1.0 + fixed.index(t)
            elif t in st.recent:
                out = set(st.recent) - set(fixed)
                order_ranks[idx[j]] = len(emb) - len(out) + (len(out) + 1) / 2.0
            else:
                row = sims[j].copy()
                row[list(set(st.recent) | set(fixed))] = -np.inf
                order_ranks[idx[j]] = 1.0 + len(fixed) + (row > row[t]).sum() + ((row == row[t]).sum() - 1) / 2.0
            hit = np.flatnonzero(rk.indices == t)
            if len(hit):
                ranks[idx[j]] = 1.0 + hit[0]
                continue
            excluded = set(st.recent) - set(rk.indices.tolist())
            if t in excluded:
                ranks[idx[j]] = len(emb) - len(excluded) + (len(excluded) + 1) / 2.0
            else:
                row = sims[j].copy()
                row[list(excluded)] = -np.inf
                row[rk.indices] = -np.inf
                ranks[idx[j]] = 1.0 + len(rk.indices) + (row > row[t]).sum() + ((row == row[t]).sum() - 1) / 2.0
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
        f"served bundle {scorer.model_version} via OnnxScorer ({scorer.provider}) + Rescorer with CandidateSource: "
        f"the session's played tracks, the listener's {h} most recent distinct tracks, retrieval by query_vector "
        f"up to {k} candidates; ONNX rescoring; other tracks after, in retrieval order; the target is among the "
        f"candidates at {np.mean(ranks <= k):.1%} of the positions"
    )
    order_note = (
        f"no model: the session's played tracks, then the listener's {h} most recent distinct tracks, then "
        f"retrieval by query_vector, in the order CandidateSource hands them to the model"
    )
    return [
        next_result("serving candidates in list order", order_ranks, p, boot, note=order_note),
        next_result("segue (ONNX, serving path)", ranks, p, boot, note=note),
        skip_result("segue (ONNX, calibrated score)", p_skip, p, boot),
    ]
