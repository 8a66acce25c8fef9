"""The session scorer: a torch module with ONNX signature v1 (see ``models_onnx.signature``).

score(candidate) = w_pos · cos(c, pos) - w_neg · cos(c, neg) + w_taste · cos(c, taste) + mlp(...) + b

The three weights are non-negative (softplus) functions of the context, so by construction a candidate
close to what the session skipped loses score and one close to what it played or liked gains score; how
much depends on the context (e.g. right after a skip). The MLP adds a learned correction from the
cosines, the elementwise products of the candidate with each normalised state vector, the context and the
state vectors' norms (how much evidence the session holds). A zero state vector (nothing skipped yet)
contributes nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from models_onnx.signature import N_CONTEXT

EPS = 1e-12


def _unit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> (x / |x| [..., D], |x| [..., 1]); a zero vector stays zero."""
    norm = torch.sqrt((x * x).sum(dim=-1, keepdim=True) + EPS)
    return x / norm, norm


class SessionScorer(nn.Module):
    """Scores candidate tracks for a batch of session states; a logit per candidate."""

    def __init__(self, dim: int = 32, hidden: int = 64, n_context: int = N_CONTEXT) -> None:
        super().__init__()
        self.dim = dim
        n_user = n_context + 3  # context + log1p of the norms of pos, neg, taste
        self.gate = nn.Linear(n_user, 3)  # -> weights of the pos, neg and taste cosines
        self.pair = nn.Linear(3 + 3 * dim, hidden)  # candidate-dependent part of the MLP's first layer
        self.user = nn.Linear(n_user, hidden, bias=False)  # user-dependent part, shared by all candidates
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.bias = nn.Parameter(torch.zeros(1))
        with torch.no_grad():  # start as the plain cosine rule: softplus(1.0) ~ 1.3
            self.gate.weight.zero_()
            self.gate.bias.fill_(1.0)

    def forward(
        self,
        session_pos: torch.Tensor,  # [B, D]
        session_neg: torch.Tensor,  # [B, D]
        taste: torch.Tensor,  # [B, D]
        context: torch.Tensor,  # [B, C]
        candidates: torch.Tensor,  # [B, K, D]
    ) -> torch.Tensor:  # [B, K]
        pos_u, pos_n = _unit(session_pos)  # [B, D], [B, 1]
        neg_u, neg_n = _unit(session_neg)
        taste_u, taste_n = _unit(taste)
        cand_u, _ = _unit(candidates)  # [B, K, D]

        p_pos = cand_u * pos_u.unsqueeze(1)  # [B, K, D]
        p_neg = cand_u * neg_u.unsqueeze(1)
        p_taste = cand_u * taste_u.unsqueeze(1)
        cos = torch.stack([p_pos.sum(-1), p_neg.sum(-1), p_taste.sum(-1)], dim=-1)  # [B, K, 3]

        user = torch.cat([context, torch.log1p(pos_n), torch.log1p(neg_n), torch.log1p(taste_n)], dim=-1)  # [B, U]
        sign = torch.tensor([1.0, -1.0, 1.0])
        weights = nn.functional.softplus(self.gate(user)) * sign  # [B, 3]
        linear = (cos * weights.unsqueeze(1)).sum(-1)  # [B, K]

        pair = torch.cat([cos, p_pos, p_neg, p_taste], dim=-1)  # [B, K, 3 + 3D]
        hidden = self.pair(pair) + self.user(user).unsqueeze(1)  # [B, K, H]
        residual = self.head(hidden).squeeze(-1)  # [B, K]
        return linear + residual + self.bias
