"""The event model: validate a decoded event and encode it as one compact JSON line."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from logpipe_cli.errors import InvalidEventError
from logpipe_cli.keys import USER_ID_RE

#: event ids (the ``event_id`` field, the ``Idempotency-Key`` header): 1-128 of these
EVENT_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
EVENT_ID_RULE = "must be 1-128 characters of letters, digits and . _ : -"

SECONDS_PER_DAY = 86400


@dataclass(frozen=True)
class EventRules:
    """Every rule an event must meet, stated once.

    The fast check and the detailed checks below read these values, and
    :func:`event_json_schema` derives the OpenAPI schema from them; a test holds the
    three to the same answers on a table of edge cases.
    """

    #: ``user_id``: 1-128 of ASCII letters, digits and . _ - @ +, not starting with "."
    #: (the same pattern keeps a key's directory inside ``logs_dir``; see keys.py)
    user_id_pattern: str = USER_ID_RE.pattern
    user_id_max_chars: int = 128
    event_max_chars: int = 256
    #: ``timestamp``: Unix seconds, at least this, at most ``server.max_future_seconds``
    #: ahead of the server's clock
    timestamp_min: int = 0
    #: containers nested in one event, the event object itself being level 1. 64 is far
    #: beyond any real event and far below where a recursive decoder or encoder runs out
    #: of stack (~1000 levels, less in a thread that is already deep).
    max_depth: int = 64
    #: ``event_id`` (optional): 1-128 of ASCII letters, digits and . _ : -; an event whose
    #: id its user already stored within ``redis.dedupe_seconds`` is not stored again.
    #: It counts as one of the extra fields.
    event_id_pattern: str = EVENT_ID_RE.pattern
    event_id_max_chars: int = 128
    #: fields beyond user_id, event and timestamp
    max_extra_fields: int = 64
    max_field_name_chars: int = 128
    #: one event as stored (one compact JSON line), extra fields included; keeps one
    #: event from filling Redis and the files (a body may carry up to max_body_bytes).
    max_event_bytes: int = 64 * 1024


RULES = EventRules()
MAX_EVENT_CHARS = RULES.event_max_chars
MAX_DEPTH = RULES.max_depth
MAX_EXTRA_FIELDS = RULES.max_extra_fields
MAX_FIELD_NAME_CHARS = RULES.max_field_name_chars
MAX_EVENT_BYTES = RULES.max_event_bytes
_REQUIRED = ("user_id", "event", "timestamp")
#: a timestamp this large is milliseconds (or micro-) since the epoch, not seconds:
#: 1e11 s is the year 5138, 1e11 ms is 1973.
MILLISECONDS_THRESHOLD = 100_000_000_000

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()
_encode = _encoder.encode
_user_id_ok = USER_ID_RE.fullmatch
_event_id_ok = EVENT_ID_RE.fullmatch


class Event(msgspec.Struct, frozen=True, gc=False):
    """A validated event: its routing fields and the line that will be stored.

    A frozen Struct rather than a frozen dataclass: one is made per event on the hot
    paths, and a Struct is made about ten times faster (0.04 vs 0.4 us).
    """

    user_id: str
    timestamp: int
    line: bytes
    #: the ``event_id`` field, if the event has one (the dedupe key)
    event_id: str | None = None


def day_of(timestamp: float) -> int:
    """Whole UTC days since the Unix epoch."""
    return int(timestamp) // SECONDS_PER_DAY


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema (OpenAPI 3.1) of one event, derived from :data:`RULES`.

    What JSON Schema cannot say (the nesting depth, the size of the stored line, the
    upper bound of ``timestamp``, which moves with the server's clock) is in the
    descriptions.
    """
    return {
        "type": "object",
        "required": list(_REQUIRED),
        "properties": {
            "user_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": RULES.user_id_max_chars,
                # JSON Schema patterns search; the rule is a full match
                "pattern": f"^(?:{RULES.user_id_pattern})$",
                "description": "ASCII letters, digits and . _ - @ +, not starting with '.'",
            },
            "event": {"type": "string", "minLength": 1, "maxLength": RULES.event_max_chars},
            "timestamp": {
                "type": "integer",
                "minimum": RULES.timestamp_min,
                "description": (
                    "Unix seconds, written as an integer (not 1.0: JSON Schema calls that "
                    "an integer too); at most server.max_future_seconds ahead of the server"
                ),
            },
            "event_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": RULES.event_id_max_chars,
                "pattern": f"^(?:{RULES.event_id_pattern})$",
                "description": (
                    "Optional. ASCII letters, digits and . _ : -. An event whose id its user "
                    "already stored within redis.dedupe_seconds is not stored again (the "
                    'answer says "duplicate"). Counts as an extra field.'
                ),
            },
        },
        "additionalProperties": True,
        "maxProperties": len(_REQUIRED) + RULES.max_extra_fields,
        "propertyNames": {"maxLength": RULES.max_field_name_chars},
        "description": (
            "An event; fields beyond these three are stored as sent: at most "
            f"{RULES.max_extra_fields} of them, names of at most {RULES.max_field_name_chars} "
            f"characters, nested at most {RULES.max_depth} levels (the event being level 1), "
            f"and at most {RULES.max_event_bytes} bytes for the whole event as compact JSON."
        ),
        "examples": [{"user_id": "123", "event": "clicked_button", "timestamp": 1712345678}],
    }


