import numpy as np

from serving.retrieval import ExactRetriever


def test_exact_top_k_matches_full_sort_and_respects_exclusions():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    exclude = [set(rng.choice(500, size=20, replace=False).tolist()) for _ in range(7)]
    idx, sims = ExactRetriever(items).search(queries, exclude, 50)
    assert idx.shape == (7, 50) and sims.shape == (7, 50)
    for b in range(7):
        full = queries[b] @ items.T
        full[list(exclude[b])] = -np.inf
        expected = np.argsort(-full, kind="stable")[:50]
        assert set(idx[b]) == set(expected)
        assert not set(idx[b]) & exclude[b]
        assert np.all(np.diff(sims[b]) <= 0)


def test_k_larger_than_catalog_is_clipped():
    items = np.eye(3, dtype=np.float32)
    idx, _ = ExactRetriever(items).search(np.ones((1, 3), np.float32), [{0}], 10)
    assert sorted(idx[0].tolist()) == [1, 2]
