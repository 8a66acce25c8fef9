"""Event contract v1: play, skip and like events as typed, frozen records.

The JSON Schema in ``docs/schema/events-v1.schema.json`` is generated from these classes
(``python -m streams.schema``) and a test keeps the two in step. Every event is a JSON object
keyed on Kafka by ``user_id``. ``decode_event`` is the only way bytes become an ``Event``; it
raises ``InvalidEvent`` with a stable ``reason`` code that the worker puts on the dead-letter topic.
The records' text fields state their character rules (patterns) for the schema only, and ``decode_event``
enforces them: cheaply where the bytes allow, otherwise by decoding with strict twins of the records.
"""

from __future__ import annotations

import functools
import operator
import types
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

import msgspec
import numpy as np

from streams.errors import InvalidEvent

SCHEMA_VERSION: Final = 1
MAX_EVENT_BYTES: Final = 4096
# A message may carry a batch: a JSON array of events (see docs/events.md, "Batches").
MAX_BATCH_EVENTS: Final = 4096
MAX_BATCH_BYTES: Final = 1_048_576
# Client timestamps (ms since the Unix epoch) outside this window are rejected as invalid.
MIN_TS_MS: Final = 1_000_000_000_000  # 2001-09-09
MAX_TS_MS: Final = 4_102_444_800_000  # 2100-01-01

# Patterns end with (?![\s\S]) rather than $: in Python's re (and so in msgspec) $ also matches before a
# trailing newline, which would let "user\n" through. The lookahead means end-of-string in Python and in
# JSON Schema (ECMA-262) alike.
_NO_CONTROL = r"^[^\x00-\x1f\x7f]+(?![\s\S])"
_LABEL = r"^[A-Za-z0-9_.:-]+(?![\s\S])"
_LABEL_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")
# The records' text types state their pattern for the JSON Schema only: msgspec checks a pattern with a Python
# regex call per string, most of the cost of decoding an event. decode_event checks the patterns more cheaply
# where it can and decodes with strict twins of the records (``_strict_twin``) where it cannot.
_IdText = Annotated[str, msgspec.Meta(min_length=1, max_length=128, extra_json_schema={"pattern": _NO_CONTROL})]
_EventIdText = Annotated[str, msgspec.Meta(min_length=1, max_length=64, extra_json_schema={"pattern": _NO_CONTROL})]
_LabelText = Annotated[str, msgspec.Meta(min_length=1, max_length=32, extra_json_schema={"pattern": _LABEL})]
# The same types with the pattern checked on decoding too, for decoders of single values (serving.steer_api).
Id = Annotated[_IdText, msgspec.Meta(pattern=_NO_CONTROL)]
EventId = Annotated[_EventIdText, msgspec.Meta(pattern=_NO_CONTROL)]
Label = Annotated[_LabelText, msgspec.Meta(pattern=_LABEL)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=86_400_000)]
Timestamp = Annotated[int, msgspec.Meta(ge=MIN_TS_MS, le=MAX_TS_MS)]

# Reason codes for dead letters. Stable: dashboards and alerts use them.
MALFORMED_JSON: Final = "malformed_json"
OVERSIZED: Final = "oversized"
UNKNOWN_TYPE: Final = "unknown_type"
MISSING_FIELD: Final = "missing_field"
INVALID_FIELD: Final = "invalid_field"
UNKNOWN_TRACK: Final = "unknown_track"
FUTURE_TIMESTAMP: Final = "future_timestamp"
REASONS: Final = (
    MALFORMED_JSON,
    OVERSIZED,
    UNKNOWN_TYPE,
    MISSING_FIELD,
    INVALID_FIELD,
    UNKNOWN_TRACK,
    FUTURE_TIMESTAMP,
)


# Records made per event or per ranked track are ``gc=False`` (msgspec): they hold only scalars, strings and
# other such records, so they cannot form reference cycles, and the cyclic collector need not track them.
class Context(msgspec.Struct, frozen=True, gc=False):
    """Where the event happened: the player's device class and what started the track."""

    device: _LabelText | None = None
    source: _LabelText | None = None


class _EventBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", gc=False):
    # Unknown fields are ignored (tolerant reader): producers may add fields without breaking v1 workers.
    v: Literal[1] = 1
    event_id: _EventIdText
    user_id: _IdText
    track_id: _IdText
    ts_ms: Timestamp
    session_id: _IdText | None = None
    context: Context | None = None


class Play(_EventBase, tag="play"):
    """The listener played ``track_id`` for ``played_ms`` (to the end, or until something else started)."""

    played_ms: Millis
    position_ms: Millis | None = None
    duration_ms: Millis | None = None


class Skip(_EventBase, tag="skip"):
    """The listener skipped ``track_id`` after ``played_ms``; ``position_ms`` is where it was skipped."""

    played_ms: Millis
    position_ms: Millis | None = None
    duration_ms: Millis | None = None


class Like(_EventBase, tag="like"):
    """The listener liked ``track_id``."""


Event = Play | Skip | Like
EVENT_TYPES: Final = ("play", "skip", "like")

