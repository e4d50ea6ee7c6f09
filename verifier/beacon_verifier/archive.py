"""Reading the daily archives: a UTC day's pulses with their entropy records, and
apart from them, the day's co-signatures.

Day archive, ``layout.archive_key(day)`` = ``beacon/2.0/archive/day/{YYYY-MM-DD}.jsonl.gz``
(written by the beacon's ``beacon.publish.archives``): one gzip member of JSON
Lines, one line per pulse in (timeStamp, chainIndex, pulseIndex) order::

    {"pulse":"<the pulse's exact text>","entropy":"<its entropy record's exact text>"}

``"entropy"`` is null when the pulse has no record; any other key is refused.

PQ day archive, ``layout.pq_archive_key(day)`` = ``.../{YYYY-MM-DD}.pq.jsonl.gz``:
the same, one line per co-signed pulse, in the same order::

    {"chainIndex":c,"pqSignature":"<the exact text of its co-signature object>","pulseIndex":p}

The co-signatures (~6.8 KB each, twice the rest of a line) live in a file of
their own so that a reader not checking them neither fetches nor inflates them.

The strings hold the original objects byte for byte: the reader returns their
UTF-8 encoding, which is what was signed and hashed, never a re-serialization.

``iter_day_archive`` and ``iter_pq_archive`` stream: they inflate a bounded
chunk at a time and yield entries as they go, so memory holds a piece of the
archive, not the day. Both are one line iterator (``_iter_lines``: inflating,
splitting, every size limit) under a thin parser of one line. Every limit is
checked (compressed size by the caller's fetch, decompressed size, line length)
and anything that is not exactly such an archive raises ``FetchError`` with one
line naming the archive and the line. Whether the pulses belong to that day and
chain is the caller's business (``replay``).

Pure: bytes in, entries out.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple, TypeVar

from beacon_verifier.errors import FetchError, PulseFormatError
from beacon_verifier.format import MAX_PULSE_BYTES, Pulse, load_json, parse_escaped_pulse
from beacon_verifier.pq import MAX_COSIGNATURE_BYTES

#: Largest compressed archive read (it is streamed, so this bounds time, not memory):
#: a day of 1-second pulses with quantum entropy records is ~86,400 x 12 KB of text.
MAX_ARCHIVE_BYTES = 1024 * 1024 * 1024
#: Largest decompressed archive (either kind).
MAX_ARCHIVE_TEXT_BYTES = 4 * 1024 * 1024 * 1024
#: Largest entropy record read (a quantum record is ~2-10 KB).
MAX_RECORD_BYTES = 64 * 1024
#: Largest day archive line: a pulse and a record at their limits, every byte
#: escaped as \\uXXXX.
MAX_LINE_BYTES = 6 * (MAX_PULSE_BYTES + MAX_RECORD_BYTES) + 64
#: Largest PQ archive line: a co-signature at its limit, escaped the same way,
#: and two indexes.
MAX_PQ_LINE_BYTES = 6 * MAX_COSIGNATURE_BYTES + 128
_MAX_INDEX = 2**64 - 1
#: Inflated text taken at a time, and compressed input given at a time: small
#: inputs keep zlib from copying the rest of a large piece into
#: ``unconsumed_tail`` at every call.
_CHUNK = 256 * 1024
_INPUT = 64 * 1024

_PREFIX = '{"pulse":"'
_MIDDLE = ',"entropy":'
_PREFIX_BYTES, _MIDDLE_BYTES = _PREFIX.encode(), b'"' + _MIDDLE.encode()  # pulse's end quote too
#: A record's text as the writer escapes it: printable ASCII (and DEL) with every
#: quote escaped and no other escape, which JSON reads as that text with each \"
#: made a quote.
_QUOTES_ESCAPED = re.compile(rb'[^"\\\x00-\x1f\x80-\xff]*+(?:\\"[^"\\\x00-\x1f\x80-\xff]*+)*+')
_PREFIX_LEN, _MIDDLE_LEN = len(_PREFIX), len(_MIDDLE)
_DAY_KEYS = {"pulse", "entropy"}
_PQ_KEYS = {"chainIndex", "pqSignature", "pulseIndex"}
_PQ_HEAD = re.compile(r'\{"chainIndex":([1-9][0-9]{0,19}),"pqSignature":"')
_PQ_TAIL = re.compile(r',"pulseIndex":([1-9][0-9]{0,19})\}')
# The string scanner json.loads uses (in C); typeshed does not list it.
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]

_T = TypeVar("_T")


class ArchiveEntry:
    """One line of a day archive: the exact bytes of a pulse and of its entropy record,
    and the pulse itself when reading the line parsed it (``parse_pulse(pulse)``
    gives the same, or says why it is no pulse).

    A parsed pulse's exact bytes are made only when ``pulse`` is asked for: a chain
    replay never needs them, and unescaping them costs a tenth of a pulse's check.
    """

    __slots__ = ("_escaped", "_pulse", "entropy", "line", "parsed")

    def __init__(
        self,
        line: int,
        pulse: bytes | None,
        entropy: bytes | None,
        parsed: Pulse | None = None,
        escaped: tuple[bytes, int] | None = None,
    ) -> None:
        self.line = line
        self._pulse = pulse
        self.entropy = entropy
        self.parsed = parsed
        self._escaped = escaped  # (the line, where the pulse's string starts)

    @property
    def pulse(self) -> bytes:
        """The pulse's exact bytes."""
        if self._pulse is None:
            assert self._escaped is not None
            line, start = self._escaped
            self._pulse = _scanstring(line.decode("ascii"), start, True)[0].encode("ascii")
        return self._pulse


