"""The NIST Randomness Beacon 2.0 pulse: model, strict parsing, and the signed bytes.

This is the one place the pulse format is written down in code. The beacon
imports it to build pulses; the verifier uses it to check them.

- ``parse_pulse`` turns JSON bytes into a frozen, validated ``Pulse`` that keeps
  the original bytes; malformed input raises ``PulseFormatError`` naming the field.
- ``signing_input`` returns the serialization S: the bytes that are signed and
  that prefix the outputValue input. Nothing else computes it.
- ``output_value`` computes outputValue from S and the raw signature.
- ``emit_pulse`` writes JSON in NIST's key order and hex conventions.
- ``certificate_id`` / ``load_certificate`` identify a certificate by the
  SHA-512 of its DER, parsing PEM leniently.

This module performs no I/O and no cryptographic verification (see ``checks``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, NamedTuple, NewType, TypeVar

from cryptography import x509

from beacon_verifier.errors import PulseFormatError

OutputValue = NewType("OutputValue", bytes)
CertificateId = NewType("CertificateId", bytes)
Signature = NewType("Signature", bytes)

HASH_LEN = 64  # SHA-512
ZERO_HASH = bytes(HASH_LEN)
CIPHER_SUITE_RSA_SHA512 = 0
LINK_TYPES = ("previous", "hour", "day", "month", "year")

# statusCode bits as deployed by NIST.
STATUS_CHAIN_START_OR_NO_PRECOMMIT = 1
STATUS_GAP = 2
STATUS_CERTIFICATE_CHANGED = 4
STATUS_CHAIN_END = 8
STATUS_ALL_BITS = 15

MAX_U32 = 2**32 - 1
MAX_U64 = 2**64 - 1
MAX_PULSE_BYTES = 64 * 1024
MAX_SIGNATURE_BYTES = 2048  # RSA-16384; anything larger is not a real pulse
RSA_4096_SIGNATURE_BYTES = 512  # the usual size, which the fast path finds quickest
MAX_STRING_BYTES = 2048

_TIMESTAMP_RE = re.compile(r"\A(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})Z\Z")
_HEX_RE = re.compile(r"\A[0-9A-Fa-f]*\Z")


# --- validation helpers -------------------------------------------------------


def _require_uint(name: str, value: object, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PulseFormatError(name, f"must be an integer, got {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise PulseFormatError(name, f"{value} is outside 0..{maximum}")


def _require_hash(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise PulseFormatError(name, "must be bytes")
    if len(value) != HASH_LEN:
        raise PulseFormatError(name, f"must be {HASH_LEN} bytes, got {len(value)}")


def _require_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise PulseFormatError(name, f"must be a string, got {type(value).__name__}")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PulseFormatError(name, "is not valid UTF-8 text") from exc
    if len(encoded) > MAX_STRING_BYTES:
        raise PulseFormatError(name, f"longer than {MAX_STRING_BYTES} bytes")


class OutputVariant(Enum):
    """How a beacon computed outputValue from S and the signature."""

    NIST = "nist"  # SHA-512(S || signature)
    INMETRO = "inmetro"  # SHA-512(S || u32(len(signature)) || signature)


@dataclass(frozen=True, slots=True, kw_only=True)
class External:
    """The ``external`` object: an outside value mixed into the pulse (zeros when unused)."""

    source_id: bytes
    status_code: int
    value: bytes

    def __post_init__(self) -> None:
        _require_hash("external.sourceId", self.source_id)
        _require_uint("external.statusCode", self.status_code, MAX_U32)
        _require_hash("external.value", self.value)


ZERO_EXTERNAL = External(source_id=ZERO_HASH, status_code=0, value=ZERO_HASH)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListValue:
    """One skip-list link: its type, the linked pulse's outputValue, and its (unsigned) uri."""

    uri: str | None
    type: str
    value: bytes

    def __post_init__(self) -> None:
        if self.type not in LINK_TYPES:
            raise PulseFormatError("listValues.type", f"unknown link type {self.type!r}")
        _require_hash(f"listValues[{self.type}].value", self.value)
        if self.uri is not None:
            _require_str(f"listValues[{self.type}].uri", self.uri)


