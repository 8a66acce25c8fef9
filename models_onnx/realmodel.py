"""The segue model on real listening histories: train, export, bundle, and evaluate through serving code.

1. Item embeddings (``models_onnx.realscorer.meta_embeddings``): PPMI/SVD co-occurrence dimensions of
   the training plays (``models_onnx.cooc_embeddings``) plus each track's training skip rate (without the
   training rows' own plays) and popularity as descriptive coordinates; the bundle's track stats
   (``models_onnx.track_stats``: top-``NEIGHBOURS`` co-occurrence neighbours, popularity, skip rate).
2. Replay plays through ``streams.session.apply_event`` (``replay_states``): a play of < 30 s is a ``Skip``
   event, any other a ``Play`` event; tracks outside the catalog are not applied (the worker dead-letters
   them). The state before each wanted row is recorded with ``context_features(state, ts)``; the listener's
   history before it with ``serving.features.listener_history`` (``HistoryCache``).
3. Fit ``models_onnx.realscorer.FeatureScorer`` (signature v2, ``fit_real``) on each training user's last
   plays: a softmax of the next track against negatives from the candidates serving would rescore
   (``replay_training``: ``CandidateSource.fixed``: the session's played then skipped tracks, co-occurrence
   neighbours, the listener's recent distinct tracks (the session's older plays first); the hard ones from the
   head of that list) and tracks drawn by popularity^0.75 (standing in for retrieval), every candidate with its
   ``FeatureBuilder.build`` evidence; a binary cross-entropy of the ``keep`` head for "played through" (also on
   targets shown as unknown tracks).
4. Export with ``models_onnx.export.export_model`` (checker + ONNX/torch parity of both outputs) and write a
   signature-2 bundle with ``features.npz``.
5. Evaluate through serving: ``serving.catalog.Catalog.load`` + ``serving.scorer.OnnxScorer.load`` (which
   loads the track stats into ``OnnxScorer.features``) + ``serving.rescore.Rescorer`` with
   ``serving.candidates.CandidateSource`` (session repeats and skipped tracks, ``neighbours`` co-occurrence
   neighbours, the listener's ``history`` most recent distinct tracks, retrieval by ``query_vector`` filling up to
   ``n_candidates``), then ONNX rescoring with the features. Tracks outside the candidates rank after them in
   retrieval order; the session's recent tracks that were not candidates rank last. The candidate list's own
   order is reported too, as a baseline without the model. P(skip) = 1 - sigmoid(keep) of the played track.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
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
from models_onnx.realscorer import N_META, FeatureScorer, meta_embeddings
from models_onnx.session_knn import session_index
from models_onnx.signature import CANDIDATE_FEATURES, N_CANDIDATE_FEATURES, N_CONTEXT
from models_onnx.track_stats import skip_rates, track_stats
from serving.candidates import CandidateSource
from serving.catalog import Catalog
from serving.features import (
    HISTORY_WINDOW,
    SKIP_PRIOR_WEIGHT,
    FeatureBuilder,
    ListenerHistory,
    as_unknown,
    distinct_recent,
    listener_history,
)
from serving.rescore import Rescorer
from serving.retrieval import ExactRetriever
from serving.scorer import OnnxScorer
from serving.session_blend import load_neighbours
from streams.records import Play, Skip
from streams.session import SessionState, apply_event, context_features, context_matrix, query_vector

MAX_PLAYED_MS = 86_400_000
WARMUP = 1500  # plays replayed before the first wanted row of a user (long-term taste settles)
TOP_PLACES = 60  # the head of serving's fixed candidates, where the hard negatives are
N_TOP_NEG = 24  # per training row: negatives drawn from that head
N_ANY_NEG = 16  # ... from the rest of the fixed candidates
N_POP_NEG = 12  # ... drawn by popularity^0.75 (standing in for retrieval)
KEEP_WEIGHT = 0.0  # served score = next + KEEP_WEIGHT * keep logit (models_onnx.realscorer.FeatureScorer)
NEIGHBOURS = 50  # co-occurrence neighbours per track in the bundle
UNKNOWN_SHARE = 0.25  # of each batch's targets, also shown to the skip head as tracks outside the catalog


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


def row_starts(plays: Plays) -> np.ndarray:
    """int64 [E]: the first row of each row's user."""
    starts, ends = plays.user_bounds()
    return np.repeat(starts, ends - starts)


