"""Replaying a chain from a site: read its pulses in order, check them, report.

**Reading** (``read_chain``). Pulse ``p`` of chain ``c`` is the object
``layout.pulse_key(c, p)`` with its entropy record ``layout.entropy_record_key(c, p)``
and its co-signature ``layout.pq_signature_key(c, p)``, except that where the
site has the daily archive of a UTC day (``layout.archive_key``: that day's
pulses and records in one gzip file), the pulses of that day come from it, and
their co-signatures from the day's PQ archive (``layout.pq_archive_key``), read
in step with it: two GETs a day instead of three per pulse. Archives exist only
for complete days and may be absent altogether; days without one are read pulse
by pulse, and a co-signature the PQ archive lacks comes from its object. A pulse
neither place has is *missing*: reported, never fatal. An archive that is
malformed, oversized or contradicts itself or the site is reported as an
``archive`` failure and the rest of the day (of its co-signatures, for a PQ
archive) is read object by object. Without co-signature checks the PQ archive
is never fetched. A pulse object that cannot be fetched at all (not: is absent)
stops the replay with ``FetchError``.

**Checking** is ``checks.ChainVerifier``. The range is cut into segments of
about a day (aligned to the days of the archives), each checked on its own,
here or in ``jobs`` worker processes, then joined in order: the join checks
what a segment cannot see alone (its first pulse against the one before, skip
links that point before it), so the report is the same for any ``jobs``.
Memory holds a segment's pulse at a time, a piece of one archive, and the
report, whatever the length of the chain.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import signal
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from beacon_verifier import layout
from beacon_verifier.archive import (
    MAX_ARCHIVE_BYTES,
    MAX_RECORD_BYTES,
    PqEntry,
    iter_day_archive,
    iter_pq_archive,
)
from beacon_verifier.checks import (
    ChainReport,
    ChainVerifier,
    PulseCheck,
    Segment,
    TrustedCertificate,
)
from beacon_verifier.errors import (
    ChainError,
    CheckError,
    FetchError,
    PulseFormatError,
    SignatureError,
)
from beacon_verifier.fetch import Source, TooLargeError, read_chunks
from beacon_verifier.format import MAX_PULSE_BYTES, Pulse, load_json, parse_pulse
from beacon_verifier.pq import (
    MAX_COSIGNATURE_BYTES,
    MAX_KEY_DOCUMENT_BYTES,
    PqKey,
    check_cosignature,
    parse_key_document,
)

__all__ = [
    "MAX_JOBS",
    "MAX_RECORD_BYTES",
    "NOT_CHECKED",
    "ArchiveProblem",
    "EntropyCheck",
    "Progress",
    "Slot",
    "certificate_lookup",
    "chain_tip",
    "check_entropy_record",
    "entropy_verdict",
    "failure_as_dict",
    "fetch_entropy_verdict",
    "latest_pulse",
    "plan_segments",
    "read_chain",
    "replay_chain",
    "report_as_dict",
    "report_as_json",
]

#: ``progress(done, total)``: pulses of the range dealt with so far.
Progress = Callable[[int, int], None]

DAY_MS = 86_400_000
#: A segment holds whole days and at least this many pulses (when the range has them).
SEGMENT_PULSES = 1024
MAX_JOBS = 64
#: The co-signature verdict of a pulse whose co-signature was deliberately not looked at.
NOT_CHECKED = "not checked"


def certificate_lookup(source: Source) -> Callable[[bytes], TrustedCertificate | None]:
    """Find certificates on ``source`` by certificateId; None when absent or unusable."""

    def lookup(certificate_id: bytes) -> TrustedCertificate | None:
        data = source.get(layout.certificate_key(certificate_id.hex()))
        if data is None:
            return None
        try:
            cert = TrustedCertificate.from_bytes(data)
        except PulseFormatError:
            return None
        # A certificate is identified by its DER hash; a mismatch is no certificate.
        return cert if cert.certificate_id == certificate_id else None

    return lookup


def latest_pulse(source: Source) -> Pulse:
    """The pulse under ``pulse/last``.

    Raises ``FetchError`` when there is none, ``PulseFormatError`` when it is malformed.
    """
    data = source.get(layout.LAST_KEY, max_bytes=MAX_PULSE_BYTES)
    if data is None:
        raise FetchError(f"{source.describe()}: no {layout.LAST_KEY} (is this a beacon site?)")
    return parse_pulse(data)


def chain_tip(source: Source, chain: int | None) -> Pulse:
    """The last pulse of ``chain`` (default: the latest pulse, of the latest chain).

    Raises ``FetchError`` when the site has none, ``PulseFormatError`` when it is malformed.
    """
    head = latest_pulse(source)
    if chain is None or chain == head.chain_index:
        return head
    data = source.get(layout.chain_last_key(chain), max_bytes=MAX_PULSE_BYTES)
    if data is None:
        raise FetchError(f"{source.describe()}: chain {chain} has no last pulse")
    tip = parse_pulse(data)
    if tip.chain_index != chain:
        raise FetchError(
            f"{source.describe()}: {layout.chain_last_key(chain)} is a pulse of chain "
            f"{tip.chain_index}, not {chain}"
        )
    return tip


@dataclass(frozen=True, slots=True)
class EntropyCheck:
    """The entropy record of a pulse: its source kind, and whether it opens localRandomValue."""

    kind: str


def check_entropy_record(pulse: Pulse, record: bytes) -> EntropyCheck:
    """SHA-512(record) must equal localRandomValue; returns the record's source kind.

    Raises ``ChainError`` (check ``entropy record``) when it does not hold, and
    ``PulseFormatError`` when the record is not a JSON object naming its source.
    """
    return EntropyCheck(kind=_entropy_kind(pulse, record))


def _entropy_kind(pulse: Pulse, record: bytes) -> str:
    """``check_entropy_record``'s source kind, without the object around it."""
    digest = hashlib.sha512(record).digest()
    if digest != pulse.local_random_value:
        raise ChainError(
            "entropy record",
            pulse_index=pulse.pulse_index,
            detail="SHA-512 of the record is not localRandomValue",
            expected=pulse.local_random_value.hex().upper()[:16] + "…",
            actual=digest.hex().upper()[:16] + "…",
        )
    doc = load_json(record, what="entropy record", max_bytes=MAX_RECORD_BYTES)
    kind = doc.get("source") if isinstance(doc, dict) else None
    if not isinstance(kind, str):
        raise PulseFormatError("entropy record.source", "missing or not a string")
    if doc.get("chainIndex") != pulse.chain_index or doc.get("pulseIndex") != pulse.pulse_index:
        raise ChainError(
            "entropy record",
            pulse_index=pulse.pulse_index,
            detail="the record is for another pulse",
            expected=f"{pulse.chain_index}/{pulse.pulse_index}",
            actual=f"{doc.get('chainIndex')}/{doc.get('pulseIndex')}",
        )
    if kind in ("quantum-simulator", "quantum-hardware"):
        _check_quantum_bits(pulse, doc)
    return kind