class PqEntry(NamedTuple):
    """One line of a PQ day archive: pulse ``chain``/``pulse``'s co-signature, exact bytes."""

    line: int
    chain: int
    pulse: int
    cosignature: bytes


class _Bad(Exception):
    """Internal: why an archive is refused; becomes ``FetchError`` naming the archive."""


class _Line(_Bad):
    """Internal: why a line is refused (``_iter_lines`` adds the line's number)."""


# --- one generic reader of gzip JSON Lines ------------------------------------------------


def _iter_lines(
    chunks: Iterable[bytes],
    parse: Callable[[int, bytes], _T],
    *,
    name: str,
    empty: str,
    max_text_bytes: int,
    max_line_bytes: int,
) -> Iterator[_T]:
    """``parse(number, line)`` of every line of one gzip member, in order, as it inflates.

    ``parse`` raises ``_Bad`` to refuse a line. Raises ``FetchError`` naming
    ``name`` (and the line) when the data is not exactly one gzip member,
    inflates to more than ``max_text_bytes``, has a line longer than
    ``max_line_bytes``, does not end with a newline, has no line (``empty`` says
    why that is wrong), or ``parse`` refuses a line. Lines before the fault have
    been yielded by then.
    """
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip only
    held = b""  # the start of a line whose end is not inflated yet
    total = 0
    number = 0
    try:
        for piece in chunks:
            view = memoryview(piece)
            for offset in range(0, len(view), _INPUT):
                if inflater.eof:
                    raise _Bad("trailing data after the gzip member")
                pending: bytes | memoryview = view[offset : offset + _INPUT]
                while True:
                    text = inflater.decompress(pending, _CHUNK)
                    pending = inflater.unconsumed_tail
                    total += len(text)
                    if total > max_text_bytes:
                        raise _Bad(f"larger than {max_text_bytes} bytes uncompressed")
                    # Lines are cut from each inflated piece as it is: only the
                    # part line at its end is copied, never the piece.
                    find = text.find
                    start = 0
                    while (end := find(b"\n", start)) != -1:
                        line = held + text[:end] if held else text[start:end]
                        held = b""
                        if len(line) > max_line_bytes:
                            raise _Bad(f"line {number + 1} is longer than {max_line_bytes} bytes")
                        number += 1
                        yield parse(number, line)
                        start = end + 1
                    held += text[start:]
                    if len(held) > max_line_bytes:
                        raise _Bad(f"line {number + 1} is longer than {max_line_bytes} bytes")
                    if inflater.eof or (not pending and len(text) < _CHUNK):
                        break  # this input is used up and zlib holds nothing back
                if inflater.unused_data:
                    raise _Bad("trailing data after the gzip member")
        if not inflater.eof:
            raise _Bad("truncated")
    except zlib.error as exc:
        raise FetchError(f"{name}: not a gzip archive ({exc})") from None
    except _Line as exc:
        raise FetchError(f"{name}: line {number}: {exc}") from None
    except _Bad as exc:
        raise FetchError(f"{name}: {exc}") from None
    if held:
        raise FetchError(f"{name}: the last line does not end with a newline")
    if number == 0:
        raise FetchError(f"{name}: {empty}")


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Line(f"{what} holds a lone surrogate, so it is not the text of an object") from None


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Line(f"not UTF-8 (byte {exc.start})") from None