class HistoryCache:
    """``listener_history`` for rows in increasing order: the distinct tracks before the session are computed once
    per session, and the session's plays are moved to the front of that list one play at a time (the same
    tracks and counts as ``prepend_recent``, without recomputing them for every row)."""

    def __init__(self) -> None:
        self._key: tuple[int, int] = (-1, -1)
        self._upto = -1
        self._tracks = np.zeros(0, np.int64)  # int64 [H']: distinct, most recent first, not cut to the window
        self._counts = np.zeros(0, np.int64)

    def get(self, items: np.ndarray, skips: np.ndarray, start: int, r: int, session_start: int) -> ListenerHistory:
        s0 = max(start, session_start)
        if self._key != (start, s0) or r < self._upto:
            self._key, self._upto = (start, s0), s0
            lo = max(start, s0 - HISTORY_WINDOW)
            self._tracks, self._counts = distinct_recent(items, lo, s0, HISTORY_WINDOW)
        for x in items[self._upto : r].tolist():  # new arrays each time: earlier histories keep theirs
            if x < 0:
                continue
            at = np.flatnonzero(self._tracks == x)
            if len(at):
                p = int(at[0])
                c = int(self._counts[p]) + 1
                self._tracks = np.concatenate([[x], self._tracks[:p], self._tracks[p + 1 :]])
                self._counts = np.concatenate([[c], self._counts[:p], self._counts[p + 1 :]])
            else:
                self._tracks = np.concatenate([[x], self._tracks])
                self._counts = np.concatenate([[1], self._counts])
        self._upto = r
        pair = (self._tracks, self._counts)
        return listener_history(items, skips, start, r, HISTORY_WINDOW, s0, recent=pair)


@dataclass(frozen=True)
class TrainRows:
    """Replayed training states and their candidates; arrays share length R."""

    pos: np.ndarray  # float32 [R, D]
    neg: np.ndarray  # float32 [R, D]
    taste: np.ndarray  # float32 [R, D]
    context: np.ndarray  # float32 [R, 8]
    target: np.ndarray  # int64 [R]
    kept: np.ndarray  # float32 [R]: 1 if the target was played through
    cand: np.ndarray  # int64 [R, C]: the target, then negatives (serving's candidates, popular tracks), -1 pad
    feats: np.ndarray  # float16 [R, C, F]: their candidate features (serving.features.FeatureBuilder)
    log_q: np.ndarray  # float32 [R, C]: log of each candidate's expected draws as a negative (``sample_log_q``)

    def __len__(self) -> int:
        return int(self.target.shape[0])


