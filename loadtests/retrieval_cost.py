"""Candidate retrieval at catalog scale: the exact search against the inverted file, CPU per user and recall.

    python -m loadtests.retrieval_cost                                     # 50,000 tracks, dim 32, top 200
    python -m loadtests.retrieval_cost --tracks 200000 --nprobe 8,16,32 --users 64 --repeats 20

The catalog is synthetic (``clustered``: tracks around ``tracks / 150`` centres, as artists and genres
cluster real catalogs; seeded), the queries are what the worker asks with (a session's positives minus its
negatives: 1.5 x one track - 0.5 x another), and every user excludes ``--exclude`` tracks (its recent ones).
Both retrievers run in this process on one thread, as the worker runs them (``serving/retrieval.py``:
``ExactRetriever``, ``IvfRetriever`` with faiss limited to one thread). Reported per retriever: CPU
milliseconds per user (``time.process_time``, so other load on the machine changes it less than wall
clock), recall (the share of the exact top-k it returns) and build seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from serving.retrieval import ExactRetriever, IvfRetriever, Retriever


@dataclass(frozen=True)
class Row:
    name: str
    build_s: float
    ms_per_user: float
    recall: float


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors of dimension ``d`` around ``n / 150`` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, n // 150), d))
    items = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, d))
    return (items / np.linalg.norm(items, axis=1, keepdims=True)).astype(np.float32)


def cpu_per_user(r: Retriever, queries: np.ndarray, exclude: list[set[int]], k: int, repeats: int) -> float:
    r.search(queries, exclude, k)  # warm-up
    start = time.process_time()
    for _ in range(repeats):
        r.search(queries, exclude, k)
    return 1000.0 * (time.process_time() - start) / (repeats * len(queries))


def measure(
    tracks: int, dim: int, users: int, k: int, exclude_n: int, nprobes: Sequence[int], repeats: int, seed: int = 0
) -> list[Row]:
    items = clustered(tracks, dim, seed)
    rng = np.random.default_rng(seed + 1)
    queries = (1.5 * items[rng.integers(0, tracks, users)] - 0.5 * items[rng.integers(0, tracks, users)]).astype(
        np.float32
    )
    exclude = [set(rng.integers(0, tracks, exclude_n).tolist()) for _ in range(users)]
    exact = ExactRetriever(items)
    truth = [set(row) for row in exact.search(queries, exclude, k)[0].tolist()]
    rows = [Row("exact", 0.0, cpu_per_user(exact, queries, exclude, k, repeats), 1.0)]
    for nprobe in nprobes:
        start = time.perf_counter()
        ivf = IvfRetriever(items, nprobe=nprobe)
        build = time.perf_counter() - start
        got = ivf.search(queries, exclude, k)[0].tolist()
        recall = float(np.mean([len(truth[b] & set(got[b])) / len(truth[b]) for b in range(users)]))
        name = f"ivf {ivf.nlist} cells, {ivf.nprobe} probed"
        rows.append(Row(name, build, cpu_per_user(ivf, queries, exclude, k, repeats), recall))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="segue-retrieval-cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--tracks", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--users", type=int, default=64, help="queries per search call (users per model call)")
    p.add_argument("--k", type=int, default=200, help="candidates per user")
    p.add_argument("--exclude", type=int, default=32, help="excluded tracks per user (its recent ones)")
    p.add_argument("--nprobe", default="8,16,32", help="cells probed per query, comma-separated")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    nprobes = [int(x) for x in args.nprobe.split(",") if x.strip()]
    rows = measure(args.tracks, args.dim, args.users, args.k, args.exclude, nprobes, args.repeats, args.seed)
    print(f"{args.tracks:,} tracks x {args.dim}, top {args.k} of {args.users} users per call, {args.exclude} excluded")
    print("| retriever | CPU ms per user | vs exact | recall of the exact top-k | build s |")
    print("|---|---:|---:|---:|---:|")
    base = rows[0].ms_per_user
    for r in rows:
        print(f"| {r.name} | {r.ms_per_user:.3f} | {base / r.ms_per_user:.1f}x | {r.recall:.3f} | {r.build_s:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
