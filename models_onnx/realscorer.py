"""The session scorers for real listening data: ``RealScorer`` (ONNX signature v1, two heads summed into one
score) and ``FeatureScorer`` (signature v2: the same embedding match plus per-candidate evidence, and the
skip head as its own output), which the offline evaluation trains.

Item embeddings (``meta_embeddings``) are ``dim - N_META`` co-occurrence dimensions followed by
``N_META`` descriptive coordinates of the track (its training skip rate and its popularity), so the model
reads them from every candidate and, through the long-term ``taste`` vector (a slow average of what the
listener played through), the listener's usual skip rate and popularity level.

For a state (``pos``, ``neg``, ``taste`` [B, D], ``context`` [B, 8]) and candidates [B, K, D]:

* ``next`` [B, K]: how likely the candidate is the next track: a learned bilinear match of the candidate
  with the state vectors plus an MLP over pair features (cosines and raw dot products with ``pos``,
  ``neg`` and ``taste``, which tell "just played" and "just skipped" apart from "similar"; the candidate's
  descriptive coordinates) and user features (context, state norms, taste's descriptive coordinates);
  The candidate's place in the list is an input too: serving passes the candidates in
  ``serving.candidates.CandidateSource`` order (the session's played tracks most recent first, then the
  listener's history most recent first, then retrieval by similarity), the only per-candidate evidence of
  recency that signature v1 carries;
* ``keep`` [B, K]: the logit of "played through (not skipped) if it comes next", from the same features.

``scores = next + keep_weight * keep``. Training (``models_onnx.realmodel.fit_real``) applies a sampled
softmax to ``scores`` over the candidates serving rescores (session repeats, the listener's history,
popular tracks), so the ranking is fitted for the next track, and a binary cross-entropy to ``keep`` of the
played track. A softmax ignores any per-state constant, so the state-level part of ``keep`` (previous skip,
session skip rate, the listener's usual skip level) rides along in the score at no cost to the ranking and
makes one calibrated score of the played track a skip prediction (P(skip) = 1 - sigmoid(a * score + b)).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models_onnx.signature import N_CONTEXT

N_META = 2  # the last coordinates of an item embedding: skip rate, popularity (both scaled to [-1, 1])
META_SCALE = 0.25  # weight of the descriptive coordinates before L2 normalisation
EPS = 1e-12
LOG_LIST = float(np.log1p(1000.0))  # scale of the list-position feature


def meta_embeddings(base: np.ndarray, skip_rate: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """L2-normalised float32 [N, D]: ``base`` [N, D - N_META] (unit rows or zero) and the descriptive coords.

    ``skip_rate`` float [N] in [0, 1] (smoothed training skip rate), ``counts`` int [N] training plays.
    """
    logc = np.log1p(counts.astype(np.float64))
    pop = 2.0 * logc / max(float(logc.max()), 1e-9) - 1.0  # [-1, 1]
    meta = np.stack([2.0 * np.clip(skip_rate, 0.0, 1.0) - 1.0, pop], axis=1)  # [N, 2]
    out = np.concatenate([base.astype(np.float64), META_SCALE * meta], axis=1)
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32)


def _unit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> (x / |x| [..., D], |x| [..., 1]); a zero vector stays zero."""
    norm = torch.sqrt((x * x).sum(dim=-1, keepdim=True) + EPS)
    return x / norm, norm