@dataclass(frozen=True, slots=True, kw_only=True)
class Pulse:
    """A well-formed pulse. Constructing one validates every field.

    ``raw`` holds the bytes the pulse was parsed from (None for a pulse built in
    memory, or read from a day archive line by ``parse_escaped_pulse``); hash and
    store those, never a re-serialization.
    """

    uri: str | None
    version: str
    cipher_suite: int
    period: int
    certificate_id: bytes
    chain_index: int
    pulse_index: int
    time_stamp: str
    local_random_value: bytes
    external: External
    list_values: tuple[ListValue, ...]
    precommitment_value: bytes
    status_code: int
    signature_value: bytes
    output_value: bytes
    raw: bytes | None = field(default=None, compare=False, repr=False)
    time_ms: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.uri is not None:
            _require_str("uri", self.uri)
        _require_str("version", self.version)
        _require_uint("cipherSuite", self.cipher_suite, MAX_U32)
        _require_uint("period", self.period, MAX_U32)
        if self.period == 0:
            raise PulseFormatError("period", "must be positive")
        _require_hash("certificateId", self.certificate_id)
        _require_uint("chainIndex", self.chain_index, MAX_U64)
        _require_uint("pulseIndex", self.pulse_index, MAX_U64)
        if self.chain_index < 1:
            raise PulseFormatError("chainIndex", "must be at least 1")
        if self.pulse_index < 1:
            raise PulseFormatError("pulseIndex", "must be at least 1")
        time_ms = parse_timestamp(self.time_stamp)
        if time_ms % self.period != 0:
            raise PulseFormatError(
                "timeStamp", f"{self.time_stamp} is not on a {self.period} ms period boundary"
            )
        object.__setattr__(self, "time_ms", time_ms)
        _require_hash("localRandomValue", self.local_random_value)
        if not isinstance(self.external, External):
            raise PulseFormatError("external", "must be an External")
        types = tuple(lv.type for lv in self.list_values)
        if types != LINK_TYPES:
            raise PulseFormatError(
                "listValues", f"types must be {', '.join(LINK_TYPES)} in order, got {types}"
            )
        _require_hash("precommitmentValue", self.precommitment_value)
        _require_uint("statusCode", self.status_code, MAX_U32)
        if not isinstance(self.signature_value, bytes) or not self.signature_value:
            raise PulseFormatError("signatureValue", "must be non-empty bytes")
        if len(self.signature_value) > MAX_SIGNATURE_BYTES:
            raise PulseFormatError("signatureValue", "longer than any supported key")
        _require_hash("outputValue", self.output_value)

    @property
    def time(self) -> datetime:
        """The timeStamp as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time_ms / 1000, tz=UTC)

    def link(self, link_type: str) -> bytes:
        """The value of the ``previous``/``hour``/``day``/``month``/``year`` link."""
        return self.list_values[LINK_TYPES.index(link_type)].value

    @property
    def previous(self) -> bytes:
        return self.list_values[0].value


def parse_timestamp(text: object) -> int:
    """Parse a NIST timeStamp (``2018-08-30T17:44:00.000Z``) into Unix milliseconds.

    Raises ``PulseFormatError`` for anything else, including valid ISO 8601 in
    another shape: the exact string is signed, so only one shape is accepted.
    """
    if not isinstance(text, str):
        raise PulseFormatError("timeStamp", f"must be a string, got {type(text).__name__}")
    m = _TIMESTAMP_RE.match(text)
    if m is None:
        raise PulseFormatError("timeStamp", f"{text[:40]!r} is not YYYY-MM-DDTHH:MM:SS.mmmZ")
    time_ms = _stamp_ms(text)
    if time_ms is None:
        raise PulseFormatError("timeStamp", f"{text!r} is not a valid date and time")
    return time_ms


def _stamp_ms(text: str) -> int | None:
    """Unix ms of a timeStamp already in the shape ``YYYY-MM-DDTHH:MM:SS.mmmZ``, digits
    where digits go; None when there is no such date and time."""
    day_ms = _day_ms(text[:10])
    hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
    if day_ms is None or hour > 23 or minute > 59 or second > 59:
        return None
    return day_ms + ((hour * 60 + minute) * 60 + second) * 1000 + int(text[20:23])


_DAY_CACHE: dict[str, int | None] = {}
_DAY_CACHE_SIZE = 4096
_EPOCH = date(1970, 1, 1)


def _day_ms(text: str) -> int | None:
    """Unix ms of 00:00 UTC on the day ``text`` (``YYYY-MM-DD``, digits); None if there is none.

    Cached: consecutive pulses share their day, and parsing it is most of a
    timeStamp's cost.
    """
    found = _DAY_CACHE.get(text, -1)
    if found != -1:
        return found
    try:
        day: int | None = (date(int(text[:4]), int(text[5:7]), int(text[8:10])) - _EPOCH).days
    except ValueError:
        day = None
    if len(_DAY_CACHE) >= _DAY_CACHE_SIZE:
        _DAY_CACHE.clear()
    result = None if day is None else day * 86_400_000
    _DAY_CACHE[text] = result
    return result


def format_timestamp(time_ms: int) -> str:
    """Format Unix milliseconds as a NIST timeStamp string."""
    seconds, milli = divmod(time_ms, 1000)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{milli:03d}Z"


# --- parsing ------------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise PulseFormatError(key, "appears twice")
            seen.add(key)
    return out


def _reject_constant(name: str) -> None:
    raise PulseFormatError("json", f"{name} is not allowed")


# json.loads with these arguments builds a decoder per call; one is enough.
_STRICT_JSON = json.JSONDecoder(
    object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
)


def canonical_json(obj: Any) -> bytes:
    """The canonical bytes of a JSON value: sorted keys, no whitespace, UTF-8, no NaN.

    Entropy records, draw manifests and PQ documents are all written this way.
    """
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def load_json(data: bytes, *, what: str = "json", max_bytes: int = MAX_PULSE_BYTES) -> Any:
    """Decode strict JSON bytes: UTF-8, no duplicate keys, no NaN, bounded size.

    Raises ``PulseFormatError`` naming ``what`` for anything that is not such JSON.
    """
    if type(data) is not bytes:
        if not isinstance(data, bytearray | memoryview):
            raise PulseFormatError(what, "input must be bytes")
        data = bytes(data)
    if len(data) > max_bytes:
        raise PulseFormatError(what, f"larger than {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PulseFormatError(what, f"not UTF-8 (byte {exc.start})") from exc
    try:
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        # raw_decode for a value that is the whole text, as written; else decode(),
        # which allows whitespace around it or says what is wrong.
        try:
            value, end = _STRICT_JSON.raw_decode(text)
        except json.JSONDecodeError:
            end = -1
        return value if end == len(text) else _STRICT_JSON.decode(text)
    except PulseFormatError:
        raise
    except json.JSONDecodeError as exc:
        raise PulseFormatError(what, f"not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    except (ValueError, RecursionError) as exc:
        # int() digit limits and pathological nesting
        raise PulseFormatError(what, f"not acceptable JSON: {type(exc).__name__}") from exc


def _field(obj: Mapping[str, Any], name: str, path: str) -> Any:
    if name not in obj:
        raise PulseFormatError(path, "missing")
    return obj[name]


def _hex(value: object, path: str, *, length: int | None = HASH_LEN) -> bytes:
    if not isinstance(value, str):
        raise PulseFormatError(path, f"must be a hex string, got {type(value).__name__}")
    if len(value) % 2 or not _HEX_RE.match(value):
        raise PulseFormatError(path, "is not an even-length hex string")
    raw = bytes.fromhex(value)
    if length is not None and len(raw) != length:
        raise PulseFormatError(path, f"must be {length} bytes, got {len(raw)}")
    return raw


def _object(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise PulseFormatError(path, f"must be an object, got {type(value).__name__}")
    return value


def _int(value: object, path: str, maximum: int) -> int:
    _require_uint(path, value, maximum)
    assert isinstance(value, int)
    return value


def _opt_str(value: object, path: str) -> str | None:
    if value is None:
        return None
    _require_str(path, value)
    assert isinstance(value, str)
    return value


_PULSE_FIELDS = frozenset(
    {
        "uri",
        "version",
        "cipherSuite",
        "period",
        "certificateId",
        "chainIndex",
        "pulseIndex",
        "timeStamp",
        "localRandomValue",
        "external",
        "listValues",
        "precommitmentValue",
        "statusCode",
        "signatureValue",
        "outputValue",
    }
)


def parse_pulse(data: bytes) -> Pulse:
    """Parse pulse JSON bytes (``{"pulse": {...}}`` or the bare object) into a ``Pulse``.

    The returned pulse keeps ``data`` as ``raw``. Raises ``PulseFormatError``
    naming the field for any malformed input; never a bare KeyError/TypeError.
    """
    pulse = _fast_parse(data)
    if pulse is not None:
        return pulse
    doc = load_json(data, what="pulse")
    obj = _object(doc, "pulse")
    if set(obj) == {"pulse"}:
        obj = _object(obj["pulse"], "pulse")
    return _checked_pulse(obj, bytes(data))


# The fast path. Verifying a chain parses every pulse, and the strict path
# (``load_json`` with its duplicate-key hook, then ``_checked_pulse`` field by
# field) costs about twice as much. Beacons, NIST's and this one, write every
# pulse in one layout: ``emit_pulse``'s, JSON indented by two spaces in NIST's
# key order. ``_fast_parse`` matches the text against that layout with one
# regular expression whose captured values are plain: strings of printable
# ASCII without quote or backslash, integers without sign or leading zero, and
# hex values that must then decode as hex (``binascii.unhexlify`` refuses
# anything else). So the JSON decoder would read exactly these values, with no
# duplicate key. It then applies each rule of ``_checked_pulse`` and of the
# dataclasses' ``__post_init__`` and builds the values without validating them a
# second time. Whatever does not match, or breaks a rule, it leaves to the
# strict path, which gives the same result or names what is wrong.
# tests/unit/test_fuzz.py holds the two paths to each other.


class _Layout(NamedTuple):
    """``emit_pulse``'s layout as regular expressions: the whole pulse, its values
    captured except two blocks captured whole, ``external`` and the hour, day,
    month and year links, which consecutive pulses mostly repeat; and each of
    those blocks with its values captured, to read it when it changes."""

    pulse: re.Pattern[bytes]
    external: re.Pattern[bytes]
    skip_links: re.Pattern[bytes]


def _layout(escaped: bool) -> _Layout:
    """``emit_pulse``'s layout; with ``escaped``, that text as a JSON string holds it
    (``"`` and newlines escaped, as in a day archive line), with no quote around it."""

    def lit(text: bytes) -> bytes:
        if escaped:
            text = text.replace(b'"', b'\\"').replace(b"\n", b"\\n")
        return re.escape(text)

    def group(pattern: bytes, capture: bool) -> bytes:
        return (b"(" if capture else b"(?:") + pattern + b")"

    quote = lit(b'"')
    printable = rb"[\x20\x21\x23-\x5b\x5d-\x7e]{0,%d}" % MAX_STRING_BYTES
    text = quote + group(printable, True) + quote
    # Hex is checked by unhexlify, which refuses anything but hex digits; the pattern
    # only finds it. A hash is any 128 bytes before a quote: a fixed run of "any
    # byte" costs the matcher nothing per byte. A signature is of variable length,
    # but RSA-4096's (NIST's and this beacon's) is 1024 digits: first any 1024 bytes
    # (then the closing quote), else a run up to the closing quote, a class of one
    # character, several times faster than a class of hex digits but 6 times slower
    # than the fixed run.
    run = rb"[^\\]" if escaped else rb'[^"]'
    rsa4096 = rb"(?s:.){%d}|" % (2 * RSA_4096_SIGNATURE_BYTES)
    signature = quote + group(rsa4096 + run + b"{2,%d}" % (2 * MAX_SIGNATURE_BYTES), True) + quote
    uint = rb"0|[1-9][0-9]{0,19}"  # no sign, no leading zero; its bound is checked after
    number = group(uint, True)
    stamp = quote + rb"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z)" + quote

    def hash_hex(capture: bool = True) -> bytes:
        return quote + group(rb"(?s:.){%d}" % (2 * HASH_LEN), capture) + quote

    def uri(capture: bool) -> bytes:  # the group is None for null
        return b"(?:null|" + quote + group(printable, capture) + quote + b")"

    def lines(indent: int, *items: tuple[str | None, bytes]) -> list[bytes]:
        """The items (``"name": value``, or a bare value), each on its line."""
        pad = b"\n" + b" " * indent
        return [lit(pad + (b'"%s": ' % name.encode() if name else b"")) + v for name, v in items]

    def block(indent: int, open_: bytes, close: bytes, *items: tuple[str | None, bytes]) -> bytes:
        """``open_``, the items one per line, ``close``."""
        end = lit(b"\n" + b" " * indent + close)
        return lit(open_) + b",".join(lines(indent + 2, *items)) + end

    def link(link_type: str, capture: bool = True) -> bytes:
        kind = lit(b'"%s"' % link_type.encode())
        items = (("uri", uri(capture)), ("type", kind), ("value", hash_hex(capture)))
        return block(6, b"{", b"}", *items)

    def external(capture: bool) -> bytes:
        items = (
            ("sourceId", hash_hex(capture)),
            ("statusCode", group(uint, capture)),
            ("value", hash_hex(capture)),
        )
        return block(4, b"{", b"}", *items)

    def skip_links(capture: bool) -> bytes:
        return b",".join(lines(6, *((None, link(t, capture)) for t in LINK_TYPES[1:])))

    links = [*lines(6, (None, link(LINK_TYPES[0]))), group(skip_links(False), True)]
    pulse = block(
        2,
        b"{",
        b"}",
        ("uri", uri(True)),
        ("version", text),
        ("cipherSuite", number),
        ("period", number),
        ("certificateId", hash_hex()),
        ("chainIndex", number),
        ("pulseIndex", number),
        ("timeStamp", stamp),
        ("localRandomValue", hash_hex()),
        ("external", group(external(False), True)),
        ("listValues", lit(b"[") + b",".join(links) + lit(b"\n    ]")),
        ("precommitmentValue", hash_hex()),
        ("statusCode", number),
        ("signatureValue", signature),
        ("outputValue", hash_hex()),
    )
    document = block(0, b"{", b"}", ("pulse", pulse))
    if escaped:  # emit_pulse's final newline, if any, and nothing else around it
        whole = document + rb"(?:\\n)?"
    else:
        whole = rb"[ \t\n\r]*" + document + rb"[ \t\n\r]*"
    return _Layout(re.compile(whole), re.compile(external(True)), re.compile(skip_links(True)))


_LAYOUT = _layout(escaped=False)
_ESCAPED_LAYOUT = _layout(escaped=True)
_new = object.__new__
_unhexlify = binascii.unhexlify


def _setters(cls: type, names: str) -> tuple[Any, ...]:
    """The slot setters of ``cls``'s fields: the quickest way to fill a new instance."""
    return tuple(cls.__dict__[name].__set__ for name in names.split())


(
    _SET_URI,
    _SET_VERSION,
    _SET_CIPHER_SUITE,
    _SET_PERIOD,
    _SET_CERTIFICATE_ID,
    _SET_CHAIN_INDEX,
    _SET_PULSE_INDEX,
    _SET_TIME_STAMP,
    _SET_LOCAL_RANDOM_VALUE,
    _SET_EXTERNAL,
    _SET_LIST_VALUES,
    _SET_PRECOMMITMENT_VALUE,
    _SET_STATUS_CODE,
    _SET_SIGNATURE_VALUE,
    _SET_OUTPUT_VALUE,
    _SET_RAW,
    _SET_TIME_MS,
) = _setters(
    Pulse,
    "uri version cipher_suite period certificate_id chain_index pulse_index time_stamp "
    "local_random_value external list_values precommitment_value status_code "
    "signature_value output_value raw time_ms",
)
_SET_SOURCE_ID, _SET_EXTERNAL_STATUS, _SET_EXTERNAL_VALUE = _setters(
    External, "source_id status_code value"
)
_SET_LINK_URI, _SET_LINK_TYPE, _SET_LINK_VALUE = _setters(ListValue, "uri type value")
# Consecutive pulses repeat external and the hour, day, month and year links: the
# last of each block is kept, immutable, with its text, to be reused.
_LAST_EXTERNAL: dict[bytes, External] = {}
_LAST_SKIP_LINKS: dict[bytes, tuple[ListValue, ...]] = {}
_V = TypeVar("_V")


def _uri(captured: bytes | None) -> str | None:
    return None if captured is None else captured.decode()


def _link(i: int, uri: bytes | None, value: bytes) -> ListValue:
    link = _new(ListValue)
    _SET_LINK_URI(link, _uri(uri))
    _SET_LINK_TYPE(link, LINK_TYPES[i])
    _SET_LINK_VALUE(link, _unhexlify(value))
    return link


def _external(text: bytes, layout: _Layout) -> External | None:
    """The External written as ``text``; None when it is not in ``layout``.
    Raises ValueError for hex that is not."""
    found = _LAST_EXTERNAL.get(text)
    if found is None:
        m = layout.external.fullmatch(text)
        if m is None:
            return None
        source_hex, status, value_hex = m.groups()
        if int(status) > MAX_U32:
            return None
        found = _new(External)
        _SET_SOURCE_ID(found, _unhexlify(source_hex))
        _SET_EXTERNAL_STATUS(found, int(status))
        _SET_EXTERNAL_VALUE(found, _unhexlify(value_hex))
        _remember(_LAST_EXTERNAL, text, found)
    return found


def _skip_links(text: bytes, layout: _Layout) -> tuple[ListValue, ...] | None:
    """The hour, day, month and year links written as ``text``; None when they are
    not in ``layout``. Raises ValueError for hex that is not."""
    found = _LAST_SKIP_LINKS.get(text)
    if found is None:
        m = layout.skip_links.fullmatch(text)
        if m is None:
            return None
        g = m.groups()
        found = tuple(_link(i, g[2 * i - 2], g[2 * i - 1]) for i in range(1, len(LINK_TYPES)))
        _remember(_LAST_SKIP_LINKS, text, found)
    return found


def _remember(cache: dict[bytes, _V], text: bytes, value: _V) -> None:
    if len(cache) >= 2:  # the last one, escaped and not
        cache.clear()
    cache[text] = value


def _fast_parse(data: bytes) -> Pulse | None:
    """The pulse the strict path would parse from ``data``, or None to let it decide."""
    if type(data) is not bytes or len(data) > MAX_PULSE_BYTES:
        return None
    m = _LAYOUT.pulse.fullmatch(data)
    return None if m is None else _matched_pulse(m, data, _LAYOUT)


def parse_escaped_pulse(text: bytes, start: int) -> tuple[Pulse, int] | None:
    """The pulse whose text, escaped as a JSON string holds it (as a day archive line
    does), begins at ``start`` of ``text``, and where that string's content ends:
    when it is in ``emit_pulse``'s layout with nothing to refuse, else None (then
    unescape it and use ``parse_pulse``, which gives the same pulse or says why not).

    The pulse's ``raw`` is None: its exact bytes are not made here, as a chain
    replay never needs them (``archive.ArchiveEntry.pulse`` makes them if asked).
    """
    m = _ESCAPED_LAYOUT.pulse.match(text, start)
    if m is None:
        return None
    # Unescaped, each escape (a backslash and a character) is one byte: they are
    # counted only when the escaped text is over the cap (never from a beacon).
    end = m.end()
    if (
        end - start > MAX_PULSE_BYTES
        and end - start - text.count(b"\\", start, end) > MAX_PULSE_BYTES
    ):
        return None
    pulse = _matched_pulse(m, None, _ESCAPED_LAYOUT)
    return None if pulse is None else (pulse, end)


def _matched_pulse(m: re.Match[bytes], raw: bytes | None, layout: _Layout) -> Pulse | None:
    """The pulse of a match of ``layout``, ``raw`` its exact bytes, or None to let the
    strict path decide."""
    (
        uri,
        version,
        cipher_suite,
        period,
        certificate_hex,
        chain_index,
        pulse_index,
        time_stamp,
        random_hex,
        external_text,
        previous_uri,
        previous_hex,
        skip_links_text,
        precommitment_hex,
        status_code,
        signature_hex,
        output_hex,
    ) = m.groups()
    cipher_suite, period, status_code = int(cipher_suite), int(period), int(status_code)
    chain_index, pulse_index = int(chain_index), int(pulse_index)
    if not (
        cipher_suite <= MAX_U32
        and 0 < period <= MAX_U32
        and 0 < chain_index <= MAX_U64
        and 0 < pulse_index <= MAX_U64
        and status_code <= MAX_U32
    ):
        return None
    stamp = time_stamp.decode()
    time_ms = _stamp_ms(stamp)  # the layout holds it to digits where digits go
    if time_ms is None or time_ms % period:
        return None
    try:  # binascii.Error (a ValueError): a hex value holds something else, or is odd
        external = _external(external_text, layout)
        skip_links = _skip_links(skip_links_text, layout)
        if external is None or skip_links is None:
            return None
        links = (_link(0, previous_uri, previous_hex), *skip_links)
        pulse = _new(Pulse)
        _SET_CERTIFICATE_ID(pulse, _unhexlify(certificate_hex))
        _SET_LOCAL_RANDOM_VALUE(pulse, _unhexlify(random_hex))
        _SET_PRECOMMITMENT_VALUE(pulse, _unhexlify(precommitment_hex))
        _SET_SIGNATURE_VALUE(pulse, _unhexlify(signature_hex))
        _SET_OUTPUT_VALUE(pulse, _unhexlify(output_hex))
    except ValueError:
        return None
    _SET_URI(pulse, _uri(uri))
    _SET_VERSION(pulse, version.decode())
    _SET_CIPHER_SUITE(pulse, cipher_suite)
    _SET_PERIOD(pulse, period)
    _SET_CHAIN_INDEX(pulse, chain_index)
    _SET_PULSE_INDEX(pulse, pulse_index)
    _SET_TIME_STAMP(pulse, stamp)
    _SET_EXTERNAL(pulse, external)
    _SET_LIST_VALUES(pulse, links)
    _SET_STATUS_CODE(pulse, status_code)
    _SET_RAW(pulse, raw)
    _SET_TIME_MS(pulse, time_ms)
    return pulse


def _checked_pulse(obj: Mapping[str, Any], raw: bytes | None) -> Pulse:
    """Build a ``Pulse`` field by field, naming the first field that is wrong."""
    unknown = set(obj) - _PULSE_FIELDS
    if unknown:
        raise PulseFormatError(sorted(unknown)[0], "unknown field")
    ext = _object(_field(obj, "external", "external"), "external")
    external = External(
        source_id=_hex(_field(ext, "sourceId", "external.sourceId"), "external.sourceId"),
        status_code=_int(
            _field(ext, "statusCode", "external.statusCode"), "external.statusCode", MAX_U32
        ),
        value=_hex(_field(ext, "value", "external.value"), "external.value"),
    )
    raw_links = _field(obj, "listValues", "listValues")
    if not isinstance(raw_links, list):
        raise PulseFormatError("listValues", "must be an array")
    if len(raw_links) != len(LINK_TYPES):
        raise PulseFormatError("listValues", f"must have {len(LINK_TYPES)} entries")
    links = []
    for i, item in enumerate(raw_links):
        path = f"listValues[{i}]"
        entry = _object(item, path)
        link_type = _field(entry, "type", f"{path}.type")
        if link_type != LINK_TYPES[i]:
            raise PulseFormatError(
                f"{path}.type", f"must be {LINK_TYPES[i]!r}, got {str(link_type)[:20]!r}"
            )
        links.append(
            ListValue(
                uri=_opt_str(_field(entry, "uri", f"{path}.uri"), f"{path}.uri"),
                type=LINK_TYPES[i],
                value=_hex(_field(entry, "value", f"{path}.value"), f"{path}.value"),
            )
        )
    version = _field(obj, "version", "version")
    _require_str("version", version)
    return Pulse(
        uri=_opt_str(_field(obj, "uri", "uri"), "uri"),
        version=version,
        cipher_suite=_int(_field(obj, "cipherSuite", "cipherSuite"), "cipherSuite", MAX_U32),
        period=_int(_field(obj, "period", "period"), "period", MAX_U32),
        certificate_id=_hex(_field(obj, "certificateId", "certificateId"), "certificateId"),
        chain_index=_int(_field(obj, "chainIndex", "chainIndex"), "chainIndex", MAX_U64),
        pulse_index=_int(_field(obj, "pulseIndex", "pulseIndex"), "pulseIndex", MAX_U64),
        time_stamp=_field(obj, "timeStamp", "timeStamp"),
        local_random_value=_hex(
            _field(obj, "localRandomValue", "localRandomValue"), "localRandomValue"
        ),
        external=external,
        list_values=tuple(links),
        precommitment_value=_hex(
            _field(obj, "precommitmentValue", "precommitmentValue"), "precommitmentValue"
        ),
        status_code=_int(_field(obj, "statusCode", "statusCode"), "statusCode", MAX_U32),
        signature_value=_hex(
            _field(obj, "signatureValue", "signatureValue"), "signatureValue", length=None
        ),
        output_value=_hex(_field(obj, "outputValue", "outputValue"), "outputValue"),
        raw=raw,
    )


# --- the signed bytes ---------------------------------------------------------


_U32 = struct.Struct(">I").pack
_HASH_PREFIX = _U32(HASH_LEN)
_SIGNED_MIDDLE = struct.Struct(">II")
_SIGNED_INDEXES = struct.Struct(">QQ")


def _str(text: str | None) -> bytes:
    encoded = (text or "").encode("utf-8")
    return _U32(len(encoded)) + encoded


def signing_input(pulse: Pulse) -> bytes:
    """Return the serialization S of a pulse: the signature input.

    S = STR(uri) ‖ STR(version) ‖ u32(cipherSuite) ‖ u32(period) ‖ HEX(certificateId)
      ‖ u64(chainIndex) ‖ u64(pulseIndex) ‖ STR(timeStamp) ‖ HEX(localRandomValue)
      ‖ HEX(external.sourceId) ‖ u32(external.statusCode) ‖ HEX(external.value)
      ‖ HEX(previous) ‖ HEX(hour) ‖ HEX(day) ‖ HEX(month) ‖ HEX(year)
      ‖ HEX(precommitmentValue) ‖ u32(statusCode)

    with 4-byte big-endian length prefixes; a null uri is the empty string.
    """
    # Every HEX field of a Pulse is a 64-byte hash, so its prefix is a constant.
    h = _HASH_PREFIX
    external = pulse.external
    links = pulse.list_values
    return b"".join(
        (
            _str(pulse.uri),
            _str(pulse.version),
            _SIGNED_MIDDLE.pack(pulse.cipher_suite, pulse.period),
            h,
            pulse.certificate_id,
            _SIGNED_INDEXES.pack(pulse.chain_index, pulse.pulse_index),
            _str(pulse.time_stamp),
            h,
            pulse.local_random_value,
            h,
            external.source_id,
            _U32(external.status_code),
            h,
            external.value,
            h,
            links[0].value,
            h,
            links[1].value,
            h,
            links[2].value,
            h,
            links[3].value,
            h,
            links[4].value,
            h,
            pulse.precommitment_value,
            _U32(pulse.status_code),
        )
    )


def output_value(
    signed: bytes, signature: bytes, variant: OutputVariant = OutputVariant.NIST
) -> OutputValue:
    """Compute outputValue from S and the raw signature bytes."""
    h = hashlib.sha512(signed)
    if variant is OutputVariant.INMETRO:
        h.update(struct.pack(">I", len(signature)))
    h.update(signature)
    return OutputValue(h.digest())


# --- emission -----------------------------------------------------------------


def pulse_to_object(pulse: Pulse) -> dict[str, Any]:
    """The pulse as a JSON object in NIST's key order and hex conventions.

    Hex is upper case except certificateId, which NIST writes in lower case.
    """
    return {
        "uri": pulse.uri,
        "version": pulse.version,
        "cipherSuite": pulse.cipher_suite,
        "period": pulse.period,
        "certificateId": pulse.certificate_id.hex(),
        "chainIndex": pulse.chain_index,
        "pulseIndex": pulse.pulse_index,
        "timeStamp": pulse.time_stamp,
        "localRandomValue": pulse.local_random_value.hex().upper(),
        "external": {
            "sourceId": pulse.external.source_id.hex().upper(),
            "statusCode": pulse.external.status_code,
            "value": pulse.external.value.hex().upper(),
        },
        "listValues": [
            {"uri": lv.uri, "type": lv.type, "value": lv.value.hex().upper()}
            for lv in pulse.list_values
        ],
        "precommitmentValue": pulse.precommitment_value.hex().upper(),
        "statusCode": pulse.status_code,
        "signatureValue": pulse.signature_value.hex().upper(),
        "outputValue": pulse.output_value.hex().upper(),
    }


def emit_pulse(pulse: Pulse) -> bytes:
    """Serialize a pulse as ``{"pulse": {...}}`` JSON bytes, as NIST publishes it."""
    text = json.dumps({"pulse": pulse_to_object(pulse)}, indent=2, ensure_ascii=False)
    return text.encode("utf-8") + b"\n"


# --- certificates -------------------------------------------------------------

_PEM_RE = re.compile(
    rb"-----\s*BEGIN CERTIFICATE\s*-----(.*?)-----\s*END CERTIFICATE\s*-----", re.DOTALL
)
MAX_CERTIFICATE_BYTES = 64 * 1024


def certificate_der(data: bytes) -> bytes:
    """Return the DER bytes of a certificate given as PEM (leniently) or DER.

    Real beacons have served PEM with missing or extra line breaks around the
    BEGIN/END lines, so the base64 body is taken with all whitespace removed.
    Raises ``PulseFormatError`` (field ``certificate``) when it is neither.
    """
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise PulseFormatError("certificate", f"larger than {MAX_CERTIFICATE_BYTES} bytes")
    m = _PEM_RE.search(data)
    if m is not None:
        body = re.sub(rb"\s+", b"", m.group(1))
        try:
            der = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PulseFormatError("certificate", "PEM body is not base64") from exc
    else:
        der = bytes(data)
    try:
        x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise PulseFormatError("certificate", "not an X.509 certificate (PEM or DER)") from exc
    return der


def load_certificate(data: bytes) -> x509.Certificate:
    """Parse a certificate from PEM (leniently) or DER bytes."""
    return x509.load_der_x509_certificate(certificate_der(data))


def certificate_id(data: bytes) -> CertificateId:
    """certificateId of a certificate: SHA-512 of its DER encoding (not of PEM text)."""
    return CertificateId(hashlib.sha512(certificate_der(data)).digest())
