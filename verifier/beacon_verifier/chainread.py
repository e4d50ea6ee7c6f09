"""Reading a chain from a site in order, with each pulse's evidence: ``read_chain``.

Pulse ``p`` of chain ``c`` is the object ``layout.pulse_key(c, p)`` with its entropy
record ``layout.entropy_record_key(c, p)`` and its co-signature
``layout.pq_signature_key(c, p)``, except that where the site has the daily archive
of a UTC day (``layout.archive_key``: that day's pulses and records in one gzip
file), the pulses of that day come from it, and their co-signatures from the day's
PQ archive (``layout.pq_archive_key``), read in step with it: two GETs a day instead
of three per pulse. Archives exist only for complete days and may be absent
altogether; days without one are read pulse by pulse, and a co-signature the PQ
archive lacks comes from its object. A pulse neither place has is *missing*:
reported, never fatal. An archive that is malformed, oversized or contradicts
itself or the site is reported as an ``archive`` failure and the rest of the day
(of its co-signatures, for a PQ archive) is read object by object. Without
co-signature checks the PQ archive is never fetched. A pulse object that cannot be
fetched at all (not: is absent) stops the replay with ``FetchError``.

Round records of the drand rounds pulses mix (``layout.external_key``) are not in
the archives: each comes from its object, for archived pulses too. On a source that
reads ahead, the records of an archive's pulses are named to it as the archive's
lines are read (``_rounds_ahead``), so that many are in flight, not one per pulse.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from beacon_verifier import layout
from beacon_verifier.archive import (
    MAX_ARCHIVE_BYTES,
    MAX_RECORD_BYTES,
    ArchiveEntry,
    PqEntry,
    iter_day_archive,
    iter_pq_archive,
)
from beacon_verifier.core import NOT_FETCHED, NotFetched
from beacon_verifier.errors import FetchError, PulseFormatError
from beacon_verifier.external import MAX_RECORD_BYTES as MAX_EXTERNAL_RECORD_BYTES
from beacon_verifier.fetch import Source, TooLargeError, read_chunks
from beacon_verifier.format import MAX_PULSE_BYTES, ZERO_HASH, Pulse, parse_pulse
from beacon_verifier.pq import MAX_COSIGNATURE_BYTES
from beacon_verifier.siteread import cosignature_object, external_evidence

__all__ = ["ArchiveProblem", "Clock", "Slot", "read_chain"]

DAY_MS = 86_400_000


@dataclass(slots=True)
class Slot:
    """Pulse ``index`` as the site has it: the pulse, or ``error`` saying why what the
    site has is no pulse, or neither when the site has nothing (``missing``); the
    entropy record, if any, or why it cannot be read; the pulse's ML-DSA-65
    co-signature object when the site has one.

    Not frozen: one is made per pulse replayed, and a frozen dataclass takes twice
    as long to make. Nothing changes a slot once made."""

    index: int
    pulse: Pulse | None = None
    error: str | None = None
    entropy: bytes | None = None
    entropy_error: str | None = None
    cosignature: bytes | None = None
    external: bytes | NotFetched | None = NOT_FETCHED

    @property
    def missing(self) -> bool:
        return self.pulse is None and self.error is None


@dataclass(frozen=True, slots=True)
class ArchiveProblem:
    """A daily archive could not be used; reading went on pulse by pulse from ``index``."""

    index: int
    detail: str


def _object(
    source: Source, chain: int, index: int, cosignatures: bool = True, records: bool = True
) -> Slot:
    """Pulse ``index`` from its own object, with its entropy record when it is where it
    belongs (unless ``records`` is False), and its co-signature object unless
    ``cosignatures`` is False (neither is then fetched)."""
    try:
        data = source.get(layout.pulse_key(chain, index), max_bytes=MAX_PULSE_BYTES)
    except TooLargeError as exc:
        return Slot(index, error=f"pulse: {exc}")
    if data is None:
        return Slot(index)
    try:
        pulse = parse_pulse(data)
    except PulseFormatError as exc:
        return Slot(index, error=str(exc))
    if (pulse.chain_index, pulse.pulse_index) != (chain, index):
        return Slot(index, pulse)  # reported as misplaced; its record is not its own
    cosignature = cosignature_object(source, chain, index) if cosignatures else None
    external = external_evidence(source, pulse)
    if not records:
        return Slot(index, pulse, cosignature=cosignature, external=external)
    try:
        record = source.get(layout.entropy_record_key(chain, index), max_bytes=MAX_RECORD_BYTES)
    except TooLargeError as exc:
        return Slot(
            index, pulse, entropy_error=str(exc), cosignature=cosignature, external=external
        )
    return Slot(index, pulse, entropy=record, cosignature=cosignature, external=external)


#: ``(index, timeStamp in ms, period in ms)`` of one pulse of a chain whose pulses mix
#: drand rounds, placing the others in time as if there were no gaps.
Clock = tuple[int, int, int]


def _object_keys(
    chain: int,
    first: int,
    last: int,
    cosignatures: bool,
    records: bool,
    clock: Clock | None = None,
) -> Iterator[tuple[str, int]]:
    """The keys ``_object`` reads for pulses ``first``..``last``, in its order, with
    the size cap it reads each under. With a ``clock``, each pulse's round record
    too, at the time the clock predicts for it: after a gap the prediction misses,
    the record is then fetched when asked for, and what was read ahead is dropped."""
    for index in range(first, last + 1):
        yield layout.pulse_key(chain, index), MAX_PULSE_BYTES
        if cosignatures:
            yield layout.pq_signature_key(chain, index), MAX_COSIGNATURE_BYTES
        if clock is not None:
            at, at_ms, period = clock
            predicted = at_ms + (index - at) * period
            if predicted >= 0:
                yield layout.external_key(chain, predicted), MAX_EXTERNAL_RECORD_BYTES
        if records:
            yield layout.entropy_record_key(chain, index), MAX_RECORD_BYTES


def _placed(slot: Slot, chain: int) -> bool:
    pulse = slot.pulse
    return pulse is not None and (pulse.chain_index, pulse.pulse_index) == (chain, slot.index)


def _close(iterator: Iterator[Any] | None) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


#: Past any pulse index: asking for it reads a PQ archive to its end.
_NO_INDEX = 2**64


class _DayCosignatures:
    """The co-signatures of ``day``'s pulses of ``chain``, in pulse order: from the
    day's PQ archive, read in step with the day archive (one line held, never the
    day), else from each pulse's own object.

    The PQ archive is fetched when the first co-signature is asked for. One that
    is absent, has a hole, or is broken leaves those co-signatures to their
    objects: it costs GETs, never a co-signature reported missing that the site has.
    """

    def __init__(self, source: Source, chain: int, day: date) -> None:
        self.source = source
        self.chain = chain
        self.day = day
        self.name = f"pq archive {day.isoformat()}"
        self._pieces: Iterator[bytes] | None = None
        self._lines: Iterator[PqEntry] | None = None
        self._opened = False
        self._held: PqEntry | None = None  # read, for a later pulse
        self._last = 0  # the pulseIndex of the last line of ``chain`` read

    def get(self, index: int) -> tuple[bytes | None, str | None]:
        """Pulse ``index``'s co-signature (None: the site has none), and the problem
        the PQ archive has, once, when it turns out to have one."""
        try:
            line = self._line_for(index)
        except FetchError as exc:
            return cosignature_object(self.source, self.chain, index), self._problem(exc)
        if line is not None:
            return line.cosignature, None
        return cosignature_object(self.source, self.chain, index), None

    def finish(self) -> str | None:
        """Read the rest of the PQ archive, if it was opened (the day is done): the
        problem it has, if any, such as data after its end."""
        if not self._opened:
            return None
        try:
            self._line_for(_NO_INDEX)
        except FetchError as exc:
            return self._problem(exc)
        return None

    def _problem(self, exc: FetchError) -> str:
        self.close()
        return str(exc) if str(exc).startswith(self.name) else f"{self.name}: {exc}"

    def _line_for(self, index: int) -> PqEntry | None:
        """The line of pulse ``index``, reading up to it; None when there is none.
        Raises ``FetchError`` naming the archive and line when it is unusable."""
        if not self._opened:
            self._opened = True
            self._pieces = read_chunks(
                self.source, layout.pq_archive_key(self.day), max_bytes=MAX_ARCHIVE_BYTES
            )
            if self._pieces is not None:
                self._lines = iter_pq_archive(self._pieces, name=self.name)
        while self._lines is not None:
            line = self._held
            self._held = None
            if line is None:
                line = next(self._lines, None)
                if line is None:
                    self.close()  # read to its end: the rest come from their objects
                    return None
                if line.chain != self.chain:
                    continue
                if line.pulse <= self._last:
                    raise FetchError(
                        f"{self.name}: line {line.line}: pulse {self.chain}/{line.pulse} after "
                        f"{self.chain}/{self._last}: not in (timeStamp, chainIndex, pulseIndex) "
                        "order"
                    )
                self._last = line.pulse
            if line.pulse == index:
                return line
            if line.pulse > index:
                self._held = line  # a hole: this pulse's co-signature is not here
                return None
        return None

    def close(self) -> None:
        _close(self._lines)
        _close(self._pieces)
        self._lines = self._pieces = self._held = None


def _from_archive(
    source: Source, chain: int, day: date, index: int, last: int, cosignatures: bool = True
) -> Generator[Slot | ArchiveProblem, None, tuple[int, bool]]:
    """Read pulses ``index``.. of ``chain`` from ``day``'s archive, if the site has one,
    with their co-signatures (unless ``cosignatures`` is False) from its PQ archive.

    Returns the next index to read and whether the archive was read to its end
    (or to ``last``) without a problem.
    """
    name = f"archive {day.isoformat()}"
    try:
        pieces = read_chunks(source, layout.archive_key(day), max_bytes=MAX_ARCHIVE_BYTES)
    except FetchError as exc:
        yield ArchiveProblem(index, f"{name}: {exc}")
        return index, False
    if pieces is None:
        return index, False
    entries: Iterator[ArchiveEntry] = iter_day_archive(pieces, name=name)
    more = getattr(source, "read_ahead_more", None)
    if more is not None:
        entries = _rounds_ahead(entries, more, chain, index, last, _window(source))
    pq = _DayCosignatures(source, chain, day) if cosignatures else None
    previous: tuple[int, int, int] | None = None
    day_start = layout.day_start_ms(day)
    try:
        while index <= last:
            try:
                entry = next(entries, None)
                if entry is None:
                    problem = None if pq is None else pq.finish()
                    if problem is not None:
                        yield ArchiveProblem(index, problem)
                    return index, True
                pulse = entry.parsed
                if pulse is None:
                    try:
                        pulse = parse_pulse(entry.pulse)
                    except PulseFormatError as exc:
                        raise FetchError(f"{name}: line {entry.line}: {exc}") from None
                order = (pulse.time_ms, pulse.chain_index, pulse.pulse_index)
                if previous is not None and order <= previous:
                    raise FetchError(
                        f"{name}: line {entry.line}: not in (timeStamp, chainIndex, pulseIndex) "
                        "order"
                    )
                previous = order
                if not day_start <= pulse.time_ms < day_start + DAY_MS:
                    raise FetchError(
                        f"{name}: line {entry.line}: pulse {pulse.chain_index}/"
                        f"{pulse.pulse_index} at {pulse.time_stamp} is not of that day"
                    )
            except FetchError as exc:
                yield ArchiveProblem(index, str(exc))
                return index, False
            if pulse.chain_index != chain or pulse.pulse_index < index:
                continue
            # Pulses the archive skips: the site may have them as objects.
            for hole in range(index, min(pulse.pulse_index, last + 1)):
                slot = _object(source, chain, hole, cosignatures)
                yield slot
                if _placed(slot, chain) and layout.day_of(slot.pulse.time_ms) == day:  # type: ignore[union-attr]
                    yield ArchiveProblem(
                        hole, f"{name} lacks pulse {hole}, which the site has for that day"
                    )
            if pulse.pulse_index > last:
                return last + 1, True
            cosignature = None
            if pq is not None:
                cosignature, problem = pq.get(pulse.pulse_index)
                if problem is not None:
                    yield ArchiveProblem(pulse.pulse_index, problem)
            # Round records are not in the archives: from their objects.
            external = external_evidence(source, pulse)
            yield Slot(
                pulse.pulse_index,
                pulse,
                entropy=entry.entropy,
                cosignature=cosignature,
                external=external,
            )
            index = pulse.pulse_index + 1
        return index, True
    finally:
        if pq is not None:
            pq.close()
        _close(entries)
        _close(pieces)


def _window(source: Source) -> int:
    concurrency = getattr(source, "concurrency", 1)
    return concurrency if isinstance(concurrency, int) and concurrency > 0 else 1


def _rounds_ahead(
    entries: Iterator[ArchiveEntry],
    more: Callable[[Iterable[tuple[str, int]]], None],
    chain: int,
    first: int,
    last: int,
    window: int,
) -> Iterator[ArchiveEntry]:
    """``entries`` read ``window`` ahead of the reader, the round record of each pulse
    ``first``..``last`` of ``chain`` that claims a valid round named to the source
    (``more``: ``PipelinedSource.read_ahead_more``) as soon as its line is read, so
    that the records are fetched many at a time. Yields the same entries, and raises
    the same error at the same point, as ``entries``. A line the archive reader did
    not parse is left to the reader (its record is then fetched when asked for)."""
    held: deque[ArchiveEntry] = deque()
    error: FetchError | None = None
    done = False
    try:
        while True:
            while not done and len(held) < window:
                try:
                    entry = next(entries, None)
                except FetchError as exc:
                    error, done = exc, True
                    break
                if entry is None:
                    done = True
                    break
                held.append(entry)
                pulse = entry.parsed
                if (
                    pulse is not None
                    and pulse.chain_index == chain
                    and first <= pulse.pulse_index <= last
                    and pulse.external.source_id != ZERO_HASH
                    and pulse.external.status_code == 0
                ):
                    more([(layout.external_key(chain, pulse.time_ms), MAX_EXTERNAL_RECORD_BYTES)])
            if held:
                yield held.popleft()
            elif error is not None:
                raise error
            else:
                return
    finally:
        _close(entries)


def read_chain(
    source: Source,
    chain: int,
    first: int,
    last: int,
    *,
    day_hint: date | None = None,
    archives: bool = True,
    cosignatures: bool = True,
    records: bool = True,
    clock: Clock | None = None,
) -> Iterator[Slot | ArchiveProblem]:
    """Yield a ``Slot`` for every pulse ``first``..``last`` of ``chain``, in order.

    With ``archives``, each day is read from its archive where the site has one
    (``day_hint``: the day of pulse ``first``, if known, saves locating it);
    an ``ArchiveProblem`` marks an archive that could not be used. Without
    ``cosignatures`` no co-signature object is fetched (slots have None), without
    ``records`` no entropy record. Raises ``FetchError`` when a pulse object cannot
    be fetched (absent is not an error).

    A source that reads ahead (``prefetch.PipelinedSource``: ``read_ahead``) is told
    the keys read pulse by pulse before they are read, so that many are in flight;
    with a ``clock`` (the chain mixes drand rounds), the round records' too.
    """
    ahead = getattr(source, "read_ahead", None)
    reading_ahead = False
    index = first
    day = day_hint if archives else None
    tried: set[date] = set()
    day_start = day_end = 0  # the day of the last pulse read one by one, in ms
    while index <= last:
        if day is not None and day not in tried:
            tried.add(day)
            if reading_ahead:
                ahead([])  # type: ignore[misc]
                reading_ahead = False
            index, complete = yield from _from_archive(
                source, chain, day, index, last, cosignatures
            )
            day = day + timedelta(days=1) if complete else None
            continue
        if ahead is not None and not reading_ahead:
            ahead(_object_keys(chain, index, last, cosignatures, records, clock))
            reading_ahead = True
        slot = _object(source, chain, index, cosignatures, records)
        yield slot
        index += 1
        if archives and _placed(slot, chain):
            time_ms = slot.pulse.time_ms  # type: ignore[union-attr]
            if not day_start <= time_ms < day_end:
                day = layout.day_of(time_ms)
                day_start = layout.day_start_ms(day)
                day_end = day_start + DAY_MS