class RealScorer(nn.Module):
    """Scores candidates for a batch of session states (signature v1); ``heads`` gives (next, keep)."""

    def __init__(self, dim: int, hidden: int = 64, n_context: int = N_CONTEXT, keep_weight: float = 1.0) -> None:
        super().__init__()
        self.dim = dim
        self.q_pos = nn.Linear(dim, dim, bias=False)
        self.q_neg = nn.Linear(dim, dim, bias=False)
        self.q_taste = nn.Linear(dim, dim, bias=False)
        with torch.no_grad():  # start as the retrieval rule: pos + 0.3 taste - 0.7 neg
            self.q_pos.weight.copy_(torch.eye(dim))
            self.q_neg.weight.copy_(-0.7 * torch.eye(dim))
            self.q_taste.weight.copy_(0.3 * torch.eye(dim))
        n_pair = 8 + 2 * N_META  # 3 cosines, 3 raw dots, bilinear, list position, candidate meta, meta * taste meta
        n_user = n_context + 3 + N_META  # context, log1p of the state norms, taste's meta coordinates
        self.pair = nn.Linear(n_pair, hidden)
        self.user = nn.Linear(n_user, hidden, bias=False)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        self.scale = nn.Parameter(torch.tensor(5.0))
        self.keep_weight = keep_weight

    def heads(
        self,
        session_pos: torch.Tensor,  # [B, D]
        session_neg: torch.Tensor,  # [B, D]
        taste: torch.Tensor,  # [B, D]
        context: torch.Tensor,  # [B, C]
        candidates: torch.Tensor,  # [B, K, D]
        positions: torch.Tensor | None = None,  # [B, K] place of each candidate in the serving list
    ) -> tuple[torch.Tensor, torch.Tensor]:  # next [B, K], keep logit [B, K]
        if positions is None:  # serving: the candidates arrive in CandidateSource order
            positions = torch.arange(candidates.shape[1], dtype=candidates.dtype).unsqueeze(0)
        place = (torch.log1p(positions.to(candidates.dtype)) / LOG_LIST).expand(candidates.shape[:2])  # [B, K]
        columns, meta, meta_taste, user, bilinear = self._match(session_pos, session_neg, taste, context, candidates)
        pair = torch.cat([columns, place.unsqueeze(-1), meta, meta_taste], dim=-1)  # [B, K, 8 + 2M]
        return self._heads_out(pair, user, bilinear)

    def _match(
        self,
        session_pos: torch.Tensor,  # [B, D]
        session_neg: torch.Tensor,  # [B, D]
        taste: torch.Tensor,  # [B, D]
        context: torch.Tensor,  # [B, C]
        candidates: torch.Tensor,  # [B, K, D]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The embedding match both signatures share: per-candidate columns [B, K, 7] (3 cosines, 3 raw dots,
        bilinear), the candidates' descriptive coordinates [B, K, M] and those times the taste's [B, K, M], the
        user input [B, C + 3 + M], and the bilinear score [B, K]."""
        pos_u, pos_n = _unit(session_pos)
        neg_u, neg_n = _unit(session_neg)
        taste_u, taste_n = _unit(taste)
        q = self.q_pos(pos_u) + self.q_neg(neg_u) + self.q_taste(taste_u)  # [B, D]
        bilinear = (candidates * q.unsqueeze(1)).sum(-1)  # [B, K]
        dots = [(candidates * v.unsqueeze(1)).sum(-1) for v in (pos_u, neg_u, taste_u, session_pos, session_neg, taste)]
        cand_meta = candidates[..., -N_META:]  # [B, K, M]
        taste_meta = taste_u[:, -N_META:]  # [B, M]
        user = torch.cat([context, torch.log1p(pos_n), torch.log1p(neg_n), torch.log1p(taste_n), taste_meta], dim=-1)
        columns = torch.stack([*dots, bilinear], dim=-1)
        return columns, cand_meta, cand_meta * taste_meta.unsqueeze(1), user, bilinear

    def _heads_out(
        self, pair: torch.Tensor, user: torch.Tensor, bilinear: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(next, keep) logits [B, K] from the pair input [B, K, P] and the user input [B, U]."""
        out = self.head(self.pair(pair) + self.user(user).unsqueeze(1))  # [B, K, 2]
        return self.scale * bilinear + out[..., 0], out[..., 1]

    def forward(
        self,
        session_pos: torch.Tensor,  # [B, D]
        session_neg: torch.Tensor,  # [B, D]
        taste: torch.Tensor,  # [B, D]
        context: torch.Tensor,  # [B, C]
        candidates: torch.Tensor,  # [B, K, D]
    ) -> torch.Tensor:  # [B, K]
        nxt, keep = self.heads(session_pos, session_neg, taste, context, candidates)
        return nxt + self.keep_weight * keep


class FeatureScorer(RealScorer):
    """The signature-v2 scorer: the v1 embedding match (bilinear query, cosines, dot products, descriptive
    coordinates) and an MLP over each candidate's evidence (``models_onnx.signature.CANDIDATE_FEATURES``:
    session repeats and skips, co-occurrence with the session's last tracks, the listener's history, the
    track's popularity and skip rate) conditioned on the session context. Two outputs: ``scores`` (the
    next-track logit plus ``keep_weight`` times the keep logit) and ``keep`` (logit of "played through").

    The skip head sees what the logistic-regression baseline sees (previous skip and position and hour in
    ``context``, the listener's and the track's skip rates in the features) and more.
    """

    def __init__(
        self, dim: int, n_features: int, hidden: int = 64, n_context: int = N_CONTEXT, keep_weight: float = 0.0
    ) -> None:
        super().__init__(dim, hidden, n_context, keep_weight)
        self.n_features = n_features
        n_pair = 7 + 2 * N_META + n_features  # 3 cosines, 3 raw dots, bilinear, meta, meta * taste meta, evidence
        self.pair = nn.Linear(n_pair, hidden)
        self.head = nn.Sequential(
            nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2)
        )

    def heads(  # type: ignore[override]
        self,
        session_pos: torch.Tensor,  # [B, D]
        session_neg: torch.Tensor,  # [B, D]
        taste: torch.Tensor,  # [B, D]
        context: torch.Tensor,  # [B, C]
        candidates: torch.Tensor,  # [B, K, D]
        cand_features: torch.Tensor,  # [B, K, F]
    ) -> tuple[torch.Tensor, torch.Tensor]:  # next [B, K], keep logit [B, K]
        columns, meta, meta_taste, user, bilinear = self._match(session_pos, session_neg, taste, context, candidates)
        pair = torch.cat([columns, meta, meta_taste, cand_features], dim=-1)  # [B, K, 7 + 2M + F]
        return self._heads_out(pair, user, bilinear)

    def forward(  # type: ignore[override]
        self,
        session_pos: torch.Tensor,  # [B, D]
        session_neg: torch.Tensor,  # [B, D]
        taste: torch.Tensor,  # [B, D]
        context: torch.Tensor,  # [B, C]
        candidates: torch.Tensor,  # [B, K, D]
        cand_features: torch.Tensor,  # [B, K, F]
    ) -> tuple[torch.Tensor, torch.Tensor]:  # scores [B, K], keep [B, K]
        nxt, keep = self.heads(session_pos, session_neg, taste, context, candidates, cand_features)
        return nxt + self.keep_weight * keep, keep