def entropy_verdict(pulse: Pulse, record: bytes) -> tuple[str | None, list[ChainError]]:
    """``check_entropy_record`` as (the source kind if it holds, the failures if not)."""
    try:
        return _entropy_kind(pulse, record), []
    except ChainError as exc:
        return None, [exc]
    except PulseFormatError as exc:
        return None, [ChainError("entropy record", pulse_index=pulse.pulse_index, detail=str(exc))]


def fetch_entropy_verdict(source: Source, pulse: Pulse) -> tuple[str | None, list[ChainError]]:
    """``entropy_verdict`` of the record the site has for ``pulse``; (None, []) if none."""
    key = layout.entropy_record_key(pulse.chain_index, pulse.pulse_index)
    try:
        record = source.get(key, max_bytes=MAX_RECORD_BYTES)
    except TooLargeError as exc:
        return None, [ChainError("entropy record", pulse_index=pulse.pulse_index, detail=str(exc))]
    return (None, []) if record is None else entropy_verdict(pulse, record)


def _check_quantum_bits(pulse: Pulse, doc: dict[str, object]) -> None:
    """The conditioned value is SHA-512 of the raw bits the record says it consumed."""
    try:
        raw = bytes.fromhex(str(doc["quantumBits"]))
        value = bytes.fromhex(str(doc["quantumValue"]))
        offsets = doc["bitOffsets"]
        assert isinstance(offsets, dict)
        count = int(offsets["end"]) - int(offsets["start"])
    except (KeyError, ValueError, TypeError, AssertionError):
        raise PulseFormatError(
            "entropy record", "quantumBits, quantumValue or bitOffsets malformed"
        ) from None
    if len(raw) != (count + 7) // 8 or count <= 0:
        raise ChainError(
            "entropy record",
            pulse_index=pulse.pulse_index,
            detail="quantumBits does not hold the bit range in bitOffsets",
            expected=f"{(count + 7) // 8} bytes",
            actual=f"{len(raw)} bytes",
        )
    if hashlib.sha512(raw).digest() != value:
        raise ChainError(
            "entropy record",
            pulse_index=pulse.pulse_index,
            detail="quantumValue is not SHA-512 of quantumBits",
        )


