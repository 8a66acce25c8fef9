"""Session state encoding in Redis, format v1 (see docs/state.md).

One MessagePack value per user. Vectors are raw little-endian float32 bytes. The first field is the format
version; a decoder meeting a newer version refuses it rather than guessing.
"""

from __future__ import annotations

from typing import Final

import msgspec
import numpy as np

from streams.errors import StateFormatError
from streams.session import SessionState

STATE_FORMAT: Final = 1


class _StateV1(msgspec.Struct, array_like=True, frozen=True):
    fmt: int
    dim: int
    pos: bytes
    neg: bytes
    taste: bytes
    recent: list[int]
    outcomes: bytes
    session_id: str
    session_start_ms: int
    last_ts_ms: int
    plays: int
    skips: int
    likes: int
    events: int
    last_outcome: int
    seen_ids: bytes  # little-endian uint64 digests
    partition: int
    offset: int
    version: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_StateV1)


def encode_state(state: SessionState) -> bytes:
    """Encode a state as format v1 bytes."""
    return _encoder.encode(
        _StateV1(
            fmt=STATE_FORMAT,
            dim=state.dim,
            pos=_f32(state.pos),
            neg=_f32(state.neg),
            taste=_f32(state.taste),
            recent=list(state.recent),
            outcomes=bytes(state.outcomes),
            session_id=state.session_id,
            session_start_ms=state.session_start_ms,
            last_ts_ms=state.last_ts_ms,
            plays=state.plays,
            skips=state.skips,
            likes=state.likes,
            events=state.events,
            last_outcome=state.last_outcome,
            seen_ids=np.asarray(state.seen_ids, dtype="<u8").tobytes(),
            partition=state.partition,
            offset=state.offset,
            version=state.version,
        )
    )


def decode_state(raw: bytes) -> SessionState:
    """Decode format v1 bytes; raise ``StateFormatError`` on anything else."""
    try:
        s = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StateFormatError(f"cannot decode session state: {exc}") from None
    if s.fmt != STATE_FORMAT:
        raise StateFormatError(f"session state format {s.fmt} is not supported (this code reads {STATE_FORMAT})")
    return SessionState(
        pos=_vec(s.pos, s.dim),
        neg=_vec(s.neg, s.dim),
        taste=_vec(s.taste, s.dim),
        recent=tuple(s.recent),
        outcomes=tuple(s.outcomes),
        session_id=s.session_id,
        session_start_ms=s.session_start_ms,
        last_ts_ms=s.last_ts_ms,
        plays=s.plays,
        skips=s.skips,
        likes=s.likes,
        events=s.events,
        last_outcome=s.last_outcome,
        seen_ids=tuple(int(x) for x in np.frombuffer(s.seen_ids, dtype="<u8")),
        partition=s.partition,
        offset=s.offset,
        version=s.version,
    )


def _f32(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def _vec(raw: bytes, dim: int) -> np.ndarray:
    v = np.frombuffer(raw, dtype="<f4")
    if v.shape[0] != dim:
        raise StateFormatError(f"vector has {v.shape[0]} values, expected {dim}")
    return v.astype(np.float32)
