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


def _per_state(w: torch.Tensor, d: int) -> torch.Tensor:
    """The pair layer's weight [H, 3 + 3D] (columns: cos(3), pos(D), neg(D), taste(D)) as one [H, D] matrix per
    state vector [3, H, D]: a cosine is the product with the normalised candidate, so its column adds in."""
    return torch.stack([w[:, 3 + i * d : 3 + (i + 1) * d] + w[:, i : i + 1] for i in range(3)], dim=0)


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
        per_state = _per_state(self.pair.weight, d)  # [3, H, D]
        m = (per_state.unsqueeze(0) * states.unsqueeze(2)).sum(1)  # [B, H, D]
        q = (weights.unsqueeze(-1) * states).sum(1, keepdim=True)  # [B, 1, D]
        out = torch.matmul(cand_u, torch.cat([m, q], dim=1).transpose(1, 2))  # [B, K, H + 1]
        hidden = out[..., :-1] + (self.user(user) + self.pair.bias).unsqueeze(1)  # [B, K, H]
        linear = out[..., -1]  # [B, K]
        residual = self.head(hidden).squeeze(-1)  # [B, K]
        return linear + residual + self.bias

    def for_export(self) -> ServingScorer:
        """The same function arranged for ONNX Runtime on CPU (``ServingScorer``); what ``export_model`` writes."""
        return ServingScorer(self)