_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()


def decode_event(raw: bytes | bytearray | memoryview | str) -> Event:
    """Decode and validate one event; raise ``InvalidEvent`` with a reason code if it is not valid v1."""
    if raw is None:
        raise InvalidEvent(MALFORMED_JSON, "empty message value")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(OVERSIZED, f"event is {len(raw)} bytes, the limit is {MAX_EVENT_BYTES}")
    if _ids_are_clean(raw):
        try:
            event = _decoder.decode(raw)
        except Exception:  # noqa: BLE001 - rejected: the strict decoder below says why, in its own words
            pass
        else:
            context = event.context
            if context is None or _labels_are_valid(context):
                return event
    return _decode_strict(raw)


def _ids_are_clean(raw: bytes | bytearray | memoryview | str) -> bool:
    """Whether every string ``raw`` decodes to is free of control characters, without decoding it.

    JSON strings cannot hold a raw character below 0x20 (msgspec rejects it as malformed), so a decoded string
    can hold one only through a backslash escape; DEL (0x7f) may appear raw. Without either, the ids match
    ``_NO_CONTROL`` whenever they decode. Other buffer types are not searched: they take the strict path."""
    if isinstance(raw, (bytes, bytearray)):
        # 92 is the backslash, 127 DEL: an int is looked for with memchr, several times faster than b"\\".
        return 92 not in raw and 127 not in raw
    if isinstance(raw, str):
        return "\\" not in raw and "\x7f" not in raw
    return False


def _labels_are_valid(context: Context) -> bool:
    """Whether the context's labels match ``_LABEL`` (their lengths are checked on decoding)."""
    device, source = context.device, context.source
    return (device is None or _LABEL_CHARS.issuperset(device)) and (source is None or _LABEL_CHARS.issuperset(source))


