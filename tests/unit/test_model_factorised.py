"""The scorer's folded pair layer computes exactly the model its docstring describes (the unfolded form)."""

from __future__ import annotations

import torch
from torch import nn

from models_onnx.model import SessionScorer, _unit


def unfolded(model: SessionScorer, pos, neg, taste, context, cand) -> torch.Tensor:  # noqa: ANN001
    """The reference form: the pair layer applied to [cos, c*pos, c*neg, c*taste] per candidate."""
    pos_u, pos_n = _unit(pos)
    neg_u, neg_n = _unit(neg)
    taste_u, taste_n = _unit(taste)
    cand_u, _ = _unit(cand)  # [B, K, D]
    p_pos, p_neg, p_taste = (cand_u * v.unsqueeze(1) for v in (pos_u, neg_u, taste_u))  # [B, K, D] each
    cos = torch.stack([p_pos.sum(-1), p_neg.sum(-1), p_taste.sum(-1)], dim=-1)  # [B, K, 3]
    user = torch.cat([context, torch.log1p(pos_n), torch.log1p(neg_n), torch.log1p(taste_n)], dim=-1)
    weights = nn.functional.softplus(model.gate(user)) * torch.tensor([1.0, -1.0, 1.0])
    linear = (cos * weights.unsqueeze(1)).sum(-1)
    hidden = model.pair(torch.cat([cos, p_pos, p_neg, p_taste], dim=-1)) + model.user(user).unsqueeze(1)
    return linear + model.head(hidden).squeeze(-1) + model.bias


def test_folded_pair_layer_matches_the_unfolded_model() -> None:
    torch.manual_seed(3)
    model = SessionScorer(dim=12, hidden=16)
    for p in model.parameters():  # a trained-looking model, not the cosine-rule initialisation
        nn.init.normal_(p, std=0.3)
    b, k, d = 5, 37, 12
    pos, neg, taste = (torch.randn(b, d) * torch.rand(b, 1) * 3 for _ in range(3))
    neg[1] = 0.0  # a session without skips
    inputs = (pos, neg, taste, torch.rand(b, 8) * 2 - 1, torch.randn(b, k, d))
    with torch.no_grad():
        got, want = model(*inputs), unfolded(model, *inputs)
    assert got.shape == (b, k)
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
