"""Session state encoding in Redis, format v2 (see docs/state.md); format v1 is still read.

One MessagePack value per user. Vectors are raw little-endian float16 bytes (v1: float32; the session rule
keeps them at half precision, so nothing is lost), recent track indices raw
little-endian uint16 (uint32 for catalogs over 65,535 tracks). The first field is the format version; a
decoder meeting a newer version refuses it rather than guessing.

v2 against v1: the last applied event is kept as a stream position (``streams.session.stream_position``:
offset and index inside a batch message) instead of a bare offset, vectors are float16 and recent indices
are packed. A v1 state's
offset ``o`` reads as position ``stream_position(o)``: v1 messages held one event each.
"""

from __future__ import annotations

from typing import Final

import msgspec
import numpy as np

from streams.errors import StateFormatError
from streams.session import SessionState, stream_position

STATE_FORMAT: Final = 2


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


class _StateV2(msgspec.Struct, array_like=True, frozen=True):
    fmt: int
    dim: int
    pos: bytes  # little-endian float16
    neg: bytes
    taste: bytes
    recent: bytes  # little-endian uint16, or uint32 when ``wide``
    wide: bool
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
    position: int
    version: int


_encoder = msgspec.msgpack.Encoder()
_decoders = {1: msgspec.msgpack.Decoder(_StateV1), 2: msgspec.msgpack.Decoder(_StateV2)}


def encode_state(state: SessionState) -> bytes:
    """Encode a state as format v2 bytes."""
    wide = max(state.recent, default=0) > 0xFFFF
    return _encoder.encode(
        _StateV2(
            fmt=STATE_FORMAT,
            dim=state.dim,
            pos=_f16(state.pos),
            neg=_f16(state.neg),
            taste=_f16(state.taste),
            recent=np.asarray(state.recent, dtype="<u4" if wide else "<u2").tobytes(),
            wide=wide,
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
            position=state.position,
            version=state.version,
        )
    )


def decode_state(raw: bytes) -> SessionState:
    """Decode format v2 (or v1) bytes; raise ``StateFormatError`` on anything else."""
    try:
        fmt = _peek_format(raw)
        decoder = _decoders.get(fmt)
        if decoder is None:
            raise StateFormatError(
                f"session state format {fmt} is not supported (this code reads {sorted(_decoders)}): "
                "upgrade the worker, or clear the state with segue-forget"
            )
        s = decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StateFormatError(f"cannot decode session state: {exc}") from None
    width = "<f4" if isinstance(s, _StateV1) else "<f2"
    if isinstance(s, _StateV1):
        recent = tuple(s.recent)
        position = stream_position(s.offset) if s.offset >= 0 else -1
    else:
        recent = tuple(np.frombuffer(s.recent, dtype="<u4" if s.wide else "<u2").tolist())
        position = s.position
    return SessionState(
        pos=_vec(s.pos, s.dim, width),
        neg=_vec(s.neg, s.dim, width),
        taste=_vec(s.taste, s.dim, width),
        recent=recent,
        outcomes=tuple(s.outcomes),
        session_id=s.session_id,
        session_start_ms=s.session_start_ms,
        last_ts_ms=s.last_ts_ms,
        plays=s.plays,
        skips=s.skips,
        likes=s.likes,
        events=s.events,
        last_outcome=s.last_outcome,
        seen_ids=tuple(np.frombuffer(s.seen_ids, dtype="<u8").tolist()),
        partition=s.partition,
        position=position,
        version=s.version,
    )


def _peek_format(raw: bytes) -> int:
    """The format number: the first element of the MessagePack array."""
    if len(raw) > 3 and raw[0] == 0xDC and raw[3] < 0x80:  # array16 header, then a positive fixint
        return raw[3]
    head = msgspec.msgpack.decode(raw, type=list[msgspec.Raw])
    if not head:
        raise msgspec.DecodeError("empty state")
    return msgspec.msgpack.decode(head[0], type=int)


def _f16(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f2").tobytes()


def _vec(raw: bytes, dim: int, width: str) -> np.ndarray:
    v = np.frombuffer(raw, dtype=width)
    if v.shape[0] != dim:
        raise StateFormatError(f"vector has {v.shape[0]} values, expected {dim}")
    return v.astype(np.float32)