def _strict(line: bytes, max_bytes: int) -> dict[str, object]:
    """A line that is not in the writer's exact shape, decoded as strict JSON."""
    try:
        obj = load_json(line, max_bytes=max_bytes)
    except PulseFormatError as exc:
        # load_json names the whole line "json", and a repeated key by its name.
        raise _Line(f"not JSON ({exc.reason})" if exc.field == "json" else str(exc)) from None
    return obj if isinstance(obj, dict) else {}


# --- day archives ----------------------------------------------------------------------


def _quick_day_fields(text: str) -> tuple[str, str | None] | None:
    """``pulse`` and ``entropy`` of a line in exactly the writer's shape, else None.
    Raises ``ValueError`` for a string that is not JSON."""
    if not text.startswith(_PREFIX):
        return None
    pulse, end = _scanstring(text, _PREFIX_LEN, True)
    if not text.startswith(_MIDDLE, end):
        return None
    end += _MIDDLE_LEN
    if text.startswith('"', end):
        entropy, end = _scanstring(text, end + 1, True)
        return (pulse, entropy) if end + 1 == len(text) and text[end] == "}" else None
    return (pulse, None) if end + 5 == len(text) and text.endswith("null}") else None


def _strict_day_fields(line: bytes) -> tuple[str, str | None]:
    """``pulse`` and ``entropy`` of a line not in the writer's exact shape: strict JSON
    with exactly those keys."""
    obj = _strict(line, MAX_LINE_BYTES)
    pulse, entropy = obj.get("pulse"), obj.get("entropy")
    if (
        obj.keys() != _DAY_KEYS
        or not isinstance(pulse, str)
        or not (entropy is None or isinstance(entropy, str))
    ):
        raise _Line('expected {"pulse": string, "entropy": string or null} and no other key')
    return pulse, entropy


def _quick_day_entry(number: int, line: bytes) -> ArchiveEntry | None:
    """A line in exactly the writer's shape, its pulse in ``emit_pulse``'s layout and
    its record escaping nothing but quotes, read without unescaping it for a JSON
    decoder: the pulse is parsed from its escaped text. Else None."""
    if not line.startswith(_PREFIX_BYTES):
        return None
    found = parse_escaped_pulse(line, len(_PREFIX_BYTES))
    if found is None:
        return None
    pulse, end = found
    if not line.startswith(_MIDDLE_BYTES, end):
        return None
    escaped = (line, len(_PREFIX_BYTES))
    record = line[end + len(_MIDDLE_BYTES) :]
    if record == b"null}":
        return ArchiveEntry(number, None, None, pulse, escaped)
    if not (record.startswith(b'"') and record.endswith(b'"}')):
        return None
    record = record[1:-2]
    if _QUOTES_ESCAPED.fullmatch(record) is None:
        return None
    record = record.replace(b'\\"', b'"')
    if len(record) > MAX_RECORD_BYTES:
        return None
    return ArchiveEntry(number, None, record, pulse, escaped)


def _day_entry(number: int, line: bytes) -> ArchiveEntry:
    """One line of a day archive. This is the per-line cost of reading one, so it is
    kept to a few calls: most lines are read by ``_quick_day_entry``."""
    quick = _quick_day_entry(number, line)
    if quick is not None:
        return quick
    text = _decode(line)
    try:
        fields = _quick_day_fields(text)
    except ValueError:
        fields = None  # the strict decoder says what is wrong
    pulse_text, entropy_text = fields or _strict_day_fields(line)
    pulse = _utf8(pulse_text, "the pulse")
    entropy = None if entropy_text is None else _utf8(entropy_text, "the entropy record")
    if not pulse:
        raise _Line("empty pulse")
    if len(pulse) > MAX_PULSE_BYTES:
        raise _Line(f"pulse larger than {MAX_PULSE_BYTES} bytes")
    if entropy is not None and len(entropy) > MAX_RECORD_BYTES:
        raise _Line(f"entropy record larger than {MAX_RECORD_BYTES} bytes")
    return ArchiveEntry(number, pulse, entropy)


