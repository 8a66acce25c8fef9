"""Recommendations as stored in Redis: compact format v2, or the v1 JSON record (docs/state.md).

v2 keeps a list as catalog indices instead of track ids (a MessagePack array: uint16 or uint32 indices,
float32 scores, a reason code byte, the cited track's index and the contribution per item), about 250
bytes for 20 tracks with reasons against ~2 KB of JSON. Decoding needs the catalog the list was made
with: ``RecsCodec`` is built from the served catalog's track ids and model version; the worker also stores
that table in Redis once per model version (``catalog_payload``), so any reader can decode a list without the
model bundle (``streams.stores.RedisStore`` does). A list of a model version whose table is not found decodes to
``None``, so the reader ranks afresh rather than mapping indices onto the wrong tracks. Lists the compact
form cannot hold (a track or reason code the catalog does not know) are stored as the v1 JSON record, which
every reader understands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec
import numpy as np

from streams.errors import StateFormatError
from streams.records import Reason, Recommendations, RecommendedTrack, decode_recommendations, encode_record, rounded

RECS_FORMAT: Final = 2


class _RecsV2(msgspec.Struct, array_like=True, frozen=True):
    fmt: int
    model_version: str
    provider: str
    session_id: str
    event_id: str
    event_ms: int
    generated_ms: int
    fallback: bool
    wide: bool  # indices as uint32 (catalogs over 65,535 tracks) instead of uint16
    indices: bytes
    scores: bytes  # little-endian float32
    reason_codes: bytes  # uint8 index into the code table + 1; 0: no reason
    cited: bytes  # cited track index, same width as ``indices``, all bits set: none
    contributions: bytes  # little-endian float32


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_RecsV2)


class RecsCodec:
    """Encodes ``Recommendations`` for one catalog (``track_ids`` of model ``model_version``).

    ``reason_codes``: the reason code table (``serving.explain.REASON_CODES``); its order is part of the format,
    so codes are only ever appended to it. Without ``track_ids`` every list is stored as v1 JSON.
    """

    def __init__(
        self,
        track_ids: Sequence[str] | None = None,
        model_version: str = "",
        reason_codes: Sequence[str] = (),
    ) -> None:
        self._ids = list(track_ids) if track_ids is not None else None
        self._index = {t: i for i, t in enumerate(self._ids)} if self._ids is not None else {}
        self._model_version = model_version
        self._codes = list(reason_codes)
        self._code_index = {c: i + 1 for i, c in enumerate(self._codes)}
        self._wide = self._ids is not None and len(self._ids) > 0xFFFF

    @property
    def model_version(self) -> str:
        return self._model_version

    def catalog_payload(self) -> bytes:
        """The table a reader needs to decode this codec's lists: [format, track ids, reason codes]."""
        return _encoder.encode([RECS_FORMAT, self._ids or [], self._codes])

    @staticmethod
    def from_payload(model_version: str, raw: bytes) -> RecsCodec:
        """The codec of ``model_version`` from its ``catalog_payload``."""
        fmt, ids, codes = msgspec.msgpack.decode(raw, type=tuple[int, list[str], list[str]])
        if fmt != RECS_FORMAT:
            raise StateFormatError(f"catalog table format {fmt} is not supported (this code reads {RECS_FORMAT})")
        return RecsCodec(ids, model_version, codes)

    def encode(self, recs: Recommendations) -> bytes:
        """The stored bytes for ``recs``: v2 when the catalog holds every track and reason, else v1 JSON."""
        compact = self._compact(recs) if self._ids is not None and recs.model_version == self._model_version else None
        return compact if compact is not None else encode_record(recs)

    def encode_ranked(self, recs: Recommendations, ranked: Any) -> bytes:
        """``encode(recs)`` straight from the ranking ``recs`` was made from (``serving.rescore.Ranking``:
        ``indices`` int [n], ``scores`` float [n], ``reasons`` with ``codes`` (indices into this codec's code table),
        ``cited`` (-1: none) and ``contribution``, or ``None``), without walking the record's items; it reads back
        as the record ``serving.rescore.to_record`` built from the same ranking."""
        if self._ids is None or recs.model_version != self._model_version:
            return encode_record(recs)
        n = len(ranked.indices)
        why = ranked.reasons
        if why is None:
            codes, cited, contrib = bytes(n), np.full(n, 0xFFFFFFFF if self._wide else 0xFFFF), np.zeros(n)
        else:
            codes = (np.asarray(why.codes, dtype=np.int64) + 1).astype(np.uint8).tobytes()
            cited = np.where(np.asarray(why.cited) < 0, 0xFFFFFFFF if self._wide else 0xFFFF, why.cited)
            contrib = why.contribution
        return self._pack(recs, ranked.indices, ranked.scores, codes, cited, contrib)

    def decode(self, user_id: str, raw: bytes) -> Recommendations | None:
        """The record for ``user_id``; ``None`` for a v2 list of another model version."""
        if raw[:1] == b"{":
            return decode_recommendations(raw)
        try:
            r = _decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StateFormatError(f"cannot decode stored recommendations: {exc}") from None
        if r.fmt != RECS_FORMAT:
            raise StateFormatError(f"recommendations format {r.fmt} is not supported (this code reads 2 and v1 JSON)")
        if self._ids is None or r.model_version != self._model_version:
            return None
        idx = np.frombuffer(r.indices, dtype="<u4" if r.wide else "<u2").tolist()
        scores = rounded(np.frombuffer(r.scores, dtype="<f4"), 5)
        codes = list(r.reason_codes)
        width = "<u4" if r.wide else "<u2"
        none = 0xFFFFFFFF if r.wide else 0xFFFF
        cited = np.frombuffer(r.cited, dtype=width).tolist()
        contrib = rounded(np.frombuffer(r.contributions, dtype="<f4"), 4)
        items = [
            RecommendedTrack(
                track_id=self._ids[i],
                score=s,
                rank=rank + 1,
                reason=Reason(self._codes[c - 1], self._ids[t] if t != none else "", x) if c else None,
            )
            for rank, (i, s, c, t, x) in enumerate(zip(idx, scores, codes, cited, contrib, strict=True))
        ]
        return Recommendations(
            user_id=user_id,
            items=items,
            model_version=r.model_version,
            provider=r.provider,
            session_id=r.session_id,
            event_id=r.event_id,
            event_ms=r.event_ms,
            generated_ms=r.generated_ms,
            fallback=r.fallback,
        )

    def _compact(self, recs: Recommendations) -> bytes | None:  # noqa: C901 - one pass over the items
        n = len(recs.items)
        none = 0xFFFFFFFF if self._wide else 0xFFFF
        idx, codes, cited = [0] * n, bytearray(n), [none] * n
        scores, contrib = [0.0] * n, [0.0] * n
        for k, item in enumerate(recs.items):
            i = self._index.get(item.track_id)
            if i is None or item.rank != k + 1:
                return None
            idx[k], scores[k] = i, item.score
            why = item.reason
            if why is not None:
                code = self._code_index.get(why.code)
                t = self._index.get(why.track_id, None) if why.track_id else none
                if code is None or t is None or why.text:
                    return None
                codes[k], cited[k], contrib[k] = code, t, why.contribution
        return self._pack(recs, idx, scores, bytes(codes), cited, contrib)

    def _pack(self, recs: Recommendations, idx: Any, scores: Any, codes: bytes, cited: Any, contrib: Any) -> bytes:
        """The v2 bytes: ``recs``' metadata and the per-item columns (array-likes of length n)."""
        width = "<u4" if self._wide else "<u2"
        return _encoder.encode(
            _RecsV2(
                fmt=RECS_FORMAT,
                model_version=recs.model_version,
                provider=recs.provider,
                session_id=recs.session_id,
                event_id=recs.event_id,
                event_ms=recs.event_ms,
                generated_ms=recs.generated_ms,
                fallback=recs.fallback,
                wide=self._wide,
                indices=np.asarray(idx).astype(width).tobytes(),
                scores=np.asarray(scores).astype("<f4").tobytes(),
                reason_codes=codes,
                cited=np.asarray(cited).astype(width).tobytes(),
                contributions=np.asarray(contrib).astype("<f4").tobytes(),
            )
        )


def model_version_of(raw: bytes) -> str | None:
    """The model version of stored recommendations in format v2; ``None`` for v1 JSON."""
    if raw[:1] == b"{":
        return None
    try:
        head = msgspec.msgpack.decode(raw, type=list[msgspec.Raw])
        return msgspec.msgpack.decode(head[1], type=str)
    except (msgspec.DecodeError, msgspec.ValidationError, IndexError) as exc:
        raise StateFormatError(f"cannot decode stored recommendations: {exc}") from None
