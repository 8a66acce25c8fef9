"""A GRU4Rec-style baseline: a small recurrent network over the current session's tracks (torch, CPU).

Trained on the training sessions (chunks of ``seq_len`` plays) to predict each next track with a sampled
softmax: the true track against ``n_neg`` tracks drawn by popularity^0.75, with the log-Q correction.
At test time the last ``seq_len`` known tracks of the current session are run through the GRU and every
catalog track is scored (dot product with its output embedding plus a bias). The budget is in steps, not
seconds, so it does not depend on the machine's load: ``epochs`` passes over the training chunks
(``steps = ceil(epochs * chunks / batch)``; ``steps_done`` and ``epochs_done`` report what ran).
Learning rate 0.05 (Adam for the GRU, sparse Adam for the item tables): a catalog of ~270k tracks sees each
track's rows in few steps of one epoch, and at 2e-3 the tables hardly left their initialisation (HR@20 near
popularity); on 30 users, one epoch: 2e-3 0.006, 0.02 0.038, 0.05 0.052, 0.1 0.012.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models_onnx.baselines import popularity_prior
from models_onnx.realdata import Fold


class _Net(nn.Module):
    def __init__(self, n_items: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.inp = nn.Embedding(n_items + 1, dim, padding_idx=n_items, sparse=True)  # last row: padding
        self.gru = nn.GRU(dim, hidden, batch_first=True)
        self.proj = nn.Linear(hidden, dim)
        self.out = nn.Embedding(n_items, dim, sparse=True)
        self.bias = nn.Embedding(n_items, 1, sparse=True)
        nn.init.normal_(self.inp.weight, std=0.05)
        nn.init.normal_(self.out.weight, std=0.05)
        nn.init.zeros_(self.bias.weight)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:  # x [B, L] -> [B, L, dim]
        h, _ = self.gru(self.inp(x))
        return self.proj(h)


class GRU4Rec:
    """The recurrent session baseline (see the module docstring)."""

    name = "GRU4Rec"

    def __init__(
        self,
        dim: int = 64,
        hidden: int = 100,
        seq_len: int = 20,
        batch: int = 256,
        n_neg: int = 2048,
        epochs: float = 1.0,
        lr: float = 0.05,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        if epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {epochs}")
        self.dim, self.hidden_size, self.seq_len, self.batch = dim, hidden, seq_len, batch
        self.n_neg, self.epochs, self.lr, self.seed = n_neg, epochs, lr, seed
        self.progress = progress
        self.steps = 0
        self.steps_done = 0
        self.epochs_done = 0.0

    def _chunks(self, fold: Fold) -> np.ndarray:
        """int64 [C, seq_len + 1] training chunks of consecutive session plays, padded with N."""
        n = len(fold.vocab)
        sess, items = fold.train.session, fold.train_items
        starts = np.flatnonzero(np.r_[True, sess[1:] != sess[:-1]])
        lens = np.diff(np.r_[starts, len(sess)])
        rows = []
        for s, ln in zip(starts, lens, strict=True):
            for c in range(s, s + ln - 1, self.seq_len):
                part = items[c : min(c + self.seq_len + 1, s + ln)]
                rows.append(np.pad(part, (0, self.seq_len + 1 - len(part)), constant_values=n))
        return np.stack(rows) if rows else np.zeros((0, self.seq_len + 1), np.int64)

    def fit(self, fold: Fold) -> None:
        torch.manual_seed(self.seed)
        rng = np.random.default_rng([self.seed, 23])
        n = len(fold.vocab)
        self._prior = popularity_prior(fold)
        self.net = _Net(n, self.dim, self.hidden_size)
        chunks = self._chunks(fold)
        q = fold.vocab.counts.astype(np.float64) ** 0.75
        q /= q.sum()
        log_q = torch.from_numpy(np.log(q).astype(np.float32))
        sparse = [self.net.inp.weight, self.net.out.weight, self.net.bias.weight]
        dense = [p for p in self.net.parameters() if all(p is not s for s in sparse)]
        opts = [torch.optim.SparseAdam(sparse, lr=self.lr), torch.optim.Adam(dense, lr=self.lr)]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small batched ops: one thread does several times more steps on a shared machine
        self.net.train()
        self.steps = math.ceil(self.epochs * len(chunks) / self.batch)
        order = np.concatenate([rng.permutation(len(chunks)) for _ in range(math.ceil(self.epochs))])
        bar = tqdm(
            range(self.steps), desc=f"{fold.name}: GRU4Rec train", unit="step", disable=not self.progress, leave=False
        )
        for step in bar:
            x = torch.from_numpy(chunks[order[step * self.batch : (step + 1) * self.batch]])
            inp, tgt = x[:, :-1], x[:, 1:]
            mask = tgt < n
            h = self.net.hidden(inp)[mask]  # [M, dim]
            t = tgt[mask]
            neg = torch.from_numpy(rng.choice(n, self.n_neg, p=q))
            pos_logit = (h * self.net.out(t)).sum(-1, keepdim=True) + self.net.bias(t)  # [M, 1]
            neg_logit = h @ self.net.out(neg).T + self.net.bias(neg).T - log_q[neg]  # [M, n_neg]
            neg_logit = neg_logit.masked_fill(neg[None, :] == t[:, None], -1e9)
            logits = torch.cat([pos_logit - log_q[t][:, None], neg_logit], dim=1)
            loss = nn.functional.cross_entropy(logits, torch.zeros(len(t), dtype=torch.long))
            for o in opts:
                o.zero_grad()
            loss.backward()
            for o in opts:
                o.step()
            self.steps_done = step + 1
        self.epochs_done = self.steps_done * self.batch / max(1, len(chunks))
        torch.set_num_threads(threads)
        self.net.eval()
        with torch.no_grad():
            self._out = self.net.out.weight.detach().numpy().copy()  # [N, dim]
            self._bias = self.net.bias.weight.detach().numpy()[:, 0].copy()

    def scores(self, fold: Fold, rows: np.ndarray) -> np.ndarray:
        n = len(fold.vocab)
        seqs = []
        for r in rows:
            start = int(r) - int(fold.test.pos[r])
            items = fold.test_items[max(start, int(r) - self.seq_len) : int(r)]
            seqs.append(items[items >= 0])
        lengths = np.array([len(s) for s in seqs])
        x = np.full((len(rows), max(1, lengths.max(initial=0))), n, np.int64)
        for b, s in enumerate(seqs):
            x[b, : len(s)] = s
        with torch.no_grad():
            h = self.net.hidden(torch.from_numpy(x)).numpy()  # [B, L, dim]
        last = h[np.arange(len(rows)), np.maximum(lengths - 1, 0)]  # [B, dim]
        out = last @ self._out.T + self._bias[None, :]
        # An empty session (only unknown tracks so far): popularity.
        out[lengths == 0] = self._prior[None, :]
        return out.astype(np.float32)
