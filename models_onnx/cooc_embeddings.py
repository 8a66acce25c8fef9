"""Item embeddings for large catalogs: sparse PPMI of session co-occurrence, randomised SVD (torch sparse).

The same recipe as ``models_onnx.embeddings.item_embeddings`` (kept tracks within ``window`` plays of
each other in a session co-occur with weight 1/distance; PPMI with context smoothing 0.75; truncated
SVD; rare tracks shrunk toward their artist's mean) without ever forming the dense N x N matrix, so it
scales to hundreds of thousands of tracks.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from models_onnx.embeddings import shrink_toward_groups


def sparse_cooccurrence(
    items: np.ndarray, session: np.ndarray, n_items: int, window: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric co-occurrence (rows int64, cols int64, weights float64) of ``items`` [T] within sessions."""
    a_parts, b_parts, w_parts = [], [], []
    for d in range(1, window + 1):
        same = session[:-d] == session[d:]
        a, b = items[:-d][same], items[d:][same]
        w = np.full(len(a), 1.0 / d)
        a_parts += [a, b]
        b_parts += [b, a]
        w_parts += [w, w]
    keys = np.concatenate(a_parts) * n_items + np.concatenate(b_parts)
    uniq, inv = np.unique(keys, return_inverse=True)
    return uniq // n_items, uniq % n_items, np.bincount(inv, weights=np.concatenate(w_parts))


def sparse_ppmi(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_items: int, alpha: float = 0.75) -> np.ndarray:
    """PPMI values float64 aligned with (rows, cols); 0 where PMI is negative."""
    total = vals.sum()
    row = np.bincount(rows, weights=vals, minlength=n_items)
    ctx = row**alpha
    ctx = ctx / ctx.sum()
    pmi = np.log(vals / total) - np.log(row[rows] / total) - np.log(ctx[cols])
    return np.maximum(pmi, 0.0)


def sparse_item_embeddings(
    items: np.ndarray,
    session: np.ndarray,
    n_items: int,
    dim: int,
    groups: list[np.ndarray],
    rng: np.random.Generator,
    window: int = 4,
    shrink: float = 4.0,
    power_iters: int = 3,
    oversample: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised float32 [n_items, dim] embeddings and per-item counts from kept plays ``items`` [T]."""
    counts = np.bincount(items, minlength=n_items).astype(np.float64)
    r, c, v = sparse_cooccurrence(items, session, n_items, window)
    p = sparse_ppmi(r, c, v, n_items)
    keep = p > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on sparse invariants and beta CSR support
        m = torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([r[keep], c[keep]])), torch.from_numpy(p[keep]), (n_items, n_items)
        ).coalesce()
        m = m.to_sparse_csr()
    k = dim + oversample
    omega = torch.from_numpy(rng.normal(size=(n_items, k)))
    q, _ = torch.linalg.qr(m @ omega)
    for _ in range(power_iters):  # the matrix is symmetric: M^T q = M q
        q, _ = torch.linalg.qr(m @ q)
    small = (m @ q).T  # [k, N] = q^T M
    u_small, s, _ = torch.linalg.svd(small, full_matrices=False)
    u = (q @ u_small[:, :dim]).numpy()
    s = s[:dim].numpy()
    signs = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(dim)])
    u = u * signs
    own = u * np.sqrt(s)
    n = np.linalg.norm(own, axis=1, keepdims=True)
    own = np.divide(own, n, out=np.zeros_like(own), where=n > 0)
    return shrink_toward_groups(own, counts, groups, rng, shrink), counts
