"""Fault injection for drills and tests: a scorer that is slower than the budget.

Enabled only by ``SEGUE_SCORING__INJECT_DELAY_MS`` (0, off, by default).
"""

from __future__ import annotations

import time

import numpy as np

from serving.rescore import Scorer


class SlowScorer:
    """Wraps a scorer and sleeps ``delay_s`` before every call."""

    def __init__(self, inner: Scorer, delay_s: float) -> None:
        self._inner = inner
        self._delay_s = delay_s
        self.provider = inner.provider
        self.model_version = inner.model_version

    def score(
        self,
        session_pos: np.ndarray,
        session_neg: np.ndarray,
        taste: np.ndarray,
        context: np.ndarray,
        candidates: np.ndarray,
    ) -> np.ndarray:
        time.sleep(self._delay_s)
        return self._inner.score(session_pos, session_neg, taste, context, candidates)
