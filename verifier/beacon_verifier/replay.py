"""Replaying a chain from a site: segments, worker processes, and settling what
only the whole replay knows.

Reading is ``chainread.read_chain``; checking is ``chain.ChainVerifier`` (each
pulse through the one core, ``core.check_pulse``) under the site's descriptor
(``descriptor``): what the site promises is required, pulse by pulse. The range
is cut into segments of about a day (aligned to the days of the archives), each
checked on its own, here or in ``jobs`` worker processes, then joined in order:
the join checks what a segment cannot see alone (its first pulse against the one
before, skip links that point before it), so the report is the same for any
``jobs``. Memory holds a segment's pulse at a time, a piece of one archive, one
raw batch, and the report, whatever the length of the chain.

A worker is handed a run of consecutive segments (``_runs``: long ones first,
shorter towards the end so that workers finish together), and a source that
reads archives ahead (``prefetch.PipelinedSource.stream_ahead``) is told the
run's archives in order: the next day's archive is fetched while the current
day is checked (at most ``prefetch.STREAMS_AHEAD`` ahead). With archives, the
last run (the day that has none yet, read pulse by pulse) is started first, so
that its round trips overlap the other workers' checks. The segments of a run
come back together, so with ``jobs`` > 1 a checkpoint may cover several at once
(and a run cut short is checked again on resume).

Before any walk the head is checked against the chain's timestamps
(``siteread.check_head``): a head claiming more pulses than periods is refused
in one line. At the end, raw batches cited but not on the site are failures
where the site promises raw data, except the batch the last pulse still draws
from (published once used up), reported as not checked.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import date, timedelta

from beacon_verifier import layout
from beacon_verifier.archive import MAX_ARCHIVE_BYTES
from beacon_verifier.batch import cited_batch
from beacon_verifier.chain import ChainReport, ChainVerifier, Segment
from beacon_verifier.chainread import ArchiveProblem, Clock, Slot, read_chain
from beacon_verifier.checks import TrustedCertificate
from beacon_verifier.core import ANY, NOT_FETCHED, Evidence, Policy
from beacon_verifier.descriptor import MAX_DESCRIPTOR_BYTES, NIST_SITE, SiteDescriptor
from beacon_verifier.errors import ChainError, FetchError, PulseFormatError
from beacon_verifier.fetch import Source
from beacon_verifier.format import MAX_PULSE_BYTES, ZERO_HASH, Pulse
from beacon_verifier.siteread import (
    certificate_lookup,
    chain_tip,
    check_head,
    fetch_pulse,
    pq_key_lookup,
    read_batch,
    read_descriptor,
)

__all__ = ["MAX_JOBS", "Progress", "plan_segments", "replay_chain"]

#: ``progress(done, total)``: pulses of the range dealt with so far.
Progress = Callable[[int, int], None]

DAY_MS = 86_400_000
#: A segment holds whole days and at least this many pulses (when the range has them).
SEGMENT_PULSES = 1024
#: The most segments handed to a worker at once (a run).
RUN_SEGMENTS = 8
MAX_JOBS = 64
#: What the last pulse's unpublished batch is reported as.
IN_USE = "raw batch: the last pulse's batch is not published yet (published once used up)"


@dataclass(frozen=True, slots=True)
class _Task:
    """One segment to check: pulses ``first``..``last`` of ``chain`` (pickles)."""

    source: Source
    chain: int
    first: int
    last: int
    day_hint: date | None
    archives: bool
    policy: Policy = ANY
    check_pq: bool = True
    descriptor: SiteDescriptor = NIST_SITE
    records: bool = True
    #: The day of pulse ``last``, as predicted from the period (None: not known).
    last_day: date | None = None
    #: The certificate the chain's last pulse names: most likely the one needed.
    certificate_id: bytes = b""
    #: Where the chain mixes drand rounds: its last pulse's (index, time, period), to
    #: read the round records of pulses read one by one ahead (``read_chain``).
    clock: Clock | None = None

    def archive_keys(self) -> Iterator[tuple[str, int]]:
        """The archives ``read_chain`` will stream for this segment if there are no
        gaps, in its order, with their size cap."""
        if not self.archives or self.day_hint is None:
            return
        day, end = self.day_hint, self.last_day or self.day_hint
        while day <= end:
            yield layout.archive_key(day), MAX_ARCHIVE_BYTES
            if self.check_pq:
                yield layout.pq_archive_key(day), MAX_ARCHIVE_BYTES
            day += timedelta(days=1)


class _Batches:
    """The raw batch last read, by id: records draw from one batch after another."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.batch_id: str | None = None
        self.data: bytes | None = None

    def get(self, record: bytes) -> bytes | None:
        batch_id = _batch_id(record)
        if batch_id is None:
            return None
        if batch_id != self.batch_id:
            self.batch_id, self.data = batch_id, read_batch(self.source, batch_id)
        return self.data


