"""ONNX signature v1 of the session model: the contract between training and serving (torch-free).

Inputs (batch ``B`` and candidates ``K`` are dynamic axes, ``D`` is the bundle's ``dim``):

* ``session_pos`` float32 [B, D], ``session_neg`` float32 [B, D], ``taste`` float32 [B, D]
* ``context`` float32 [B, 8] in ``streams.session.CONTEXT_FEATURES`` order
* ``candidates`` float32 [B, K, D] candidate item embeddings

Output ``scores`` float32 [B, K]: a logit, higher = better next track.
Metadata (``metadata_props``): the ``META_*`` keys below.
"""

from __future__ import annotations

from typing import Final

from streams.session import CONTEXT_FEATURES

SIGNATURE: Final = 1
INPUT_NAMES: Final = ("session_pos", "session_neg", "taste", "context", "candidates")
OUTPUT_NAMES: Final = ("scores",)
N_CONTEXT: Final = len(CONTEXT_FEATURES)

META_SIGNATURE: Final = "segue.signature"
META_MODEL_VERSION: Final = "segue.model_version"
META_DIM: Final = "segue.dim"
META_CONTEXT: Final = "segue.context_features"


def input_shapes(dim: int) -> dict[str, tuple[str | int, ...]]:
    """The v1 input shapes for embedding size ``dim``; strings name dynamic axes."""
    return {
        "session_pos": ("batch", dim),
        "session_neg": ("batch", dim),
        "taste": ("batch", dim),
        "context": ("batch", N_CONTEXT),
        "candidates": ("batch", "k", dim),
    }


def metadata(model_version: str, dim: int) -> dict[str, str]:
    """The metadata_props every v1 model carries."""
    return {
        META_SIGNATURE: str(SIGNATURE),
        META_MODEL_VERSION: model_version,
        META_DIM: str(dim),
        META_CONTEXT: ",".join(CONTEXT_FEATURES),
    }
