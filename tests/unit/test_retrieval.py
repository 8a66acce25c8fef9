"""Every ``Retriever`` passes the same contract tests; approximate ones are also checked against the exact one."""

import numpy as np
import pytest

from serving.retrieval import IVF_FROM_TRACKS, ExactRetriever, IvfRetriever, Retriever, make_retriever
from streams.errors import ConfigError

RETRIEVERS = {
    "exact": ExactRetriever,
    # few cells, all probed: the inverted file must then give exactly the exact answer
    "ivf-all-cells": lambda items: IvfRetriever(items, nlist=4, nprobe=4),
    "ivf": lambda items: IvfRetriever(items, nlist=16, nprobe=2),
}


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(2, n // 150), d))
    return (centers[rng.integers(0, len(centers), n)] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(params=sorted(RETRIEVERS))
def make(request):
    return RETRIEVERS[request.param]


def test_results_are_best_first_and_never_excluded(make):
    rng = np.random.default_rng(1)
    items = clustered(2000, 16)
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    exclude = [set(rng.choice(2000, size=20, replace=False).tolist()) for _ in range(7)]
    idx, sims = make(items).search(queries, exclude, 50)
    assert idx.shape == (7, 50) and sims.shape == (7, 50) and idx.dtype == np.int64
    for b in range(7):
        assert not set(idx[b].tolist()) & exclude[b] and len(set(idx[b].tolist())) == 50
        assert np.all(np.diff(sims[b]) <= 1e-6)
        np.testing.assert_allclose(sims[b], items[idx[b]] @ queries[b], rtol=1e-4, atol=1e-4)


def test_k_larger_than_catalog_is_clipped(make):
    items = clustered(64, 4)
    idx, _ = make(items).search(np.ones((2, 4), np.float32), [{0}, set()], 100)
    assert idx.shape == (2, 63) and 0 not in idx[0]


def test_empty_batch_and_k_zero(make):
    items = clustered(64, 4)
    r: Retriever = make(items)
    assert r.search(np.zeros((0, 4), np.float32), [], 5)[0].shape == (0, 5)
    assert r.search(np.ones((1, 4), np.float32), [set()], 0)[0].shape == (1, 0)


def test_exact_matches_a_full_sort():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    exclude = [set(rng.choice(500, size=20, replace=False).tolist()) for _ in range(7)]
    idx, _ = ExactRetriever(items).search(queries, exclude, 50)
    for b in range(7):
        full = queries[b] @ items.T
        full[list(exclude[b])] = -np.inf
        assert set(idx[b]) == set(np.argsort(-full, kind="stable")[:50])


def test_ivf_with_every_cell_probed_is_exact():
    rng = np.random.default_rng(2)
    items = clustered(3000, 16)
    queries = rng.normal(size=(16, 16)).astype(np.float32)
    exclude = [set(rng.choice(3000, size=10, replace=False).tolist()) for _ in range(16)]
    got, _ = IvfRetriever(items, nlist=8, nprobe=8).search(queries, exclude, 100)
    want, _ = ExactRetriever(items).search(queries, exclude, 100)
    assert [set(r) for r in got.tolist()] == [set(r) for r in want.tolist()]


def test_ivf_finds_most_of_the_exact_top_k_on_a_large_catalog():
    rng = np.random.default_rng(3)
    items = clustered(20_000, 32)
    queries = items[rng.integers(0, 20_000, 64)] * 1.5 - items[rng.integers(0, 20_000, 64)] * 0.5
    exclude = [set(rng.integers(0, 20_000, 32).tolist()) for _ in range(64)]
    ivf = IvfRetriever(items)
    got, _ = ivf.search(queries, exclude, 200)
    want, _ = ExactRetriever(items).search(queries, exclude, 200)
    recall = np.mean([len(set(g) & set(w)) / 200 for g, w in zip(got.tolist(), want.tolist(), strict=True)])
    assert recall >= 0.9, recall
    assert ivf.nprobe < ivf.nlist  # and it did not search every cell


def test_ivf_falls_back_to_exact_when_the_probed_cells_run_out():
    items = clustered(400, 8)
    # one cell probed of 40: ~10 tracks reachable, 50 asked for
    idx, sims = IvfRetriever(items, nlist=40, nprobe=1).search(np.ones((1, 8), np.float32), [set()], 50)
    want, _ = ExactRetriever(items).search(np.ones((1, 8), np.float32), [set()], 50)
    assert idx.shape == (1, 50) and set(idx[0].tolist()) == set(want[0].tolist())


def test_make_retriever_picks_by_setting_and_catalog_size():
    small = clustered(100, 4)
    assert isinstance(make_retriever(small, "auto"), ExactRetriever)
    assert isinstance(make_retriever(small, "ivf"), IvfRetriever)
    assert isinstance(make_retriever(clustered(IVF_FROM_TRACKS, 4), "auto"), IvfRetriever)
    assert isinstance(make_retriever(clustered(IVF_FROM_TRACKS, 4), "exact"), ExactRetriever)
    with pytest.raises(ConfigError, match="unknown retriever"):
        make_retriever(small, "hnsw")


def test_retrieval_cost_command_reports_both_retrievers(capsys):
    from loadtests.retrieval_cost import main

    args = ["--tracks", "3000", "--dim", "8", "--users", "8", "--k", "50", "--nprobe", "2,1000", "--repeats", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| exact") or line.startswith("| ivf")]
    assert len(rows) == 3
    assert rows[-1].split("|")[4].strip() == "1.000"  # every cell probed: the exact answer