def training_rows(fold: Fold, max_rows: int, users: np.ndarray | None = None) -> np.ndarray:
    """Each training user's last plays that continue a session, about ``max_rows`` in all; only the users
    where ``users`` (bool [U]) when given."""
    t = fold.train
    starts, ends = t.user_bounds()
    if users is not None:
        mine = users[t.user[starts]]
        starts, ends = starts[mine], ends[mine]
    per_user = max(1, max_rows // max(1, len(starts)))
    keep = np.zeros(len(t), bool)
    for s, e in zip(starts, ends, strict=True):
        keep[max(s, e - per_user) : e] = True
    return np.flatnonzero(keep & (t.pos > 0) & (fold.train_items >= 0))


def held_out_listeners(fold: Fold, folds: int, seed: int) -> np.ndarray | None:
    """bool [U] (indexed like ``fold.train.user``): a seeded ``1 / folds`` share of the training listeners (at
    least one, never all), or None when ``folds`` < 2."""
    if folds < 2:
        return None
    users = np.unique(fold.train.user)
    n_out = min(len(users) - 1, max(1, len(users) // folds))
    out = np.zeros(len(fold.train.user_ids), bool)
    out[np.random.default_rng([seed, 37]).choice(users, n_out, replace=False)] = True
    return out


def held_out_tail(fold: Fold, rows: np.ndarray) -> np.ndarray:
    """bool [E]: each training listener's plays from the session of their first row in ``rows`` on."""
    t = fold.train
    first = np.full(len(t.user_ids), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, t.user[rows], rows - t.pos[rows])
    return np.arange(len(t)) >= first[t.user]


def _negatives(fixed: list[int], t: int, rng: np.random.Generator) -> list[int]:
    """Negatives from serving's fixed candidates: ``N_TOP_NEG`` of the first ``TOP_PLACES`` (the hard ones:
    repeats, best neighbours, latest history), ``N_ANY_NEG`` of the rest; the target left out."""
    others = np.asarray([c for c in fixed if c != t], np.int64)
    top, rest = others[:TOP_PLACES], others[TOP_PLACES:]
    pick = [rng.choice(top, min(N_TOP_NEG, len(top)), replace=False)] if len(top) else []
    pick += [rng.choice(rest, min(N_ANY_NEG, len(rest)), replace=False)] if len(rest) else []
    return np.concatenate(pick).tolist() if pick else []


def sample_log_q(fixed: list[int], t: int, row: list[int], k: int) -> np.ndarray:
    """float32 [len(row)]: log of how often each track of ``row`` (the target, then the negatives) is drawn
    as a negative per training row under ``_negatives`` and the popularity draws: a place in the head of the
    fixed candidates (target left out) ``N_TOP_NEG / head``, in the rest ``N_ANY_NEG / rest``, anything else
    one of the ``k - len(fixed)`` retrieval places filled by ``N_POP_NEG`` draws. Training subtracts it from
    the logits (the logQ correction of a sampled softmax): without it the head of the list, drawn as a
    negative at nearly every row, is pushed below where the full candidate softmax would put it."""
    arr, tracks = np.asarray(fixed, np.int64), np.asarray(row, np.int64)
    at = np.flatnonzero(arr == t)
    t_place = int(at[0]) if len(at) else -1
    n_others = len(arr) - (t_place >= 0)
    head, rest = min(TOP_PLACES, n_others), max(n_others - TOP_PLACES, 0)
    q_top = min(N_TOP_NEG, max(head, 1)) / max(head, 1)  # 1 where the head is empty (the target alone)
    q_rest = min(N_ANY_NEG, max(rest, 1)) / max(rest, 1)
    q_ret = min(1.0, N_POP_NEG / max(k - len(fixed), 1))
    if not len(arr):
        return np.full(len(tracks), np.log(q_ret), np.float32)
    order = np.argsort(arr, kind="stable")  # the fixed candidates are distinct
    at_sorted = np.minimum(np.searchsorted(arr, tracks, sorter=order), len(arr) - 1)
    place = order[at_sorted]
    found = arr[place] == tracks
    # a place among the others (the target left out); the target itself at its own place
    place = np.where(tracks == t, place, place - ((t_place >= 0) & (place > t_place)))
    q = np.where(found, np.where(place < TOP_PLACES, q_top, q_rest), q_ret)
    return np.log(q).astype(np.float32)


def replay_training(
    fold: Fold,
    emb: np.ndarray,
    rows: np.ndarray,
    source: CandidateSource,
    builder: FeatureBuilder,
    k: int,
    neg_p: np.ndarray,
    rng: np.random.Generator,
    progress: bool,
    loo: bool = True,
    desc: str = "segue: replay training plays",
    items: np.ndarray | None = None,
) -> TrainRows:
    """Replay the training plays and collect one example per row of ``rows``: the state, the target, negatives
    from the candidates serving would offer (``CandidateSource.fixed``: repeats, co-occurrence neighbours, the
    listener's history) and ``N_POP_NEG`` tracks drawn with probabilities ``neg_p`` (retrieval stands in for
    them), with the features ``FeatureBuilder.build`` computes for each."""
    items = fold.train_items if items is None else items  # int64 [E] vocabulary index, -1: unknown to the bundle
    skips = fold.train.skip
    first = row_starts(fold.train)
    width = 1 + N_TOP_NEG + N_ANY_NEG + N_POP_NEG
    n_rows = len(rows)
    pos = np.empty((n_rows, emb.shape[1]), np.float32)
    neg, taste = np.empty_like(pos), np.empty_like(pos)
    ctx = np.empty((n_rows, N_CONTEXT), np.float32)
    cand = np.full((n_rows, width), -1, np.int64)
    feats = np.zeros((n_rows, width, N_CANDIDATE_FEATURES), np.float16)
    log_q = np.zeros((n_rows, width), np.float32)
    pops = rng.choice(len(emb), size=(n_rows, N_POP_NEG), p=neg_p)
    pending: list[tuple[int, SessionState, ListenerHistory]] = []
    histories = HistoryCache()

    def flush() -> None:
        at = np.asarray([i for i, _, _ in pending])
        feats[at] = builder.build([s for _, s, _ in pending], np.maximum(cand[at], 0), [h for _, _, h in pending])
        pending.clear()

    for i, (r, st) in enumerate(replay_states(fold.train, items, emb, rows, desc, progress)):
        pos[i], neg[i], taste[i] = st.pos, st.neg, st.taste
        ctx[i] = context_features(st, int(fold.train.ts_ms[r]))
        hist = histories.get(items, skips, int(first[r]), r, r - int(fold.train.pos[r]))
        t = int(items[r])
        fixed = source.fixed(st, hist)[:k]
        negs = _negatives(fixed, t, rng)
        row = [t, *negs, *pops[i].tolist()]
        cand[i, : len(row)] = row
        log_q[i, : len(row)] = sample_log_q(fixed, t, row, k)
        pending.append((i, st, hist))
        if len(pending) == 512:
            flush()
    if pending:
        flush()
    if loo:  # the target's own play is in its track's training skip rate: leave it out, as the skip baseline does
        t, y = items[rows], skips[rows].astype(np.float64)
        c = fold.vocab.counts[t].astype(np.float64)
        rate = builder.stats.skip_rate[t].astype(np.float64)
        out = (rate * (c + SKIP_PRIOR_WEIGHT) - y) / np.maximum(c - 1.0 + SKIP_PRIOR_WEIGHT, 1e-9)
        feats[:, 0, CANDIDATE_FEATURES.index("track_skip_rate")] = out
    kept = (~skips[rows]).astype(np.float32)
    return TrainRows(pos, neg, taste, ctx, items[rows].astype(np.int64), kept, cand, feats, log_q)


def fit_real(
    model: FeatureScorer,
    data: TrainRows,
    emb: np.ndarray,
    epochs: int,
    rng: np.random.Generator,
    skip_prior: float,
    batch: int = 512,
    lr: float = 3e-3,
    progress: bool = True,
) -> float:
    """Train ``model`` in place; return the last epoch's mean loss: the softmax of the served score over each
    row's candidates (the target first; padding and negatives equal to the target masked) plus the binary
    cross-entropy of the target's ``keep`` logit against "played through"."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread is faster than two on a shared machine
    items_t = torch.from_numpy(emb)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(data) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.1)
    bce = torch.nn.BCEWithLogitsLoss()
    bad = (data.cand < 0) | (data.cand == data.target[:, None])
    bad[:, 0] = False
    tensors = [torch.from_numpy(a) for a in (data.pos, data.neg, data.taste, data.context)]
    cand_t, bad_t = torch.from_numpy(np.maximum(data.cand, 0)), torch.from_numpy(bad)
    log_q_t = torch.from_numpy(data.log_q)
    feats_t, kept_t = torch.from_numpy(data.feats), torch.from_numpy(data.kept)
    unknown_t = torch.from_numpy(as_unknown(data.feats[:, :1], skip_prior))  # [R, 1, F]
    last = float("nan")
    model.train()
    bar = tqdm(total=steps, desc="segue: train", unit="step", disable=not progress, leave=False, mininterval=1.0)
    for _epoch in range(epochs):
        order = rng.permutation(len(data))
        total, n = 0.0, 0
        for s in range(0, len(order), batch):
            rows = torch.from_numpy(order[s : s + batch])
            nxt, keep = model.heads(*(t[rows] for t in tensors), items_t[cand_t[rows]], feats_t[rows].float())
            score = (nxt + model.keep_weight * keep - log_q_t[rows]).masked_fill(bad_t[rows], -1e9)  # served - log q
            loss = torch.nn.functional.cross_entropy(score, torch.zeros(len(rows), dtype=torch.long))
            loss = loss + bce(keep[:, 0], kept_t[rows])
            # Tracks outside the catalog are played too (15-37% of test plays): the skip head learns them from
            # a share of the targets shown as unknown (zero embedding, no track evidence).
            u = rows[: int(len(rows) * UNKNOWN_SHARE)]
            _, keep_u = model.heads(
                *(t[u] for t in tensors), torch.zeros(len(u), 1, emb.shape[1]), unknown_t[u].float()
            )  # fmt: skip
            loss = loss + UNKNOWN_SHARE * bce(keep_u[:, 0], kept_t[u])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            total += float(loss.detach()) * len(rows)
            n += len(rows)
        last = total / max(n, 1)
    bar.close()
    model.eval()
    torch.set_num_threads(threads)
    return last


def train_bundle(fold: Fold, out: Path, dim: int, cfg: Any) -> dict[str, Any]:
    """Train on ``fold.train`` and write a signature-2 bundle to ``out``; return the training summary."""
    seed, progress, k = int(cfg.seed), bool(cfg.progress), int(cfg.candidates)
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 29])
    n = len(fold.vocab)
    folds = int(cfg.segue_holdout) if fold.name in tuple(cfg.segue_holdout_modes) else 0
    # Held out (folds > 1): the bundle (embeddings, neighbour table, popularity, skip rates) never learns from
    # the plays the model trains on, as at test time: in ``users`` mode a ``1 / folds`` share of the training
    # listeners (the model trains on their last plays, the bundle on the other listeners), in ``time`` mode
    # each listener's last plays (the training rows and what follows them). A track the bundle never saw is
    # outside its catalog knowledge (unknown to the replay, no training row).
    if fold.name == "users":
        held = held_out_listeners(fold, folds, seed)
        rows = training_rows(fold, int(cfg.segue_max_train), held)
        unseen = None if held is None else held[fold.train.user]  # bool [E]
    else:
        rows = training_rows(fold, int(cfg.segue_max_train))
        unseen = held_out_tail(fold, rows) if folds > 1 else None
    known = np.ones(len(fold.train), bool) if unseen is None else ~unseen
    kept = ~fold.train.skip & known
    _, artist = np.unique(fold.vocab.artist_ids, return_inverse=True)
    base, counts = sparse_item_embeddings(
        fold.train_items[kept], fold.train.session[kept], n, dim - N_META, [artist], rng
    )
    stats = track_stats(fold, m=NEIGHBOURS, exclude=unseen)
    n_plays = np.bincount(fold.train_items[known], minlength=n)
    items = np.where(n_plays[fold.train_items] > 0, fold.train_items, -1)
    rows = rows[items[rows] >= 0]
    left_out = rows if unseen is None else np.flatnonzero(unseen)
    emb = meta_embeddings(base, skip_rates(fold, exclude=left_out), n_plays)  # no training label in it
    builder = FeatureBuilder(stats)
    source = CandidateSource(
        emb, ExactRetriever(emb), repeats=True, history=int(cfg.history), neighbours=builder,
        n_neighbours=int(cfg.neighbours), skipped=True,
    )  # fmt: skip
    q = n_plays.astype(np.float64) ** 0.75
    data = replay_training(
        fold, emb, rows, source, builder, k, q / q.sum(), rng, progress, unseen is None, items=items
    )  # fmt: skip
    model = FeatureScorer(dim, N_CANDIDATE_FEATURES, keep_weight=KEEP_WEIGHT)
    loss = fit_real(model, data, emb, int(cfg.segue_epochs), rng, stats.skip_prior, progress=progress)
    digest = hashlib.sha256(emb.tobytes())
    for tensor in model.state_dict().values():
        digest.update(tensor.numpy().tobytes())
    version = f"real-{fold.name}-s{seed}-{digest.hexdigest()[:10]}"
    onnx_bytes = export_model(model, dim, version, np.random.default_rng([seed, 31]), signature=2)
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
        "epochs": int(cfg.segue_epochs),
        "final_loss": round(loss, 5),
        "cold_tracks": int((counts == 0).sum()),
        "neighbours": NEIGHBOURS,
        "skip": "P(skip) = 1 - sigmoid(keep) of the played track (output keep, signature 2)",
    }
    # Session-kNN's index of every training play (as the baseline's): the rescorer blends its tracks into the list.
    sessions = session_index(fold.train_items, fold.train.session, fold.train.ts_ms, n)
    summary["session_index"] = {"sessions": sessions.n_sessions, "pairs": len(sessions)}
    write_bundle(out, onnx_bytes, emb, tracks, version, summary, signature=2, stats=stats, sessions=sessions)
    return summary


class RecordingSource(CandidateSource):
    """A ``CandidateSource`` that keeps the fixed candidates it hands out (``recorded``, in call order), so the
    evaluation reads the list the rescorer saw instead of computing it again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: list[list[int]] = []

    def fixed(self, state: SessionState, history: Sequence[int] | None) -> list[int]:
        out = super().fixed(state, history)
        self.recorded.append(out)
        return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def evaluate_segue(fold: Fold, p: Positions, boot: Bootstrap, cfg: Any, bundle_dir: Path) -> list[Result]:
    """Train, export and bundle the model, then score ``p`` through the serving code; three results: the
    candidate list's own order (a baseline without the model), the served ranking and the skip prediction."""
    k, h, nn_ = int(cfg.candidates), int(cfg.history), int(cfg.neighbours)
    train_bundle(fold, bundle_dir, 64, cfg)
    catalog = Catalog.load(bundle_dir)
    scorer = OnnxScorer.load(bundle_dir, device="cpu", intra_op_threads=2)
    builder = scorer.features
    assert builder is not None  # a signature-2 bundle
    emb = catalog.embeddings
    retriever = ExactRetriever(emb)
    source = RecordingSource(
        emb, retriever, repeats=True, history=h, neighbours=builder, n_neighbours=nn_, skipped=True
    )  # fmt: skip
    neighbours = load_neighbours(bundle_dir)
    rescorer = Rescorer(emb, retriever, scorer, n_candidates=k, n_recs=k, candidates=source, neighbours=neighbours)
    ranks = np.empty(len(p))
    order_ranks = np.empty(len(p))  # the candidate list as CandidateSource orders it, without the model
    p_skip = np.empty(len(p))
    batch: list[tuple[int, SessionState]] = []
    where = {int(r): i for i, r in enumerate(p.rows)}
    histories = HistoryCache()
    first = row_starts(fold.test)

    def flush() -> None:
        idx = np.array([where[r] for r, _ in batch])
        states = [s for _, s in batch]
        now = [int(fold.test.ts_ms[r]) for r, _ in batch]
        hist = [
            histories.get(fold.test_items, fold.test.skip, int(first[r]), r, r - int(fold.test.pos[r]))
            for r, _ in batch
        ]
        source.recorded.clear()
        rankings = rescorer.rank(states, now, hist)
        fixed_lists = [f[:k] for f in source.recorded]  # one per state, in order (CandidateSource.generate)
        assert len(fixed_lists) == len(states)
        target = p.target[idx]
        q = np.stack([query_vector(s) for s in states])
        sims = q @ emb.T  # [B, N], as the retriever computes them
        at = np.maximum(target, 0)
        s_t = sims[np.arange(len(batch)), at]
        above = (sims > s_t[:, None]).sum(axis=1)  # retrieval places before the target, nothing excluded yet
        tied = (sims == s_t[:, None]).sum(axis=1) - 1

        def tail_rank(j: int, t: int, taken: list[int], recent: set[int]) -> float:
            """The target's rank when it is not among ``taken``: the session's other recent tracks last,
            everything else after ``taken`` in retrieval order (ties at their mean place)."""
            out = recent - set(taken)
            if t in out:
                return len(emb) - len(out) + (len(out) + 1) / 2.0
            gone = np.fromiter(out | set(taken), np.int64)
            s_gone = sims[j, gone]
            before = above[j] - int((s_gone > s_t[j]).sum())
            ties = tied[j] - int((s_gone == s_t[j]).sum())
            return 1.0 + len(taken) + before + ties / 2.0

        for j, (rk, st) in enumerate(zip(rankings, states, strict=True)):
            t = int(target[j])
            if t < 0:
                ranks[idx[j]] = order_ranks[idx[j]] = np.inf
                continue
            recent = set(st.recent)
            fixed = fixed_lists[j]
            order_ranks[idx[j]] = 1.0 + fixed.index(t) if t in fixed else tail_rank(j, t, fixed, recent)
            hit = np.flatnonzero(rk.indices == t)
            ranks[idx[j]] = 1.0 + hit[0] if len(hit) else tail_rank(j, t, rk.indices.tolist(), recent)
        known = (target >= 0)[:, None]
        cand = np.where(known, emb[np.maximum(target, 0)], 0.0)[:, None, :]  # an unknown track: a zero embedding
        feats = builder.build(states, target[:, None], hist)
        _, keep = scorer.score_all(
            np.stack([s.pos for s in states]), np.stack([s.neg for s in states]), np.stack([s.taste for s in states]),
            context_matrix(states, now), cand, feats,
        )  # fmt: skip
        p_skip[idx] = 1.0 - _sigmoid(keep[:, 0].astype(np.float64))
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
        f"served bundle {scorer.model_version} (signature {scorer.signature}) via OnnxScorer ({scorer.provider}) + "
        f"Rescorer with CandidateSource: the session's played then skipped tracks, {nn_} co-occurrence neighbours "
        f"of the session's last tracks, the listener's {h} most recent distinct tracks, retrieval by query_vector "
        f"up to {k} candidates; ONNX rescoring"
        + (
            f"; session-kNN's tracks (the bundle's index of {len(neighbours.index):,} session-track pairs) alternating "
            f"with the model's in the first {neighbours.n} places"
            if neighbours is not None
            else ""
        )
        + f"; other tracks after, in retrieval order; the target is in the served list at {np.mean(ranks <= k):.1%} "
        "of the positions"
    )
    order_note = (
        f"no model: the session's played then skipped tracks, then {nn_} co-occurrence neighbours of the session's "
        f"last tracks, then the listener's {h} most recent distinct tracks, then retrieval by query_vector, in the "
        f"order CandidateSource hands them to the model"
    )
    return [
        next_result("serving candidates in list order", order_ranks, p, boot, note=order_note),
        next_result("segue (ONNX, serving path)", ranks, p, boot, note=note),
        skip_result("segue (ONNX, calibrated score)", p_skip, p, boot),
    ]
