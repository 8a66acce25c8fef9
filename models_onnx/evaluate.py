"""Offline evaluation on real listening histories: the segue model against strong baselines.

    python -m models_onnx.evaluate [--data DIR] [--test DIR] [--out DIR] [--positions 20000] [--seed 0]

Modes (both run by default):

* ``time``: every user of ``--data``; learn from the earlier 80% of each user's time span, score the rest;
* ``users``: test users never seen in training: those of ``--test DIR`` (same file format) when given,
  else a seeded 20% of the ``--data`` users (``--holdout-users``). Their plays before the cut-off (80%
  of their span) are history: replayed through ``streams.session.apply_event`` for the model and seen by
  the history-based baselines, never trained on.

Next-track prediction is ranked over the full training catalog; skip prediction is for each next played
track. Writes a markdown report, PNG plots, a model card and the segue bundles (under ``--out``; the
bundles are never the shipped default). Data are read at run time from ``--data``; nothing per user is
written into the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models_onnx.baselines import ItemKNN, NextTrack, Popularity, SessionKNN, UserHistory
from models_onnx.metrics import Bootstrap
from models_onnx.protocol import Positions, Result, next_result, rank_targets, sample_positions, skip_result
from models_onnx.realdata import DEFAULT_DATA, Fold, holdout_users, load_plays, time_fold, user_fold
from models_onnx.skips import SkipLogReg, same_as_previous, user_skip_rate


@dataclass(frozen=True)
class EvalConfig:
    positions: int = 20_000
    seed: int = 0
    holdout_users: float = 0.2
    max_users: int | None = None
    bootstrap: int = 1000
    modes: tuple[str, ...] = ("time", "users")
    gru: bool = True
    segue: bool = True
    progress: bool = True
    gru_epochs: float = 1.0
    segue_epochs: int = 3
    segue_max_train: int = 150_000
    candidates: int = 1000
    history: int = 500
    neighbours: int = 200
    segue_holdout: int = 5
    segue_holdout_modes: tuple[str, ...] = ("time", "users")


def _timed(fn: Callable[[], Any], timings: dict[str, float], key: str) -> Any:
    t = time.perf_counter()
    out = fn()
    timings[key] = timings.get(key, 0.0) + time.perf_counter() - t
    return out


def next_methods(cfg: EvalConfig) -> list[NextTrack]:
    methods: list[NextTrack] = [Popularity(), UserHistory(False), UserHistory(True), ItemKNN(), SessionKNN()]
    if cfg.gru:
        from models_onnx.gru4rec import GRU4Rec

        methods.append(GRU4Rec(epochs=cfg.gru_epochs, seed=cfg.seed, progress=cfg.progress))
    return methods


def run_fold(fold: Fold, cfg: EvalConfig, out: Path, timings: dict[str, float]) -> tuple[list[Result], Positions]:
    """Fit every method on ``fold.train`` and score the sampled positions; return results and positions."""
    p = sample_positions(fold, cfg.positions, cfg.seed)
    boot = Bootstrap(p.user, cfg.bootstrap, cfg.seed)
    results: list[Result] = []
    for m in next_methods(cfg):
        key = f"{fold.name}/{m.name}"
        _timed(lambda m=m: m.fit(fold), timings, key)
        ranks = _timed(
            lambda m=m: rank_targets(
                lambda rows: m.scores(fold, rows), p, f"{fold.name}: {m.name}", progress=cfg.progress
            ),
            timings,
            key,
        )
        steps = getattr(m, "steps_done", None)
        note = (
            f"trained {steps} steps of batch {getattr(m, 'batch', '?')}, {getattr(m, 'epochs_done', 0.0):.2f} epochs "
            f"over the training sessions (budget {getattr(m, 'epochs', '?')} epochs)"
            if steps is not None
            else ""
        )
        results.append(next_result(m.name, ranks, p, boot, note=note))
    results.append(skip_result("user skip rate", user_skip_rate(fold, p.rows), p, boot))
    results.append(skip_result("same as previous", same_as_previous(fold, p.rows), p, boot))
    lr = SkipLogReg()
    _timed(lambda: lr.fit(fold), timings, f"{fold.name}/{lr.name}")
    results.append(skip_result(lr.name, lr.predict(fold, p.rows), p, boot))
    if cfg.segue:
        from models_onnx.realmodel import evaluate_segue

        results += _timed(
            lambda: evaluate_segue(fold, p, boot, cfg, out / "bundles" / fold.name), timings, f"{fold.name}/segue"
        )
    return results, p


def evaluate(data: Path, test: Path | None, out: Path, cfg: EvalConfig) -> dict[str, Any]:
    """Run every mode of ``cfg`` and write the report to ``out``; return the summary (also ``summary.json``)."""
    from models_onnx.report import write_report

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    plays = _timed(lambda: load_plays(data, cfg.max_users, cfg.seed), timings, "load")
    folds: dict[str, dict[str, Any]] = {}
    for mode in cfg.modes:
        if mode == "time":
            fold = time_fold(plays)
        else:
            if test is not None:
                train, held = plays, _timed(lambda: load_plays(test, None, cfg.seed), timings, "load")
            else:
                train, held = holdout_users(plays, cfg.holdout_users, cfg.seed)
            fold = user_fold(train, held)
        results, p = run_fold(fold, cfg, out, timings)
        folds[mode] = {
            "results": results,
            "n_positions": len(p),
            "n_sessions": int(len(np.unique(p.session))),
            "n_users": int(len(np.unique(p.user))),
            "train_plays": len(fold.train),
            "train_users": int(len(np.unique(fold.train.user))),
            "catalog": len(fold.vocab),
            "oov_targets": float(np.mean(p.target < 0)),
            "skip_rate": float(p.skip.mean()),
        }
    seconds = time.perf_counter() - t0
    summary = {
        "config": asdict(cfg),
        "data": str(data),
        "test": str(test) if test else None,
        "plays": len(plays),
        "users": len(plays.user_ids),
        "seconds": round(seconds, 1),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    write_report(out, folds, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(prog="python -m models_onnx.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path(DEFAULT_DATA), help="training data directory")
    p.add_argument("--test", type=Path, default=None, help="directory of unseen test users (users mode)")
    p.add_argument("--out", type=Path, default=Path(".segue/reports/offline"), help="report directory")
    p.add_argument("--positions", type=int, default=20_000, help="scored positions per mode (at least)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", default="time,users", help="comma-separated: time, users")
    p.add_argument("--holdout-users", type=float, default=0.2, help="users mode without --test: held-out fraction")
    p.add_argument("--max-users", type=int, default=None, help="seeded random subset of --data users")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates")
    p.add_argument("--gru-epochs", type=float, default=1.0, help="training budget of the GRU baseline, in epochs")
    p.add_argument("--segue-epochs", type=int, default=3)
    p.add_argument("--candidates", type=int, default=1000, help="candidates rescored by the model")
    p.add_argument("--history", type=int, default=500, help="of them, the listener's most recent distinct tracks")
    p.add_argument("--neighbours", type=int, default=200, help="of them, co-occurrence neighbours of the session")
    p.add_argument("--segue-max-train", type=int, default=150_000, help="training transitions of the segue model")
    p.add_argument(
        "--segue-holdout",
        type=int,
        default=5,
        help="N >= 2: the segue model trains on plays its bundle never learnt from (users mode: 1/N of the training "
        "listeners; time mode: each listener's last plays); 0: off",
    )
    p.add_argument(
        "--segue-holdout-modes", default="time,users", help="comma-separated modes where --segue-holdout applies"
    )
    p.add_argument("--no-gru", action="store_true")
    p.add_argument("--no-segue", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"no data directory at {args.data}", file=sys.stderr)
        return 2
    cfg = EvalConfig(
        positions=args.positions,
        seed=args.seed,
        holdout_users=args.holdout_users,
        max_users=args.max_users,
        bootstrap=args.bootstrap,
        modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()),
        gru=not args.no_gru,
        segue=not args.no_segue,
        progress=not args.no_progress,
        gru_epochs=args.gru_epochs,
        segue_epochs=args.segue_epochs,
        candidates=args.candidates,
        history=args.history,
        neighbours=args.neighbours,
        segue_max_train=args.segue_max_train,
        segue_holdout=args.segue_holdout,
        segue_holdout_modes=tuple(m.strip() for m in args.segue_holdout_modes.split(",") if m.strip()),
    )
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    summary = evaluate(args.data, args.test, args.out, cfg)
    print((args.out / "report.md").read_text())
    print(json.dumps({"seconds": summary["seconds"], "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