def _batch_id(record: bytes) -> str | None:
    if b'"batchSha512"' not in record:
        return None
    try:
        return cited_batch(record)
    except PulseFormatError:
        return None  # the core reports it


def _check_slot(
    verifier: ChainVerifier,
    slot: Slot,
    task: _Task,
    pq_keys: Callable[[bytes], object] | None,
    batches: _Batches,
) -> None:
    index, chain = slot.index, task.chain
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
    evidence = Evidence(
        pulse,
        entropy=slot.entropy if task.records else NOT_FETCHED,
        entropy_error=slot.entropy_error,
        external=slot.external,
    )
    if pq_keys is not None:
        evidence.cosignature = slot.cosignature
        evidence.pq_keys = pq_keys  # type: ignore[assignment]
    if slot.entropy is not None:
        evidence.raw_batch = batches.get(slot.entropy)
    verifier.add(pulse, evidence, task.descriptor.policy_for(chain, index, task.policy))


def _check_segment(task: _Task, tick: Callable[[int], None] | None = None) -> Segment:
    """Check one segment; ``tick(n)``: the first n pulses are dealt with."""
    certificates = certificate_lookup(task.source)
    verifier = ChainVerifier.for_segment(certificates)
    pq_keys = pq_key_lookup(task.source, certificates) if task.check_pq else None
    batches = _Batches(task.source)
    items = read_chain(
        task.source,
        task.chain,
        task.first,
        task.last,
        day_hint=task.day_hint,
        archives=task.archives,
        cosignatures=task.check_pq,
        records=task.records,
        clock=task.clock,
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
            _check_slot(verifier, item, task, pq_keys, batches)
        if tick is not None and item.index % 512 == 0:
            tick(item.index - task.first + 1)
    return verifier.segment()


def _check_run(
    tasks: Sequence[_Task], tick: Callable[[int, int], None] | None = None
) -> Iterator[Segment]:
    """Check consecutive segments in order, the archives of the next days read ahead
    (where the source can) while a day is checked; ``tick(i, n)``: the first n
    pulses of ``tasks[i]`` are dealt with."""
    if not tasks:
        return
    source = tasks[0].source
    keep_ahead = getattr(source, "keep_ahead", None)
    if keep_ahead is not None and tasks[0].certificate_id:
        keep_ahead(layout.certificate_key(tasks[0].certificate_id.hex()))
    stream_ahead = getattr(source, "stream_ahead", None)
    if stream_ahead is not None:
        stream_ahead(key for task in tasks for key in task.archive_keys())
    try:
        for i, task in enumerate(tasks):
            yield _check_segment(task, None if tick is None else functools.partial(tick, i))
    finally:
        if stream_ahead is not None:
            stream_ahead(())


def _check_run_in_worker(tasks: tuple[_Task, ...]) -> list[Segment]:
    """``_check_run`` in a worker process; errors cross back as ``FetchError``
    (``PulseFormatError`` does not pickle)."""
    try:
        return list(_check_run(tasks))
    except PulseFormatError as exc:
        raise FetchError(f"{tasks[0].source.describe()}: {exc}") from None


def _runs(tasks: list[_Task], jobs: int) -> list[tuple[_Task, ...]]:
    """``tasks`` cut into runs of consecutive segments for ``jobs`` workers: each run
    a share of what is left (``RUN_SEGMENTS`` at most), so runs shrink towards the
    end and the workers finish close together."""
    runs = []
    i = 0
    while i < len(tasks):
        size = max(1, min(RUN_SEGMENTS, -(-(len(tasks) - i) // (2 * jobs))))
        runs.append(tuple(tasks[i : i + size]))
        i += size
    return runs


def plan_segments(
    source: Source,
    tip: Pulse,
    first: int,
    last: int,
    *,
    archives: bool = True,
    policy: Policy = ANY,
    check_pq: bool = True,
    descriptor: SiteDescriptor = NIST_SITE,
    records: bool = True,
    first_pulse: Pulse | None = None,
) -> list[_Task]:
    """Cut ``first``..``last`` of ``tip``'s chain into segments of whole days.

    Day boundaries are predicted from pulse ``first``'s time (one GET, unless
    ``first_pulse`` is that pulse, as ``fetch_pulse`` gives it) and the period,
    as if there were no gaps; after a gap a segment starts a little inside a day,
    which costs reading part of an archive twice, never correctness. Without
    ``archives`` days do not matter and pulse ``first`` is not fetched for its time.
    """
    chain, period = tip.chain_index, tip.period
    found = None
    if archives:
        found = first_pulse if first_pulse is not None else fetch_pulse(source, chain, first)
    start = None if found is None else found.time_ms
    clock = None
    if descriptor.external is not None and tip.external.source_id != ZERO_HASH:
        clock = (tip.pulse_index, tip.time_ms, period)  # round records to read ahead
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
        last_day = None
        if day is not None and start is not None:
            last_day = max(day, layout.day_of(start + (hi - first) * period))
        tasks.append(
            _Task(
                source,
                chain,
                lo,
                hi,
                day,
                archives,
                policy,
                check_pq,
                descriptor,
                records,
                last_day,
                tip.certificate_id,
                clock,
            )
        )
        lo, day = hi + 1, next_day
    return tasks


def _segments(
    tasks: list[_Task], jobs: int, tick: Callable[[int, int], None] | None
) -> Iterator[Segment]:
    """The checked segments, in order: here, or in ``jobs`` worker processes, each
    handed runs of consecutive segments (``_runs``)."""
    if jobs <= 1 or len(tasks) <= 1:
        yield from _check_run(tasks, tick)
        return
    rest = getattr(tasks[0].source, "rest", None)
    if rest is not None:  # its fetch threads stopped, this process may fork
        rest()
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)),
        mp_context=_worker_context(),
        initializer=_ignore_interrupts,
    )
    runs = _runs(tasks, jobs)
    # With archives, the last run holds the day that has none yet, read pulse by pulse:
    # more waiting on round trips than checking. Started first, its waits overlap the
    # other workers' checks instead of ending the audit.
    order = [len(runs) - 1, *range(len(runs) - 1)] if tasks[-1].archives else range(len(runs))
    try:
        futures = {i: pool.submit(_check_run_in_worker, runs[i]) for i in order}
        for i in range(len(runs)):
            yield from futures.pop(i).result()
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
    policy: Policy = ANY,
    check_pq: bool = True,
    descriptor: SiteDescriptor | None = None,
    start: ChainVerifier | None = None,
    checkpoint: Callable[[ChainVerifier, int], None] | None = None,
) -> ChainReport:
    """Fetch and check pulses ``first``..``last`` of ``chain`` (default: the latest chain,
    to its last pulse), from daily archives where the site has them (``archives``).

    Each pulse is held to ``policy`` and to what the site's descriptor promises
    (``descriptor``; default: the site's own ``site.json``, or none for a NIST
    site). ``jobs`` > 1 checks segments in that many worker processes
    (``source`` must pickle); the report is the same. Missing pulses are
    reported as missing, malformed ones as failures. Co-signatures are checked
    where present and counted (valid / invalid / missing); without ``check_pq``
    they are neither fetched nor checked (counted as "not checked", even where
    the site promises them). Only what the site promises is fetched (no probing):
    entropy records where it has a descriptor, co-signatures where it promises
    them, so a NIST site costs one GET per pulse (plus its certificates and one
    per day for an archive). ``start``: the verifier of the pulses before
    ``first``, to continue (``resume.rebuild``); ``checkpoint(verifier, done)`` is
    called after each segment, pulses up to ``done`` joined. Raises ``FetchError``
    when the site cannot be read, ``BadHeadError`` when its head is impossible,
    ``ValueError`` for a ``jobs`` out of 1..64 or ``policy.require_pq`` without
    ``check_pq``.
    """
    if not 1 <= jobs <= MAX_JOBS:
        raise ValueError(f"jobs must be 1..{MAX_JOBS}, got {jobs}")
    if policy.require_pq and not check_pq:
        raise ValueError("require_pq needs check_pq")
    tip = chain_tip(source, chain)
    _read_ahead_start(source, tip.chain_index, first, descriptor, archives)
    pulse_one = check_head(source, tip)
    if descriptor is None:
        descriptor = read_descriptor(source)
    if not check_pq:
        descriptor = dataclasses.replace(descriptor, cosignatures=None)
    # Fetch what the site promises, or what the policy requires; never probe.
    archives = archives and descriptor.daily_archives
    records, check_pq = descriptor.fetches(policy, check_pq)
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
        policy=policy,
        check_pq=check_pq,
        descriptor=descriptor,
        records=records,
        first_pulse=pulse_one if first == 1 and pulse_one is not None else None,
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
    _settle_batches(joined.report, tip.chain_index, descriptor)
    return joined.report