def _decode_strict(raw: bytes | bytearray | memoryview | str) -> Event:
    try:
        return _as_record(_strict_decoder.decode(raw))
    except msgspec.ValidationError as exc:
        raise InvalidEvent(_classify(str(exc)), str(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(MALFORMED_JSON, str(exc)) from None
    except UnicodeDecodeError as exc:  # msgspec lets this through for encoded surrogates (ED A0 80 ..)
        raise InvalidEvent(MALFORMED_JSON, f"a string is not valid UTF-8: {exc}") from None


def _checked(tp: Any, twins: dict[type, type]) -> Any:
    """``tp`` with each text type's schema pattern also checked on decoding, and each record type its twin."""
    if tp in twins:
        return twins[tp]
    if get_origin(tp) is Annotated:
        extra = [m.extra_json_schema or {} for m in tp.__metadata__ if isinstance(m, msgspec.Meta)]
        patterns = [e["pattern"] for e in extra if "pattern" in e]
        return Annotated[tp, msgspec.Meta(pattern=patterns[-1])] if patterns else tp
    if get_origin(tp) in (Union, types.UnionType):
        return _union(_checked(arg, twins) for arg in get_args(tp))
    return tp


def _union(members: Any) -> Any:
    return functools.reduce(operator.or_, members)


def _strict_twin(record: type[msgspec.Struct], twins: dict[type, type]) -> type[msgspec.Struct]:
    """A struct with ``record``'s name, fields (in order, so errors name the same field first), defaults and
    tag, whose text fields check their patterns on decoding."""
    config = record.__struct_config__
    fields = [
        (f.name, _checked(f.type, twins), msgspec.field(default=f.default, default_factory=f.default_factory))
        for f in msgspec.structs.fields(record)
    ]
    return msgspec.defstruct(
        record.__name__,
        fields,
        module=__name__,
        kw_only=True,  # lets a required field follow one with a default, in the records' order
        frozen=config.frozen,
        forbid_unknown_fields=config.forbid_unknown_fields,
        tag_field=config.tag_field,
        tag=config.tag,
        gc=config.gc,
    )


_STRICT: Final = {Context: _strict_twin(Context, {})}
_STRICT.update({record: _strict_twin(record, _STRICT) for record in get_args(Event)})
_RECORD_OF: Final = {twin: record for record, twin in _STRICT.items()}
_strict_decoder = msgspec.json.Decoder(_union(_STRICT[record] for record in get_args(Event)))


def _as_record(value: Any) -> Any:
    """``value`` with each strict twin replaced by its record (the same field values)."""
    record = _RECORD_OF.get(type(value))
    if record is None:
        return value
    return record(**{name: _as_record(v) for name, v in msgspec.structs.asdict(value).items()})


_batch_decoder = msgspec.json.Decoder(list[msgspec.Raw])


def decode_message(raw: bytes | bytearray | memoryview | None) -> list[tuple[bytes, Event | InvalidEvent]]:
    """Decode one broker message: a single event (a JSON object) or a batch (a JSON array of events).

    Returns (payload, event or the error that rejects it) per event, in message order, so one bad event
    in a batch is dead-lettered alone. A message that is not JSON at all, an over-long batch or an empty one
    yields a single error for the whole message.
    """
    if raw is None or len(raw) == 0:
        return [(b"", InvalidEvent(MALFORMED_JSON, "empty message value"))]
    data = bytes(raw)
    if data.lstrip()[:1] != b"[":
        try:
            return [(data, decode_event(data))]
        except InvalidEvent as exc:
            return [(data, exc)]
    if len(data) > MAX_BATCH_BYTES:
        return [(data, InvalidEvent(OVERSIZED, f"batch is {len(data)} bytes, the limit is {MAX_BATCH_BYTES}"))]
    try:
        parts = _batch_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return [(data, InvalidEvent(MALFORMED_JSON, f"batch is not a JSON array of events: {exc}"))]
    if not parts or len(parts) > MAX_BATCH_EVENTS:
        why = "batch is empty" if not parts else f"batch has {len(parts)} events, the limit is {MAX_BATCH_EVENTS}"
        return [(data, InvalidEvent(OVERSIZED if parts else MALFORMED_JSON, why))]
    out: list[tuple[bytes, Event | InvalidEvent]] = []
    for part in parts:
        payload = bytes(part)
        try:
            out.append((payload, decode_event(payload)))
        except InvalidEvent as exc:
            out.append((payload, exc))
    return out


def encode_batch(events: list[Event]) -> bytes:
    """Encode events as one batch message (a JSON array)."""
    return _encoder.encode(events)


def _classify(message: str) -> str:
    if "missing required field" in message:
        return MISSING_FIELD
    if "`$.type`" in message:
        return UNKNOWN_TYPE
    return INVALID_FIELD


def encode_event(event: Event) -> bytes:
    """Encode an event as compact JSON (the wire format)."""
    return _encoder.encode(event)


def event_type(event: Event) -> str:
    """The ``type`` tag of an event: ``play``, ``skip`` or ``like``."""
    return type(event).__struct_config__.tag  # type: ignore[return-value]


# --- Output records --------------------------------------------------------------------------------

RECOMMENDATIONS_VERSION: Final = 1
DEAD_LETTER_VERSION: Final = 1


class Reason(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """Why a track was recommended (docs/explanations.md): a ``code`` (``serving.explain.REASON_CODES``),
    the cited track (the liked, played or skipped one; "" for none), its contribution to the score, and the
    sentence (``text``), which is rendered when the list is read and left out of what is stored."""

    code: str
    track_id: str = ""
    contribution: float = 0.0
    text: str = ""


class RecommendedTrack(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """One ranked track: its id, the model's score, its 1-based rank and, optionally, why (``reason``).

    ``reason`` is an optional v1 field: absent when the list carries no explanations; v1 readers that do
    not know it ignore it."""

    track_id: str
    score: float
    rank: int
    reason: Reason | None = None


class Recommendations(msgspec.Struct, frozen=True, kw_only=True):
    """Fresh recommendations for one user, as stored in Redis and published on the recommendations topic.

    ``event_id`` is the last event applied before ranking and ``event_ms`` its broker timestamp, so a
    consumer can tell which listener action these recommendations answer and how fresh they are.
    ``fallback`` is true when the list came from the cheap ranking (no model score), e.g. for an
    unknown user or when the model was over its budget.
    """

    v: int = RECOMMENDATIONS_VERSION
    user_id: str
    items: list[RecommendedTrack]
    model_version: str
    provider: str
    session_id: str = ""
    event_id: str = ""
    event_ms: int = 0
    generated_ms: int = 0
    fallback: bool = False


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """An input message the worker could not apply, with why. ``value`` is the original payload as text
    (undecodable bytes replaced), cut to ``DEAD_LETTER_VALUE_MAX`` characters; ``size`` is its full size."""

    v: int = DEAD_LETTER_VERSION
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str
    size: int
    failed_ms: int
    index: int = 0  # position of the event in a batch message (0 for a single-event message)


DEAD_LETTER_VALUE_MAX: Final = 2048

_recs_decoder = msgspec.json.Decoder(Recommendations)
_dead_decoder = msgspec.json.Decoder(DeadLetter)


def rounded(values: object, digits: int) -> list[float]:
    """``[round(float(v), digits) for v in values]`` for float32 values, as one array operation.

    Exact, not approximate: a float32 times 10**digits (digits <= 5) fits a double's mantissa, so ``rint``
    rounds the exact value half to even as ``round`` does, and the division returns the double nearest the
    decimal, as ``round`` does. About 3x cheaper than ``round`` per value (it formats and parses decimals)."""
    scale = 10.0**digits
    return (np.rint(np.asarray(values, np.float32).astype(np.float64) * scale) / scale).tolist()


def encode_record(record: Recommendations | DeadLetter) -> bytes:
    """Encode an output record as JSON."""
    return _encoder.encode(record)


def decode_recommendations(raw: bytes) -> Recommendations:
    """Decode a recommendations record (from Redis or the topic)."""
    return _recs_decoder.decode(raw)


def decode_dead_letter(raw: bytes) -> DeadLetter:
    """Decode a dead-letter record."""
    return _dead_decoder.decode(raw)