#: strings (skipped whole) and the punctuation that shapes a JSON document
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:]')


def _deep_field(doc: bytes, limit: int) -> str | None:
    """The top-level field under which ``doc`` nests deeper than ``limit``, if it does.

    For documents too deep to decode: a scan that stops where the limit is crossed,
    so its cost is bounded by the bytes before that point, never a recursion.
    """
    depth = 0
    field: str | None = None
    last = b""
    for m in _TOKEN.finditer(doc):
        tok = m.group()
        c = tok[0]
        if c == 0x22:  # '"'
            last = tok
        elif c == 0x3A:  # ':'
            if depth == 1:
                try:
                    field = str(_decoder.decode(last))
                except (msgspec.DecodeError, UnicodeDecodeError):
                    field = last[1:-1].decode("utf-8", "replace")
        elif c in b"[{":
            depth += 1
            if depth > limit:
                return field if field is None else field[:MAX_FIELD_NAME_CHARS]
        else:
            depth -= 1
    return None


def _too_deep(doc: bytes) -> InvalidEventError:
    field = _deep_field(doc, MAX_DEPTH)
    where = "body" if field is None else field
    return InvalidEventError(f"{where}: nests deeper than {MAX_DEPTH} levels", field)


def decode_json(body: bytes) -> Any:
    """Decode a JSON document; a malformed one is an :class:`InvalidEventError`.

    A document too deep for the decoder is refused the same way, naming the top-level
    field it is too deep under. Shallower ones decode; their depth is the caller's
    (:func:`validate_event`'s) to judge, so a batch array may wrap events that use
    every level they are allowed.
    """
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec lets bad UTF-8 through
        raise InvalidEventError(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _too_deep(body) from None


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


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether ``value`` (itself level 1) nests containers deeper than ``limit`` levels.

    Iterative: a value too deep for a recursive walk is exactly what it must judge.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        for child in v.values() if isinstance(v, dict) else v:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


_CONTAINERS = (dict, list)
#: ``obj.get("event_id", _NO_ID)``: tells an absent id from ``"event_id": null``
_NO_ID: Any = object()
_MAX_FIELDS = len(_REQUIRED) + MAX_EXTRA_FIELDS


def _extras_ok(obj: dict[str, Any], line: bytes) -> bool:
    """The fast check's view of the extra fields (whose errors :func:`_check_extras` names).

    ``line``: ``obj`` encoded. When it holds no more brackets than levels allowed
    (nearly always), the depth is known without a walk: counting costs a fifth of
    walking a small nested field.
    """
    if len(obj) > _MAX_FIELDS or max(map(len, obj)) > MAX_FIELD_NAME_CHARS:
        return False
    if line.count(b"[") + line.count(b"{") <= MAX_DEPTH:
        return True
    for value in obj.values():
        if type(value) in _CONTAINERS and _nests_deeper(value, MAX_DEPTH - 1):
            return False
    return True


def _check_extras(obj: dict[str, Any]) -> None:
    """Refuse extra fields beyond the limits of :data:`RULES`, naming the field."""
    extras = [name for name in obj if name not in _REQUIRED]
    if len(extras) > MAX_EXTRA_FIELDS:
        field = extras[MAX_EXTRA_FIELDS]
        raise InvalidEventError(
            f"{field}: the event has {len(extras)} extra fields; "
            f"at most {MAX_EXTRA_FIELDS} are allowed",
            field,
        )
    for name in obj:
        if not isinstance(name, str):
            raise InvalidEventError(f"field names must be strings, got {_type_name(name)}")
        if len(name) > MAX_FIELD_NAME_CHARS:
            field = name[:MAX_FIELD_NAME_CHARS]
            raise InvalidEventError(
                f"{field}...: field name has {len(name)} characters; "
                f"at most {MAX_FIELD_NAME_CHARS} are allowed",
                field,
            )
    for name, value in obj.items():
        if isinstance(value, _CONTAINERS) and _nests_deeper(value, MAX_DEPTH - 1):
            raise InvalidEventError(f"{name}: nests deeper than {MAX_DEPTH} levels", name)


def _check_size(obj: dict[str, Any], line: bytes) -> None:
    if len(line) > MAX_EVENT_BYTES:
        field = max(obj, key=lambda name: len(_encode(obj[name])))
        raise InvalidEventError(
            f"{field}: the event is {len(line)} bytes as JSON; at most {MAX_EVENT_BYTES} "
            f"are allowed (this field is the largest)",
            field,
        )


def validate_event(obj: Any, *, now: float, max_future_s: int) -> Event:
    """Check one decoded event; raise :class:`InvalidEventError` naming the field.

    Fields beyond ``user_id``, ``event`` and ``timestamp`` are kept as they came,
    within the limits of :data:`RULES`.
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
            try:
                line = _encode(obj)
            except RecursionError:  # too deep to encode: the checks below name the field
                line = b""
            if 0 < len(line) <= MAX_EVENT_BYTES:
                if len(obj) == 3:
                    return Event(user_id, ts, line)
                eid = obj.get("event_id", _NO_ID)
                if type(eid) is str and _event_id_ok(eid):
                    # the three and an id (a client library's event): no extra to check
                    if len(obj) == 4 or _extras_ok(obj, line):
                        return Event(user_id, ts, line, eid)
                elif eid is _NO_ID and _extras_ok(obj, line):
                    return Event(user_id, ts, line)
    return _validate_in_detail(obj, now=now, max_future_s=max_future_s)


def _validate_in_detail(obj: Any, *, now: float, max_future_s: int) -> Event:
    """Every rule of :data:`RULES`, in order, the first one broken named in the error."""
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
    eid = obj.get("event_id", _NO_ID)
    if eid is not _NO_ID:
        if not isinstance(eid, str):
            raise InvalidEventError(
                f"event_id: must be a string, got {_type_name(eid)}", "event_id"
            )
        if not EVENT_ID_RE.fullmatch(eid):
            raise InvalidEventError(f"event_id: {EVENT_ID_RULE}", "event_id")
    _check_extras(obj)
    line = _encode(obj)
    _check_size(obj, line)
    return Event(user_id, ts, line, None if eid is _NO_ID else eid)


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
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
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
                try:
                    line = _encode(obj)
                except RecursionError:
                    line = b""
                if 0 < len(line) <= MAX_EVENT_BYTES and (len(obj) == 3 or _extras_ok(obj, line)):
                    eid = obj.get("event_id", _NO_ID) if len(obj) > 3 else _NO_ID
                    if eid is _NO_ID:
                        events.append(Event(user_id, ts, line))
                        continue
                    if type(eid) is str and _event_id_ok(eid):
                        events.append(Event(user_id, ts, line, eid))
                        continue
        try:
            events.append(
                validate_event(decode_json(doc) if raw else doc, now=now, max_future_s=max_future_s)
            )
        except InvalidEventError as exc:
            errors.append((i, exc.detail))
    return events, errors


class _Plain(msgspec.Struct, omit_defaults=True, gc=False):
    """An event of the three fields and perhaps an ``event_id``, as msgspec decodes it
    typed: about a fifth of the cost of decoding it to a dict (see :func:`canonical_batch`,
    which alone may trust one, and only after checking its encoding against the body)."""

    user_id: str
    event: str
    timestamp: int
    event_id: str | None = None


_plain_lines = msgspec.json.Decoder(_Plain).decode_lines
_plain_array = msgspec.json.Decoder(list[_Plain]).decode
_encode_lines = _encoder.encode_lines
#: user ids (and event ids), each followed by a newline, all of them valid: one regex
#: over a whole batch's ids. Neither pattern matches a newline, but an id holding one
#: ("a\nb") would read as two valid ids: :func:`_ids_ok` also counts the newlines.
_USER_IDS_OK = re.compile(rf"(?:(?:{USER_ID_RE.pattern})\n)*").fullmatch
_EVENT_IDS_OK = re.compile(rf"(?:(?:{EVENT_ID_RE.pattern})\n)*").fullmatch


def _ids_ok(fullmatch: Callable[[str], object], ids: list[str]) -> bool:
    """Every one of ``ids`` matches the pattern behind ``fullmatch``: one newline per
    id, no more (an id holding a newline would otherwise pass as two), and the regex
    over them all joined."""
    joined = "\n".join(ids) + "\n"
    return joined.count("\n") == len(ids) and fullmatch(joined) is not None


def canonical_batch(
    body: bytes, *, now: float, max_future_s: int, ndjson: bool = True
) -> list[Event] | None:
    """The events of a batch ``body`` that is exactly the compact encoding of valid
    events of the three fields (and perhaps an ``event_id``, after them): NDJSON, one
    per line, each line but perhaps the last ending in a newline (what the client
    library sends, and most producers that encode with a JSON library's compact
    settings), or with ``ndjson=False`` a JSON array of them with no spaces. ``None``
    for any other body, valid or not (blank lines, spaces, extra fields, another key
    order), which :func:`validate_batch` then judges event by event.

    Why the events it returns are exactly :func:`validate_batch`'s: the body equals the
    typed values encoded, so every event is one object of just these fields, in this
    order, with these exact JSON types (msgspec refuses ``true`` or ``1.0`` as an int;
    a duplicate or unknown field would encode differently), and valid UTF-8. Decoding
    an event to a dict and encoding it again, as the event-by-event check does, gives
    the same bytes, which are its line here. What remains are the rules on values,
    checked over the whole batch at once: the id patterns (which also bound their
    lengths), the event's length and the timestamp's range. The line's size needs no
    check: these fields make at most 128 + 6 * 256 + 128 bytes and change, far below
    ``MAX_EVENT_BYTES``.
    """
    try:
        plain = _plain_lines(body) if ndjson else _plain_array(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if not plain:
        return None
    encoded = _encode_lines(plain)  # (a compact JSON value holds no newline)
    lines = encoded.split(b"\n")
    lines.pop()  # after the last newline
    if ndjson:
        # the same, but perhaps for the last line's newline
        if encoded != body and not (len(encoded) == len(body) + 1 and encoded.startswith(body)):
            return None
    elif b"[" + b",".join(lines) + b"]" != body:
        return None
    lengths = [len(p.event) for p in plain]
    stamps = [p.timestamp for p in plain]
    if (
        min(lengths) < 1
        or max(lengths) > MAX_EVENT_CHARS
        or min(stamps) < RULES.timestamp_min
        or max(stamps) > now + max_future_s
        or not _ids_ok(_USER_IDS_OK, [p.user_id for p in plain])
    ):
        return None
    ids = [p.event_id for p in plain if p.event_id is not None]
    if ids and not _ids_ok(_EVENT_IDS_OK, ids):
        return None
    return [
        Event(p.user_id, p.timestamp, line, p.event_id)
        for p, line in zip(plain, lines, strict=True)
    ]


def parse_event(body: bytes, *, now: float, max_future_s: int) -> Event:
    """Decode and validate a single-event request body."""
    return validate_event(decode_json(body), now=now, max_future_s=max_future_s)


def is_valid_line(value: bytes) -> bool:
    """Whether a buffered value can be written as one JSON Lines record."""
    if b"\n" in value:
        return False
    try:
        return isinstance(_decoder.decode(value), dict)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        # too deep to decode here is too deep for every reader of the file: quarantined
        return False


_raw_lines = msgspec.json.Decoder(msgspec.Raw)
_first_byte = operator.itemgetter(0)
_OBJECTS_ONLY = {ord("{")}


def split_valid(values: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split buffered values into (writable lines, values to quarantine)."""
    good, bad, _ = split_lines(values)
    return good, bad


def split_lines(values: list[bytes]) -> tuple[list[bytes], list[bytes], bytes]:
    """:func:`split_valid`, and the writable lines as the file takes them: each one
    followed by a newline (as :func:`logpipe_cli.sink.encode_lines` makes them).

    The common case, every value a one-line JSON object, is checked over the whole
    batch in a few C calls; only a batch with a bad value is checked value by value.
    The drainer's main thread checks every batch: 84 us for 1,000 values of ~60 bytes,
    where the check before (a comma-joined copy, two lists of lengths, a Python loop
    over first bytes) and the lines joined after it took 120 us.
    """
    data = b"\n".join([*values, b""])
    if values and b"\n" not in b"".join(values):
        try:
            raws = _raw_lines.decode_lines(data)
            if not data.isascii():
                data.decode("utf-8")  # msgspec.Raw does not check UTF-8
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            pass  # judged value by value below
        else:
            # Each item must be exactly its own value: b'{"a":[1' and b'2]}' parse only
            # together (one item over two lines), and b'{}{}' is two items on one line.
            # No value holds a newline, so ``data`` has one per value; the items joined
            # the same way equal ``data`` with as many items only if none holds a
            # newline either, and then splitting both at the newlines gives each item
            # its value. A JSON value that starts with "{" is an object.
            if (
                len(raws) == len(values)
                and b"\n".join([*raws, b""]) == data
                and set(map(_first_byte, values)) == _OBJECTS_ONLY
            ):
                return values, [], data
    good: list[bytes] = []
    bad: list[bytes] = []
    for v in values:
        (good if is_valid_line(v) else bad).append(v)
    return good, bad, (b"\n".join([*good, b""]) if bad else data)


def with_event_id(event: Event, key: str) -> Event:
    """``event`` with the id an ``Idempotency-Key`` header gives it.

    The header's id is added to the stored line as ``event_id`` (so the files say which
    id an event was stored under); an event that already has the same id is unchanged,
    one with another id is refused, as is a key outside the id rule.
    """
    if not EVENT_ID_RE.fullmatch(key):
        raise InvalidEventError(f"Idempotency-Key: {EVENT_ID_RULE}", "Idempotency-Key")
    if event.event_id is not None:
        if event.event_id != key:
            raise InvalidEventError(
                "event_id: differs from the Idempotency-Key header; send one or the other, "
                "or the same id in both",
                "event_id",
            )
        return event
    line = event.line[:-1] + b',"event_id":' + _encode(key) + b"}"
    if len(line) > MAX_EVENT_BYTES:
        raise InvalidEventError(
            f"event_id: the event with its Idempotency-Key is {len(line)} bytes as JSON; "
            f"at most {MAX_EVENT_BYTES} are allowed",
            "event_id",
        )
    return Event(event.user_id, event.timestamp, line, key)
