"""Reading a daily archive: every pulse of one UTC day, with its entropy record.

Key: ``layout.archive_key(day)`` = ``beacon/2.0/archive/day/{YYYY-MM-DD}.jsonl.gz``.
Content (written by the beacon's ``beacon.publish.archives``): one gzip member of
JSON Lines, one line per pulse in (timeStamp, chainIndex, pulseIndex) order::

    {"pulse":"<the pulse's exact text>","entropy":"<its entropy record's exact text>"}

``"entropy"`` is null when the pulse has no record; a co-signed pulse's line has
a third key, ``"pqSignature"``, the exact text of its ML-DSA-65 co-signature
object (``pq``). The strings hold the original objects byte for byte: the reader
returns their UTF-8 encoding, which is what was signed and hashed, never a
re-serialization.

``iter_day_archive`` streams: it inflates a bounded chunk at a time and yields
entries as it goes, so memory holds a piece of the archive, not the day. Every
limit is checked (compressed size by the caller's fetch, decompressed size,
line length) and anything that is not exactly such an archive raises
``FetchError`` with one line naming the archive and the line.
Whether the pulses belong to that day and chain is the caller's business
(``replay``).

Pure: bytes in, entries out.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from beacon_verifier.errors import FetchError, PulseFormatError
from beacon_verifier.format import MAX_PULSE_BYTES, load_json
from beacon_verifier.pq import MAX_COSIGNATURE_BYTES

#: Largest compressed archive read (it is streamed, so this bounds time, not memory):
#: a day of 1-second pulses with quantum entropy records is ~86,400 x 12 KB of text.
MAX_ARCHIVE_BYTES = 1024 * 1024 * 1024
#: Largest decompressed archive.
MAX_ARCHIVE_TEXT_BYTES = 4 * 1024 * 1024 * 1024
#: Largest entropy record read (a quantum record is ~2-10 KB).
MAX_RECORD_BYTES = 64 * 1024
#: Largest line: a pulse, a record and a co-signature at their limits, every byte
#: escaped as \\uXXXX.
MAX_LINE_BYTES = 6 * (MAX_PULSE_BYTES + MAX_RECORD_BYTES + MAX_COSIGNATURE_BYTES) + 64
_CHUNK = 256 * 1024

_PREFIX = '{"pulse":"'
_MIDDLE = ',"entropy":'
_COSIGNATURE = ',"pqSignature":"'
_KEYS = ({"pulse", "entropy"}, {"pulse", "entropy", "pqSignature"})
# The string scanner json.loads uses (in C); typeshed does not list it.
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


class ArchiveEntry(NamedTuple):
    """One line of an archive: the exact bytes of a pulse, its entropy record and
    its co-signature (None when the line has none). A named tuple: one is made per
    pulse read, and a tuple is made several times faster than a frozen dataclass."""

    line: int
    pulse: bytes
    entropy: bytes | None
    cosignature: bytes | None = None


class _Bad(Exception):
    """Internal: why a line is refused; becomes ``FetchError`` naming the archive."""


Fields = tuple[str, str | None, str | None]


def _quick_fields(text: str) -> Fields | None:
    """The strings of a line in exactly the shape the beacon writes, else None."""
    if not text.startswith(_PREFIX):
        return None
    pulse, end = _scanstring(text, len(_PREFIX), True)
    if not text.startswith(_MIDDLE, end):
        return None
    end += len(_MIDDLE)
    entropy = None
    if text.startswith("null", end):
        end += 4
    elif text.startswith('"', end):
        entropy, end = _scanstring(text, end + 1, True)
    else:
        return None
    cosignature = None
    if text.startswith(_COSIGNATURE, end):
        cosignature, end = _scanstring(text, end + len(_COSIGNATURE), True)
    return (pulse, entropy, cosignature) if end + 1 == len(text) and text[end] == "}" else None


def _fields(text: str) -> Fields:
    """The strings of a line: ``pulse``, ``entropy`` and ``pqSignature`` (None when
    absent or null); the exact shape the beacon writes, or any strict JSON object
    with those keys."""
    try:
        quick = _quick_fields(text)
    except ValueError:
        quick = None  # the strict decoder below says what is wrong
    if quick is not None:
        return quick
    try:
        obj = load_json(text.encode("utf-8"), max_bytes=MAX_LINE_BYTES)
    except PulseFormatError as exc:
        # load_json names the whole line "json", and a repeated key by its name.
        raise _Bad(f"not JSON ({exc.reason})" if exc.field == "json" else str(exc)) from None
    if (
        not isinstance(obj, dict)
        or obj.keys() not in _KEYS
        or not isinstance(obj["pulse"], str)
        or not (obj["entropy"] is None or isinstance(obj["entropy"], str))
        or not isinstance(obj.get("pqSignature", ""), str)
    ):
        raise _Bad(
            'expected {"pulse": string, "entropy": string or null} and maybe "pqSignature": string'
        )
    return obj["pulse"], obj["entropy"], obj.get("pqSignature")


def _entry(number: int, line: bytes) -> ArchiveEntry:
    try:
        pulse, entropy, cosignature = _fields(line.decode("utf-8"))
        pulse_bytes = pulse.encode("utf-8")
        entropy_bytes = None if entropy is None else entropy.encode("utf-8")
        cosignature_bytes = None if cosignature is None else cosignature.encode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Bad(f"not UTF-8 (byte {exc.start})") from None
    except UnicodeEncodeError:
        raise _Bad("a string holds a lone surrogate, so it is not the text of a pulse") from None
    if not pulse_bytes:
        raise _Bad("empty pulse")
    if len(pulse_bytes) > MAX_PULSE_BYTES:
        raise _Bad(f"pulse larger than {MAX_PULSE_BYTES} bytes")
    if entropy_bytes is not None and len(entropy_bytes) > MAX_RECORD_BYTES:
        raise _Bad(f"entropy record larger than {MAX_RECORD_BYTES} bytes")
    if cosignature_bytes is not None and len(cosignature_bytes) > MAX_COSIGNATURE_BYTES:
        raise _Bad(f"co-signature larger than {MAX_COSIGNATURE_BYTES} bytes")
    return ArchiveEntry(
        line=number, pulse=pulse_bytes, entropy=entropy_bytes, cosignature=cosignature_bytes
    )


def iter_day_archive(
    chunks: Iterable[bytes],
    *,
    name: str = "archive",
    max_text_bytes: int = MAX_ARCHIVE_TEXT_BYTES,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[ArchiveEntry]:
    """Yield the entries of a gzip JSON Lines archive, in order, as it inflates.

    ``chunks`` is the compressed archive, whole or in pieces (``fetch.read_chunks``
    streams it, so that memory holds one piece). Raises ``FetchError`` naming
    ``name`` (and the line) when the data is not exactly one gzip member,
    inflates to more than ``max_text_bytes``, has a line longer than
    ``max_line_bytes``, does not end with a newline, or a line is not
    ``{"pulse": string, "entropy": string or null}`` (and maybe ``"pqSignature":
    string``). Entries before the fault have been yielded by then.
    """
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip only
    buffer = b""
    total = 0
    number = 0
    try:
        for piece in chunks:
            pending = piece
            while True:
                if inflater.eof:
                    if pending or inflater.unused_data:
                        raise _Bad("trailing data after the gzip member")
                    break
                text = inflater.decompress(pending, _CHUNK)
                pending = inflater.unconsumed_tail
                total += len(text)
                if total > max_text_bytes:
                    raise _Bad(f"larger than {max_text_bytes} bytes uncompressed")
                buffer += text
                start = 0
                while (end := buffer.find(b"\n", start)) != -1:
                    if end - start > max_line_bytes:
                        raise _Bad(f"line {number + 1} is longer than {max_line_bytes} bytes")
                    number += 1
                    try:
                        entry = _entry(number, buffer[start:end])
                    except _Bad as exc:
                        raise _Bad(f"line {number}: {exc}") from None
                    yield entry
                    start = end + 1
                buffer = buffer[start:]
                if len(buffer) > max_line_bytes:
                    raise _Bad(f"line {number + 1} is longer than {max_line_bytes} bytes")
                if not pending and len(text) < _CHUNK:
                    break  # this piece is used up and nothing is held back
        if inflater.unused_data:
            raise _Bad("trailing data after the gzip member")
        if not inflater.eof:
            raise _Bad("truncated")
    except zlib.error as exc:
        raise FetchError(f"{name}: not a gzip archive ({exc})") from None
    except _Bad as exc:
        raise FetchError(f"{name}: {exc}") from None
    if buffer:
        raise FetchError(f"{name}: the last line does not end with a newline")
    if number == 0:
        raise FetchError(f"{name}: no pulses (an empty day has no archive)")