def iter_day_archive(
    chunks: Iterable[bytes],
    *,
    name: str = "archive",
    max_text_bytes: int = MAX_ARCHIVE_TEXT_BYTES,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[ArchiveEntry]:
    """Yield the entries of a day archive, in order, as it inflates.

    ``chunks`` is the compressed archive, whole or in pieces (``fetch.read_chunks``
    streams it, so that memory holds one piece). Raises ``FetchError`` naming
    ``name`` (and the line) when the data is not exactly one gzip member,
    inflates to more than ``max_text_bytes``, has a line longer than
    ``max_line_bytes``, does not end with a newline, or a line is not
    ``{"pulse": string, "entropy": string or null}``. Entries before the fault
    have been yielded by then.
    """
    return _iter_lines(
        chunks,
        _day_entry,
        name=name,
        empty="no pulses (an empty day has no archive)",
        max_text_bytes=max_text_bytes,
        max_line_bytes=max_line_bytes,
    )


# --- PQ day archives -------------------------------------------------------------------


def _index(value: object) -> int:
    if type(value) is not int or not 1 <= value <= _MAX_INDEX:
        raise _Line("chainIndex and pulseIndex must be integers in [1, 2**64-1]")
    return value


def _pq_fields(text: str, line: bytes) -> tuple[int, str, int]:
    """``chainIndex``, ``pqSignature`` and ``pulseIndex`` of a PQ archive line: the
    writer's exact shape read directly, anything else as strict JSON with exactly
    those keys."""
    head = _PQ_HEAD.match(text)
    if head is not None:
        try:
            cosignature, end = _scanstring(text, head.end(), True)
            tail = _PQ_TAIL.fullmatch(text, end)
            if tail is not None:
                return _index(int(head[1])), cosignature, _index(int(tail[1]))
        except ValueError:
            pass  # the strict decoder below says what is wrong
    obj = _strict(line, MAX_PQ_LINE_BYTES)
    strict_cosignature = obj.get("pqSignature")
    if obj.keys() != _PQ_KEYS or not isinstance(strict_cosignature, str):
        raise _Line(
            'expected {"chainIndex": integer, "pqSignature": string, "pulseIndex": integer}'
        )
    return _index(obj["chainIndex"]), strict_cosignature, _index(obj["pulseIndex"])


def _pq_entry(number: int, line: bytes) -> PqEntry:
    chain, text, pulse = _pq_fields(_decode(line), line)
    cosignature = _utf8(text, "the co-signature")
    if not cosignature:
        raise _Line("empty co-signature")
    if len(cosignature) > MAX_COSIGNATURE_BYTES:
        raise _Line(f"co-signature larger than {MAX_COSIGNATURE_BYTES} bytes")
    return PqEntry(number, chain, pulse, cosignature)


def iter_pq_archive(
    chunks: Iterable[bytes],
    *,
    name: str = "pq archive",
    max_text_bytes: int = MAX_ARCHIVE_TEXT_BYTES,
    max_line_bytes: int = MAX_PQ_LINE_BYTES,
) -> Iterator[PqEntry]:
    """Yield the entries of a PQ day archive, in order, as it inflates.

    As ``iter_day_archive``, for lines ``{"chainIndex": integer, "pqSignature":
    string, "pulseIndex": integer}``; a line whose pulse does not follow the
    previous line's, in the same chain, is out of order and refused too.
    """
    previous = (0, 0)

    def parse(number: int, line: bytes) -> PqEntry:
        nonlocal previous
        entry = _pq_entry(number, line)
        if entry.chain == previous[0] and entry.pulse <= previous[1]:
            raise _Line(
                f"pulse {entry.chain}/{entry.pulse} after pulse {previous[0]}/{previous[1]}: "
                "not in (timeStamp, chainIndex, pulseIndex) order"
            )
        previous = (entry.chain, entry.pulse)
        return entry

    return _iter_lines(
        chunks,
        parse,
        name=name,
        empty="no co-signatures (a day without any has no PQ archive)",
        max_text_bytes=max_text_bytes,
        max_line_bytes=max_line_bytes,
    )
