"""ONNX signatures of the session model: the contract between training and serving (torch-free).

**v1** (the generated-data default). Inputs (batch ``B`` and candidates ``K`` are dynamic axes, ``D`` is
the bundle's ``dim``):

* ``session_pos`` float32 [B, D], ``session_neg`` float32 [B, D], ``taste`` float32 [B, D]
* ``context`` float32 [B, 8] in ``streams.session.CONTEXT_FEATURES`` order
* ``candidates`` float32 [B, K, D] candidate item embeddings

Output ``scores`` float32 [B, K]: a logit, higher = better next track.

**v2** = v1 plus per-candidate evidence, and a skip head:

* input ``cand_features`` float32 [B, K, F] in ``CANDIDATE_FEATURES`` order (computed by
  ``serving.features.FeatureBuilder`` from the session state, the bundle's co-occurrence table and, where
  known, the listener's history);
* outputs ``scores`` float32 [B, K] (the ranking logit) and ``keep`` float32 [B, K] (logit of "played
  through, not skipped, if it comes next").

Metadata (``metadata_props``): the ``META_*`` keys below (v2 adds ``META_CANDIDATE_FEATURES``).
"""

from __future__ import annotations

from typing import Final

from streams.session import CONTEXT_FEATURES

SIGNATURE: Final = 1  # what the generated-data default bundle carries
SIGNATURES: Final = (1, 2)  # what serving loads
INPUT_NAMES: Final = ("session_pos", "session_neg", "taste", "context", "candidates")
OUTPUT_NAMES: Final = ("scores",)
INPUT_NAMES_V2: Final = (*INPUT_NAMES, "cand_features")
OUTPUT_NAMES_V2: Final = ("scores", "keep")
N_CONTEXT: Final = len(CONTEXT_FEATURES)

# Per-candidate evidence of signature v2 (serving.features.FeatureBuilder computes them, in this order).
CANDIDATE_FEATURES: Final = (
    "session_played",  # 1: the candidate is among the session's recent tracks, last outcome not a skip
    "session_skipped",  # 1: ... last outcome a skip
    "session_recency",  # 1 / (1 + plays since its last occurrence in the session), 0 when absent
    "session_count",  # log1p(occurrences among the session's recent tracks) / 2
    "cooc_last",  # log1p(10 * co-occurrence score with the session's last track)
    "cooc_recent",  # the same, decayed sum over the last 3 tracks (weights 1, 1/2, 1/3)
    "cooc_session",  # the same, linearly decayed sum over the last 10 tracks (a session-kNN-like score)
    "cooc_last_rel",  # cooc_last / its maximum over the user's candidates
    "cooc_session_rel",  # cooc_session / its maximum over the user's candidates
    "history_known",  # 1: the listener's history was passed (offline replay); 0 online today
    "history_present",  # 1: the candidate is among the listener's recent distinct tracks
    "history_recency",  # 1 - log1p(rank among them) / log1p(window), 0 when absent
    "history_count",  # log1p(plays of it in the history window) / 4
    "user_skip_rate",  # the listener's smoothed skip rate (the training prior when unknown)
    "history_follows",  # log1p of how often the candidate followed the session's last track in the history
    "history_last_skip",  # 1: the listener's previous play (any track, also one outside the catalog) was a skip
    "history_session_skip_rate",  # skip rate of the current session's plays in the history (all tracks)
    "popularity",  # log1p(training plays) / log1p(max)
    "track_skip_rate",  # smoothed training skip rate of the track
)
N_CANDIDATE_FEATURES: Final = len(CANDIDATE_FEATURES)

META_SIGNATURE: Final = "segue.signature"
META_MODEL_VERSION: Final = "segue.model_version"
META_DIM: Final = "segue.dim"
META_CONTEXT: Final = "segue.context_features"
META_CANDIDATE_FEATURES: Final = "segue.candidate_features"


def input_names(signature: int = SIGNATURE) -> tuple[str, ...]:
    return INPUT_NAMES_V2 if signature >= 2 else INPUT_NAMES


def output_names(signature: int = SIGNATURE) -> tuple[str, ...]:
    return OUTPUT_NAMES_V2 if signature >= 2 else OUTPUT_NAMES


def input_shapes(dim: int, signature: int = SIGNATURE) -> dict[str, tuple[str | int, ...]]:
    """The input shapes of ``signature`` for embedding size ``dim``; strings name dynamic axes."""
    shapes: dict[str, tuple[str | int, ...]] = {
        "session_pos": ("batch", dim),
        "session_neg": ("batch", dim),
        "taste": ("batch", dim),
        "context": ("batch", N_CONTEXT),
        "candidates": ("batch", "k", dim),
    }
    if signature >= 2:
        shapes["cand_features"] = ("batch", "k", N_CANDIDATE_FEATURES)
    return shapes


def metadata(model_version: str, dim: int, signature: int = SIGNATURE) -> dict[str, str]:
    """The metadata_props every model of ``signature`` carries."""
    meta = {
        META_SIGNATURE: str(signature),
        META_MODEL_VERSION: model_version,
        META_DIM: str(dim),
        META_CONTEXT: ",".join(CONTEXT_FEATURES),
    }
    if signature >= 2:
        meta[META_CANDIDATE_FEATURES] = ",".join(CANDIDATE_FEATURES)
    return meta