def _read_ahead_start(
    source: Source, chain: int, first: int, descriptor: SiteDescriptor | None, archives: bool
) -> None:
    """Put the GETs before the walk in flight together, on a source that reads ahead:
    pulse 1 (``check_head``), the descriptor when not given, pulse ``first`` (its time
    places the segments on days) when it will be read."""
    ahead = getattr(source, "read_ahead_more", None)
    if ahead is None:
        return
    keys = [(layout.pulse_key(chain, 1), MAX_PULSE_BYTES)]
    if descriptor is None:
        keys.append((layout.SITE_KEY, MAX_DESCRIPTOR_BYTES))
    if first != 1 and archives and (descriptor is None or descriptor.daily_archives):
        keys.append((layout.pulse_key(chain, first), MAX_PULSE_BYTES))
    ahead(keys)


def _settle_batches(report: ChainReport, chain: int, descriptor: SiteDescriptor) -> None:
    """Raw batches cited but not on the site: a failure where the site promises raw
    data, unless it is the batch the last pulse checked draws from (still in use)."""
    unpublished, report.unpublished_batches = report.unpublished_batches, []
    for n, (batch_id, lo, hi) in enumerate(unpublished):
        in_use = n == len(unpublished) - 1 and hi == report.last_index
        if in_use:
            report.not_checked[IN_USE] = report.not_checked.get(IN_USE, 0) + 1
        elif descriptor.promises_raw(chain, lo):
            where = f"pulses {lo}..{hi}" if hi > lo else f"pulse {lo}"
            report.fail(
                [
                    ChainError(
                        "raw batch",
                        pulse_index=lo,
                        detail=f"batch {batch_id}, used up by {where}, is not on the site, "
                        "which promises raw data",
                    )
                ]
            )
        else:
            reason = "raw batch: not on the site (which does not promise raw data)"
            report.not_checked[reason] = report.not_checked.get(reason, 0) + 1
