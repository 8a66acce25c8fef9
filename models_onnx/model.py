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

        user = torch.cat([context, torch.log1p(pos_n), torch.log1p(neg_n), torch.log1p(taste_n)], dim=-1)  # [B, U]
        sign = torch.tensor([1.0, -1.0, 1.0])
        weights = nn.functional.softplus(self.gate(user)) * sign  # [B, 3]
        states = torch.stack([pos_u, neg_u, taste_u], dim=1)  # [B, 3, D]

        # The pair layer reads [cos, c*pos, c*neg, c*taste]; each part is linear in the candidate c, so the
        # layer folds into one per-user matrix M [B, H, D] applied to c: K*D*H multiply-adds per user instead
        # of K*(3+3D)*H, and no [B, K, 3+3D] tensor. The linear cosine term folds in as one more row.
        d = self.dim
        w = self.pair.weight  # [H, 3 + 3D], columns: cos(3), pos(D), neg(D), taste(D)
        per_state = torch.stack(
            [w[:, 3 + i * d : 3 + (i + 1) * d] + w[:, i : i + 1] for i in range(3)], dim=0
        )  # [3, H, D]
        m = (per_state.unsqueeze(0) * states.unsqueeze(2)).sum(1)  # [B, H, D]
        q = (weights.unsqueeze(-1) * states).sum(1, keepdim=True)  # [B, 1, D]
        out = torch.matmul(cand_u, torch.cat([m, q], dim=1).transpose(1, 2))  # [B, K, H + 1]
        hidden = out[..., :-1] + (self.user(user) + self.pair.bias).unsqueeze(1)  # [B, K, H]
        linear = out[..., -1]  # [B, K]
        residual = self.head(hidden).squeeze(-1)  # [B, K]
        return linear + residual + self.bias