# --- reading a chain in order ---------------------------------------------------------


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
    cosignature = _cosignature_object(source, chain, index) if cosignatures else None
    if not records:
        return Slot(index, pulse, cosignature=cosignature)
    try:
        record = source.get(layout.entropy_record_key(chain, index), max_bytes=MAX_RECORD_BYTES)
    except TooLargeError as exc:
        return Slot(index, pulse, entropy_error=str(exc), cosignature=cosignature)
    return Slot(index, pulse, entropy=record, cosignature=cosignature)


def _object_keys(
    chain: int, first: int, last: int, cosignatures: bool, records: bool
) -> Iterator[tuple[str, int]]:
    """The keys ``_object`` reads for pulses ``first``..``last``, in its order, with
    the size cap it reads each under."""
    for index in range(first, last + 1):
        yield layout.pulse_key(chain, index), MAX_PULSE_BYTES
        if cosignatures:
            yield layout.pq_signature_key(chain, index), MAX_COSIGNATURE_BYTES
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
            return _cosignature_object(self.source, self.chain, index), self._problem(exc)
        if line is not None:
            return line.cosignature, None
        return _cosignature_object(self.source, self.chain, index), None

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


def _cosignature_object(source: Source, chain: int, index: int) -> bytes | None:
    """Pulse ``index``'s co-signature object (b"\\0", reported as a malformed
    co-signature, when oversized)."""
    try:
        return source.get(layout.pq_signature_key(chain, index), max_bytes=MAX_COSIGNATURE_BYTES)
    except TooLargeError:
        return b"\0"


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
    entries = iter_day_archive(pieces, name=name)
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
            yield Slot(pulse.pulse_index, pulse, entropy=entry.entropy, cosignature=cosignature)
            index = pulse.pulse_index + 1
        return index, True
    finally:
        if pq is not None:
            pq.close()
        _close(entries)
        _close(pieces)


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
) -> Iterator[Slot | ArchiveProblem]:
    """Yield a ``Slot`` for every pulse ``first``..``last`` of ``chain``, in order.

    With ``archives``, each day is read from its archive where the site has one
    (``day_hint``: the day of pulse ``first``, if known, saves locating it);
    an ``ArchiveProblem`` marks an archive that could not be used. Without
    ``cosignatures`` no co-signature object is fetched (slots have None), without
    ``records`` no entropy record. Raises ``FetchError`` when a pulse object cannot
    be fetched (absent is not an error).

    A source that reads ahead (``prefetch.PipelinedSource``: ``read_ahead``) is told
    the keys read pulse by pulse before they are read, so that many are in flight.
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
            ahead(_object_keys(chain, index, last, cosignatures, records))
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


# --- checking segments ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Task:
    """One segment to check: pulses ``first``..``last`` of ``chain`` (pickles)."""

    source: Source
    chain: int
    first: int
    last: int
    day_hint: date | None
    archives: bool
    extra_checks: tuple[PulseCheck, ...]
    require_pq: bool = False
    check_pq: bool = True
    records: bool = True


def pq_key_lookup(
    source: Source, certificates: Callable[[bytes], TrustedCertificate | None]
) -> Callable[[bytes], PqKey | None]:
    """Find PQ key documents on ``source`` by keyId, checked against their certificate.

    None when the site has no such document; a document that is malformed or
    not vouched for raises (``PulseFormatError`` / ``SignatureError``), every time.
    """
    cache: dict[bytes, PqKey | Exception | None] = {}

    def lookup(kid: bytes) -> PqKey | None:
        if kid not in cache:
            try:
                data = source.get(layout.pq_key_key(kid.hex()), max_bytes=MAX_KEY_DOCUMENT_BYTES)
                cache[kid] = None if data is None else parse_key_document(data, certificates)
            except (PulseFormatError, SignatureError, TooLargeError) as exc:
                cache[kid] = exc
        found = cache[kid]
        if isinstance(found, Exception):
            raise found
        return found

    return lookup


def pq_verdict(
    pulse: Pulse,
    cosignature: bytes | None,
    keys: Callable[[bytes], PqKey | None],
    *,
    require: bool,
) -> tuple[str, list[CheckError]]:
    """``("valid" | "missing" | "invalid", failures)`` for a pulse's co-signature
    (``NOT_CHECKED`` is what a replay counts when told not to look at them).

    A missing co-signature is a failure only with ``require``.
    """
    if cosignature is None:
        failures: list[CheckError] = []
        if require:
            failures.append(
                SignatureError(
                    "pq signature", pulse_index=pulse.pulse_index, detail="no co-signature"
                )
            )
        return "missing", failures
    try:
        check_cosignature(pulse, cosignature, keys)
    except SignatureError as exc:
        return "invalid", [exc]
    except (PulseFormatError, TooLargeError) as exc:
        return "invalid", [
            SignatureError("pq signature", pulse_index=pulse.pulse_index, detail=str(exc))
        ]
    return "valid", []


def _check_slot(
    verifier: ChainVerifier,
    slot: Slot,
    chain: int,
    pq_keys: Callable[[bytes], PqKey | None] | None = None,
    require_pq: bool = False,
) -> None:
    index = slot.index
    if slot.error is not None or slot.pulse is None:
        verifier.report.fail([ChainError("format", pulse_index=index, detail=slot.error or "")])
        return
    pulse = slot.pulse
    if (pulse.chain_index, pulse.pulse_index) != (chain, index):
        verifier.report.fail(
            [
                ChainError(
                    "location",
                    pulse_index=index,
                    detail="pulse is stored under another chain/index",
                    expected=f"{chain}/{index}",
                    actual=f"{pulse.chain_index}/{pulse.pulse_index}",
                )
            ]
        )
        return
    verifier.add(pulse)
    if pq_keys is not None:
        counts = verifier.report.pq_signatures
        verdict, pq_failures = pq_verdict(pulse, slot.cosignature, pq_keys, require=require_pq)
        counts[verdict] = counts.get(verdict, 0) + 1
        verifier.report.fail(pq_failures)
    # else: counted as NOT_CHECKED, all at once, by _check_segment
    if slot.entropy_error is not None:
        verifier.report.fail(
            [ChainError("entropy record", pulse_index=index, detail=slot.entropy_error)]
        )
    elif slot.entropy is not None:
        kind, failures = entropy_verdict(pulse, slot.entropy)
        if kind is not None:
            verifier.count_source(kind)
        else:
            verifier.report.fail(failures)


def _check_segment(task: _Task, tick: Callable[[int], None] | None = None) -> Segment:
    """Check one segment; ``tick(n)``: the first n pulses are dealt with."""
    certificates = certificate_lookup(task.source)
    verifier = ChainVerifier.for_segment(certificates, task.extra_checks)
    pq_keys = pq_key_lookup(task.source, certificates) if task.check_pq else None
    items = read_chain(
        task.source,
        task.chain,
        task.first,
        task.last,
        day_hint=task.day_hint,
        archives=task.archives,
        cosignatures=task.check_pq,
        records=task.records,
    )
    for item in items:
        if isinstance(item, ArchiveProblem):
            verifier.report.fail(
                [ChainError("archive", pulse_index=item.index, detail=item.detail)]
            )
            continue
        if item.missing:
            verifier.missing(item.index, item.index)
        else:
            _check_slot(verifier, item, task.chain, pq_keys, task.require_pq)
        if tick is not None and item.index % 512 == 0:
            tick(item.index - task.first + 1)
    if pq_keys is None and verifier.report.pulses_checked:
        verifier.report.pq_signatures[NOT_CHECKED] = verifier.report.pulses_checked
    return verifier.segment()


def _check_segment_in_worker(task: _Task) -> Segment:
    """``_check_segment`` in a worker process; errors cross back as ``FetchError``
    (``PulseFormatError`` does not pickle)."""
    try:
        return _check_segment(task)
    except PulseFormatError as exc:
        raise FetchError(f"{task.source.describe()}: {exc}") from None


def _time_of(source: Source, chain: int, index: int) -> int | None:
    """The timeStamp (ms) of pulse ``index``, if the site has it well-formed and in place."""
    try:
        data = source.get(layout.pulse_key(chain, index), max_bytes=MAX_PULSE_BYTES)
        pulse = None if data is None else parse_pulse(data)
    except (TooLargeError, PulseFormatError):
        return None
    if pulse is None or (pulse.chain_index, pulse.pulse_index) != (chain, index):
        return None
    return pulse.time_ms


def plan_segments(
    source: Source,
    tip: Pulse,
    first: int,
    last: int,
    *,
    archives: bool = True,
    extra_checks: tuple[PulseCheck, ...] = (),
    require_pq: bool = False,
    check_pq: bool = True,
    records: bool = True,
) -> list[_Task]:
    """Cut ``first``..``last`` of ``tip``'s chain into segments of whole days.

    Day boundaries are predicted from pulse ``first``'s time (one GET) and the
    period, as if there were no gaps; after a gap a segment starts a little
    inside a day, which costs reading part of an archive twice, never
    correctness. Without ``archives`` days do not matter and pulse ``first`` is
    not fetched for its time.
    """
    chain, period = tip.chain_index, tip.period
    start = _time_of(source, chain, first) if archives else None
    per_day = max(1, DAY_MS // period)
    days = -(-SEGMENT_PULSES // per_day)
    tasks = []
    lo = first
    day = layout.day_of(start) if start is not None else None
    while lo <= last:
        if day is None or start is None:
            hi = lo + days * per_day - 1
            next_day = None
        else:
            next_day = day + timedelta(days=days)
            hi = max(lo, first + -(-(layout.day_start_ms(next_day) - start) // period) - 1)
        hi = min(hi, last)
        tasks.append(
            _Task(source, chain, lo, hi, day, archives, extra_checks, require_pq, check_pq, records)
        )
        lo, day = hi + 1, next_day
    return tasks


def _segments(
    tasks: list[_Task], jobs: int, tick: Callable[[int, int], None] | None
) -> Iterator[Segment]:
    """The checked segments, in order: here, or in ``jobs`` worker processes."""
    if jobs <= 1 or len(tasks) <= 1:
        for i, task in enumerate(tasks):
            yield _check_segment(task, None if tick is None else functools.partial(tick, i))
        return
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)),
        mp_context=_worker_context(),
        initializer=_ignore_interrupts,
    )
    try:
        yield from pool.map(_check_segment_in_worker, tasks)
    except BrokenProcessPool as exc:
        raise FetchError(f"a worker process stopped before finishing its pulses ({exc})") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_context() -> multiprocessing.context.BaseContext:
    """How worker processes start: forked where the platform forks and this process
    runs no other thread (the command line), so they need not import everything
    again (~0.2 s each); spawned otherwise, the one way that is safe everywhere."""
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the parent, which stops them cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _no_certificate(certificate_id: bytes) -> TrustedCertificate | None:
    return None  # joining segments checks relations only


def replay_chain(
    source: Source,
    *,
    chain: int | None = None,
    first: int = 1,
    last: int | None = None,
    progress: Progress | None = None,
    jobs: int = 1,
    archives: bool = True,
    extra_checks: tuple[PulseCheck, ...] = (),
    require_pq: bool = False,
    check_pq: bool = True,
    records: bool = True,
    start: ChainVerifier | None = None,
    checkpoint: Callable[[ChainVerifier, int], None] | None = None,
) -> ChainReport:
    """Fetch and check pulses ``first``..``last`` of ``chain`` (default: the latest chain,
    to its last pulse), from daily archives where the site has them (``archives``).

    ``jobs`` > 1 checks segments in that many worker processes (``source`` and
    ``extra_checks`` must pickle); the report is the same. Missing pulses are
    reported as missing, malformed ones as failures. Co-signatures are checked
    where present and counted (valid / invalid / missing); ``require_pq`` makes
    a missing one a failure. Without ``check_pq`` they are neither fetched nor
    checked, and counted as ``NOT_CHECKED``. Without ``records`` no entropy record
    is fetched (a NIST site has none). ``start``: the verifier of the pulses before
    ``first``, to continue (``resume.rebuild``); ``checkpoint(verifier, done)`` is
    called after each segment, pulses up to ``done`` joined. Raises ``FetchError`` when
    the site cannot be read, ``ValueError`` for a ``jobs`` out of 1..64 or
    ``require_pq`` without ``check_pq``.
    """
    if not 1 <= jobs <= MAX_JOBS:
        raise ValueError(f"jobs must be 1..{MAX_JOBS}, got {jobs}")
    if require_pq and not check_pq:
        raise ValueError("require_pq needs check_pq")
    tip = chain_tip(source, chain)
    last = tip.pulse_index if last is None else last
    joined = ChainVerifier(certificates=_no_certificate) if start is None else start
    if first > last:
        return joined.report
    tasks = plan_segments(
        source,
        tip,
        first,
        last,
        archives=archives,
        extra_checks=extra_checks,
        require_pq=require_pq,
        check_pq=check_pq,
        records=records,
    )
    total = last - first + 1

    def tick(i: int, n: int) -> None:
        if progress is not None:
            progress(tasks[i].first - first + n, total)

    for task, segment in zip(tasks, _segments(tasks, jobs, tick), strict=True):
        joined.join(segment)
        if checkpoint is not None:
            checkpoint(joined, task.last)
        if progress is not None:
            progress(task.last - first + 1, total)
    return joined.report


def report_as_dict(report: ChainReport) -> dict[str, Any]:
    """The report as a JSON-able dict (what ``--json`` prints)."""
    return {
        "ok": report.ok,
        "pulsesChecked": report.pulses_checked,
        "firstIndex": report.first_index,
        "lastIndex": report.last_index,
        "gaps": report.gaps,
        "certificateChanges": report.certificate_changes,
        "signaturesUnverifiable": report.signatures_unverifiable,
        "missingCount": report.missing_count,
        "missing": [list(r) for r in report.missing],
        "sourceKinds": report.source_kinds,
        "outputVariants": report.variants,
        "pqSignatures": report.pq_signatures,
        "failureCount": report.failure_count,
        "failures": [failure_as_dict(f) for f in report.failures],
    }


def report_as_json(report: ChainReport) -> str:
    """The report as JSON text (for ``--json``)."""
    return json.dumps(report_as_dict(report), indent=2)


def failure_as_dict(f: CheckError) -> dict[str, object]:
    """One failed check as a JSON-able dict."""
    return {
        "pulseIndex": f.pulse_index,
        "check": f.check,
        "expected": f.expected,
        "actual": f.actual,
        "detail": f.detail,
    }