class ServingScorer(nn.Module):
    """A trained ``SessionScorer``'s function with fewer passes over [B, K, *] tensors; for export only.

    At serving sizes a CPU call's time goes mostly to passes through memory over [B, K, *] tensors, each
    elementwise op one pass, and to matrix products whose narrow side ONNX Runtime pads to a multiple of 16.
    So the candidate side here is one norm, one concatenation, four matrix products and one ReLU:

    * The candidates are not normalised. With n = sqrt(|c|^2 + EPS) [B, K], every candidate-side value is
      computed n times too large and the score divided by n at the end ([B, K], cheap). ReLU(n x) = n ReLU(x)
      for n > 0, so the scale passes through the head; a layer's bias b becomes b * n, which a matrix
      product adds where n is one of its input columns.
    * The first layer multiplies [c, n] [B, K, D + 1] by a per-user [B, D + 1, H + 3]: the folded pair layer
      (``SessionScorer.forward``), with the user term and pair bias in the row that meets n, plus three
      columns: n itself (for the second layer's bias) and +-(c . q), the linear cosine term, which
      ReLU(t) - ReLU(-t) = t carries through the ReLU (slicing it off the output would be another pass).
    * The second layer is a Gemm on the [B * K, H + 3] view, its ReLU fused by ONNX Runtime; its output is
      exactly H wide, the linear term staying in the first layer's output.
    * The last layer and the linear term are row vectors times transposed [B * K, *] matrices: a product
      with a [B * K, 1] output would be padded to 16 columns.
    * Per user, the three state vectors go through each step together: ONNX Runtime spends microseconds on
      every node however small its tensors.

    Reads the model's parameters at construction: build it after training.
    """

    def __init__(self, model: SessionScorer) -> None:
        super().__init__()
        d, h = model.dim, model.head[1].out_features
        self.dim, self.width = d, h + 3
        with torch.no_grad():
            self.register_buffer("gate_weight", model.gate.weight.t().clone())  # [U, 3]
            self.register_buffer("gate_bias", model.gate.bias.clone())  # [3]
            self.register_buffer("mix", _mix(model))  # [D, 6, H + 3]
            bottom = torch.zeros(model.user.in_features, h + 3)  # user [B, U] -> the row of n
            bottom[:, :h] = model.user.weight.t()
            self.register_buffer("bottom_weight", bottom)
            self.register_buffer("bottom_bias", torch.cat([model.pair.bias, torch.tensor([1.0, 0.0, 0.0])]))
            # [ReLU(n x), n, ReLU(n c.q), ReLU(-n c.q)] [B * K, H + 3] -> n * (the head's second pre-activation)
            second = torch.zeros(h + 3, h)
            second[:h] = model.head[1].weight.t()
            second[h] = model.head[1].bias
            self.register_buffer("second", second)
            self.register_buffer("third", model.head[3].weight.clone())  # [1, H]
            # n * (c_unit . q + the last layer's bias + the score bias), from the first layer's output
            linear = torch.zeros(1, h + 3)
            linear[0, h:] = torch.cat([model.head[3].bias + model.bias, torch.tensor([1.0, -1.0])])
            self.register_buffer("linear", linear)
            self.register_buffer("no_bias", torch.zeros(1))  # the Gemm's bias input, multiplied by beta=0

    def forward(
        self,
        session_pos: torch.Tensor,  # [B, D]
        session_neg: torch.Tensor,  # [B, D]
        taste: torch.Tensor,  # [B, D]
        context: torch.Tensor,  # [B, C]
        candidates: torch.Tensor,  # [B, K, D]
    ) -> torch.Tensor:  # [B, K]
        first = self._first_layer(session_pos, session_neg, taste, context)  # [B, D + 1, H + 3]
        # n as in ``_unit``, EPS included, so a zero candidate scores as the training forward scores it. [B, K],
        # not [B, K, 1]: ONNX Runtime broadcasts over a trailing axis of size 1 element by element, ~20x slower.
        norm = torch.sqrt((candidates * candidates).sum(-1) + EPS)  # [B, K]
        hidden = torch.relu(torch.matmul(torch.cat([candidates, norm.unsqueeze(-1)], dim=-1), first))
        hidden = hidden.reshape(-1, self.width)  # [B * K, H + 3]
        # addmm with beta=0 exports as a Gemm without a bias to add, which ONNX Runtime fuses with the ReLU.
        second = torch.relu(torch.addmm(self.no_bias, hidden, self.second, beta=0))  # [B * K, H]
        out = torch.matmul(self.third, second.t()) + torch.matmul(self.linear, hidden.t())  # [1, B * K]
        return out.reshape_as(norm) / norm

    def _first_layer(
        self, session_pos: torch.Tensor, session_neg: torch.Tensor, taste: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """The per-user matrix [B, D + 1, H + 3] of the first layer (see the class docstring)."""
        states = torch.cat([session_pos, session_neg, taste], dim=-1).reshape(-1, 3, self.dim)  # [B, 3, D]
        norms = torch.sqrt((states * states).sum(-1) + EPS)  # [B, 3], as ``_unit``
        states = states / norms.unsqueeze(-1)
        user = torch.cat([context, torch.log1p(norms)], dim=-1)  # [B, U]
        weights = nn.functional.softplus(torch.addmm(self.gate_bias, user, self.gate_weight))  # [B, 3]
        both = torch.cat([states, states * weights.unsqueeze(-1)], dim=1)  # [B, 6, D]
        top = torch.matmul(both.permute(2, 0, 1), self.mix).permute(1, 0, 2)  # [B, D, H + 3]
        bottom = torch.addmm(self.bottom_bias, user, self.bottom_weight)  # [B, H + 3]
        return torch.cat([top, bottom.unsqueeze(1)], dim=1)


def _mix(model: SessionScorer) -> torch.Tensor:
    """[D, 6, H + 3]: per d, [states, weighted states] [6] -> the first layer's row d without n.

    Row d of the folded pair matrix (``SessionScorer.forward``) is states[:, d] @ per_state[:, :, d]; the
    linear term's columns are +- the sum of the signed weighted states.
    """
    d, h = model.dim, model.pair.out_features
    mix = torch.zeros(d, 6, h + 3)
    mix[:, :3, :h] = _per_state(model.pair.weight, d).permute(2, 0, 1)
    sign = torch.tensor([1.0, -1.0, 1.0])  # the weight of the neg cosine is subtracted
    mix[:, 3:, h + 1] = sign
    mix[:, 3:, h + 2] = -sign
    return mix
