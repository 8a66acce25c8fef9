"""How real listeners skip: the aggregate figures the closed loop's simulated listeners are checked against.

    python -m models_onnx.skip_profile [--data DIR] [--min-length 20]

Reads the listening histories at run time (``realdata.load_plays``; skip = under 30 s) and prints aggregate
figures only: the skip rate overall, P(skip) after a skip and after a kept play within a session, and the skip
rate by position in session (position 1, 2-10, 11-20, 21-40) over sessions of at least ``--min-length`` plays,
pooled over plays and as the mean of the listeners' own rates. docs/closed-loop.md cites them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models_onnx.realdata import DEFAULT_DATA, Plays, load_plays

WINDOWS: tuple[tuple[int, int], ...] = ((0, 1), (1, 10), (10, 20), (20, 40))  # positions, 0-based, end excluded


def _label(a: int, b: int) -> str:
    return f"{a + 1}" if b == a + 1 else f"{a + 1}-{b}"


def skip_profile(plays: Plays, min_length: int = 20, windows: Sequence[tuple[int, int]] = WINDOWS) -> dict[str, Any]:
    """Aggregate skip figures of ``plays`` (pure; see the module docstring)."""
    skip = plays.skip
    same = np.zeros(len(plays), bool)
    same[1:] = plays.session[1:] == plays.session[:-1]  # the play has a predecessor in its session
    prev_skip = np.zeros(len(plays), bool)
    prev_skip[1:] = skip[:-1]
    after_skip, after_keep = same & prev_skip, same & ~prev_skip
    _, inverse, counts = np.unique(plays.session, return_inverse=True, return_counts=True)
    long = counts[inverse] >= min_length
    n_users = len(plays.user_ids)
    by_position: dict[str, dict[str, float]] = {}
    for a, b in windows:
        sel = long & (plays.pos >= a) & (plays.pos < b)
        num = np.bincount(plays.user[sel], weights=skip[sel], minlength=n_users)
        den = np.bincount(plays.user[sel], minlength=n_users)
        has = den > 0
        by_position[_label(a, b)] = {
            "pooled": float(skip[sel].mean()) if sel.any() else float("nan"),
            "mean_of_listeners": float((num[has] / den[has]).mean()) if has.any() else float("nan"),
            "plays": int(sel.sum()),
            "listeners": int(has.sum()),
        }
    return {
        "plays": len(plays),
        "listeners": n_users,
        "skip": float(skip.mean()) if len(plays) else float("nan"),
        "skip_after_skip": float(skip[after_skip].mean()) if after_skip.any() else float("nan"),
        "skip_after_keep": float(skip[after_keep].mean()) if after_keep.any() else float("nan"),
        "min_length": min_length,
        "long_sessions": int(len(np.unique(plays.session[long]))),
        "by_position": by_position,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models_onnx.skip_profile", description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(DEFAULT_DATA), help="listening-history directory")
    ap.add_argument("--min-length", type=int, default=20, help="sessions of at least this many plays, by position")
    ap.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: no data directory at {args.data}; pass --data DIR", file=sys.stderr)
        return 2
    prof = skip_profile(load_plays(args.data), args.min_length)
    if args.json:
        print(json.dumps(prof, indent=1))
        return 0
    print(
        f"{prof['plays']:,} plays by {prof['listeners']} listeners: skipped {prof['skip']:.1%}; "
        f"after a skip {prof['skip_after_skip']:.1%}, after a kept play {prof['skip_after_keep']:.1%}"
    )
    print(f"by position, {prof['long_sessions']:,} sessions of >= {prof['min_length']} plays (pooled / per listener):")
    for name, w in prof["by_position"].items():
        print(f"  {name:>6}: {w['pooled']:.1%} / {w['mean_of_listeners']:.1%}  ({w['plays']:,} plays)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
