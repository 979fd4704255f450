"""The event model: validate a decoded event and encode it as one compact JSON line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from logpipe_cli.errors import InvalidEventError
from logpipe_cli.keys import USER_ID_RE

SECONDS_PER_DAY = 86400
MAX_EVENT_CHARS = 256
#: a timestamp this large is milliseconds (or micro-) since the epoch, not seconds:
#: 1e11 s is the year 5138, 1e11 ms is 1973.
MILLISECONDS_THRESHOLD = 100_000_000_000

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()
_encode = _encoder.encode
_user_id_ok = USER_ID_RE.fullmatch


class Event(msgspec.Struct, frozen=True, gc=False):
    """A validated event: its routing fields and the line that will be stored.

    A frozen Struct rather than a frozen dataclass: one is made per event on the hot
    paths, and a Struct is made about ten times faster (0.04 vs 0.4 us).
    """

    user_id: str
    timestamp: int
    line: bytes


def day_of(timestamp: float) -> int:
    """Whole UTC days since the Unix epoch."""
    return int(timestamp) // SECONDS_PER_DAY


def decode_json(body: bytes) -> Any:
    """Decode a JSON document; a malformed one is an :class:`InvalidEventError`."""
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec lets bad UTF-8 through
        raise InvalidEventError(f"body is not valid JSON: {exc}") from None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def validate_event(obj: Any, *, now: float, max_future_s: int) -> Event:
    """Check one decoded event; raise :class:`InvalidEventError` naming the field.

    Fields beyond ``user_id``, ``event`` and ``timestamp`` are kept as they came.
    """
    # The common case in one test: exact types, every bound. Anything else, every
    # error included, goes on to the checks below, which name what is wrong.
    if type(obj) is dict:
        user_id, event, ts = obj.get("user_id"), obj.get("event"), obj.get("timestamp")
        if (
            type(user_id) is str
            and type(event) is str
            and type(ts) is int
            and 0 < len(event) <= MAX_EVENT_CHARS
            and 0 <= ts <= now + max_future_s
            and _user_id_ok(user_id)
        ):
            return Event(user_id, ts, _encode(obj))
    if not isinstance(obj, dict):
        raise InvalidEventError(f"event must be a JSON object, got {_type_name(obj)}")

    user_id = obj.get("user_id")
    if user_id is None:
        raise InvalidEventError("user_id: field is required", "user_id")
    if not isinstance(user_id, str):
        raise InvalidEventError(f"user_id: must be a string, got {_type_name(user_id)}", "user_id")
    if not USER_ID_RE.fullmatch(user_id):
        raise InvalidEventError(
            "user_id: must be 1-128 characters of letters, digits and . _ - @ +, "
            "not starting with '.'",
            "user_id",
        )

    event = obj.get("event")
    if event is None:
        raise InvalidEventError("event: field is required", "event")
    if not isinstance(event, str):
        raise InvalidEventError(f"event: must be a string, got {_type_name(event)}", "event")
    if not event or len(event) > MAX_EVENT_CHARS:
        raise InvalidEventError(
            f"event: must be 1-{MAX_EVENT_CHARS} characters, got {len(event)}", "event"
        )

    ts = obj.get("timestamp")
    if ts is None:
        raise InvalidEventError("timestamp: field is required", "timestamp")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise InvalidEventError(
            f"timestamp: must be an integer of Unix seconds, got {_type_name(ts)}", "timestamp"
        )
    if ts < 0:
        raise InvalidEventError(f"timestamp: must not be negative, got {ts}", "timestamp")
    if ts > now + max_future_s:
        if ts >= MILLISECONDS_THRESHOLD:
            raise InvalidEventError(
                f"timestamp: {ts} looks like milliseconds; Unix seconds are expected "
                f"(e.g. {ts // 1000})",
                "timestamp",
            )
        raise InvalidEventError(
            f"timestamp: {ts} is {ts - int(now)} s ahead of the server's clock "
            f"(at most {max_future_s} s allowed)",
            "timestamp",
        )
    return Event(user_id, ts, _encoder.encode(obj))


def validate_batch(
    docs: Sequence[Any], *, now: float, max_future_s: int, raw: bool
) -> tuple[list[Event], list[tuple[int, str]]]:
    """Check a batch: its valid events, and ``(index, reason)`` for each refused one.

    ``raw``: each doc is one undecoded JSON document (an NDJSON line), else a decoded
    object. The rules and messages are :func:`validate_event`'s; its common case is
    repeated inline here (keep the two in step), which makes a batch about 15 % cheaper
    than a call per event.
    """
    events: list[Event] = []
    errors: list[tuple[int, str]] = []
    limit = now + max_future_s
    decode = _decoder.decode
    for i, doc in enumerate(docs):
        obj = doc
        if raw:
            try:
                obj = decode(doc)
            except (msgspec.DecodeError, UnicodeDecodeError):
                obj = None  # decode_json below says why
        if type(obj) is dict:
            user_id, event, ts = obj.get("user_id"), obj.get("event"), obj.get("timestamp")
            if (
                type(user_id) is str
                and type(event) is str
                and type(ts) is int
                and 0 < len(event) <= MAX_EVENT_CHARS
                and 0 <= ts <= limit
                and _user_id_ok(user_id)
            ):
                events.append(Event(user_id, ts, _encode(obj)))
                continue
        try:
            events.append(
                validate_event(decode_json(doc) if raw else doc, now=now, max_future_s=max_future_s)
            )
        except InvalidEventError as exc:
            errors.append((i, exc.detail))
    return events, errors


def parse_event(body: bytes, *, now: float, max_future_s: int) -> Event:
    """Decode and validate a single-event request body."""
    return validate_event(decode_json(body), now=now, max_future_s=max_future_s)


def is_valid_line(value: bytes) -> bool:
    """Whether a buffered value can be written as one JSON Lines record."""
    if b"\n" in value:
        return False
    try:
        return isinstance(_decoder.decode(value), dict)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False


_raw_list = msgspec.json.Decoder(list[msgspec.Raw])


def split_valid(values: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split buffered values into (writable lines, values to quarantine).

    The common case, every value a one-line JSON object, is checked in one C call over
    the whole batch; only a batch with a bad value is checked value by value.
    """
    joined = b"".join(values)
    if values and b"\n" not in joined:
        try:
            raws = _raw_list.decode(b"[" + b",".join(values) + b"]")
            joined.decode("utf-8")  # msgspec.Raw does not check UTF-8
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass
        else:
            # each item must be exactly its own value: b'{"a":[1' and b'2]}' parse only
            # together. The items are disjoint slices of the array, in order, each one
            # followed by at least one byte (a comma or the closing bracket); if each is
            # as long as its value, none can start late, so each one is its value.
            # Comparing lengths costs a fifth of comparing bytes.
            if list(map(len, raws)) == list(map(len, values)) and all(
                v[:1] == b"{" for v in values
            ):
                return values, []
    good: list[bytes] = []
    bad: list[bytes] = []
    for v in values:
        (good if is_valid_line(v) else bad).append(v)
    return good, bad
