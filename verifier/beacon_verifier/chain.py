"""Replaying one chain pulse by pulse: ``ChainVerifier`` and its ``ChainReport``.

Each pulse is checked by the one core (``core.check_pulse``) with the pulse
before it as its predecessor; on top, the chain checks what only a run of pulses
shows: the hour/day/month/year skip links (``checks.SkipListTracker``) and that
indexes only go up.

A chain can be checked in one pass (``ChainVerifier.add`` for every pulse) or in
contiguous segments checked independently, in other processes, and joined in
order (``ChainVerifier.for_segment`` / ``segment`` / ``join``): the joined report
holds the same failures as one pass, ordered by pulse index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from beacon_verifier.checks import SkipListTracker, TrustedCertificate, check_pair, failure_order
from beacon_verifier.core import ANY, MISSING, Evidence, Policy, Verdict, check_pulse
from beacon_verifier.errors import ChainError, CheckError
from beacon_verifier.format import STATUS_CERTIFICATE_CHANGED, STATUS_GAP, OutputVariant, Pulse

__all__ = ["MAX_LISTED", "CertificateLookup", "ChainReport", "ChainVerifier", "Segment"]

CertificateLookup = Callable[[bytes], TrustedCertificate | None]
_UNKNOWN = object()  # a certificateId not looked up yet
_VARIANT_KEYS = {variant: variant.value for variant in OutputVariant}  # Enum.value is slow

#: Failures and missing ranges a report lists in full; beyond these it only counts,
#: so that memory stays bounded on a chain of any length, however broken.
MAX_LISTED = 100_000
#: Distinct "not checked" reasons and unpublished batches a report keeps.
MAX_REASONS = 1000


def _count(counts: dict[str, int], key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


@dataclass(slots=True)
class ChainReport:
    """What a chain replay found.

    ``failures`` and ``missing`` list the first ``MAX_LISTED`` of each;
    ``failure_count`` and ``missing_count`` (pulses) count them all.
    ``not_checked`` counts, by reason, what could not be checked.
    ``unpublished_batches``: raw batches cited by records but not on the site,
    as (batch id, first pulse, last pulse) (the replay settles them at its end).
    """

    pulses_checked: int = 0
    signatures_unverifiable: int = 0
    gaps: int = 0
    certificate_changes: int = 0
    missing: list[tuple[int, int]] = field(default_factory=list)  # (first, last) index ranges
    source_kinds: dict[str, int] = field(default_factory=dict)
    variants: dict[str, int] = field(default_factory=dict)
    entropy_records: dict[str, int] = field(default_factory=dict)  # valid / invalid / missing
    pq_signatures: dict[str, int] = field(default_factory=dict)  # valid / invalid / missing
    externals: dict[str, int] = field(default_factory=dict)
    raw_batches: dict[str, int] = field(default_factory=dict)  # pulses, by verdict
    not_checked: dict[str, int] = field(default_factory=dict)
    unpublished_batches: list[tuple[str, int, int]] = field(default_factory=list)
    failures: list[CheckError] = field(default_factory=list)
    first_index: int | None = None
    last_index: int | None = None
    failure_count: int = 0
    missing_count: int = 0

    @property
    def ok(self) -> bool:
        return (
            not self.failure_count and not self.missing_count and not (self.signatures_unverifiable)
        )

    def fail(self, failures: Iterable[CheckError]) -> None:
        """Record failed checks (listed up to ``MAX_LISTED``, all counted)."""
        for failure in failures:
            self.failure_count += 1
            if len(self.failures) < MAX_LISTED:
                self.failures.append(failure)

    def add_missing(self, first: int, last: int) -> None:
        """Record that pulses ``first``..``last`` could not be had (adjacent ranges merge)."""
        self.missing_count += last - first + 1
        if self.missing and self.missing[-1][1] == first - 1:
            self.missing[-1] = (self.missing[-1][0], last)
        elif len(self.missing) < MAX_LISTED:
            self.missing.append((first, last))

    def unpublished(self, batch_id: str, index: int) -> None:
        """Record that pulse ``index``'s record cites batch ``batch_id``, not on the site."""
        runs = self.unpublished_batches
        if runs and runs[-1][0] == batch_id:
            runs[-1] = (batch_id, runs[-1][1], index)
        elif len(runs) < MAX_REASONS:
            runs.append((batch_id, index, index))

    def merge(self, other: ChainReport, failures: Iterable[CheckError] = ()) -> None:
        """Append ``other``, the report of the pulses after these, and ``failures``
        found between the two, keeping failures in pulse order."""
        self.pulses_checked += other.pulses_checked
        self.signatures_unverifiable += other.signatures_unverifiable
        self.gaps += other.gaps
        self.certificate_changes += other.certificate_changes
        for lo, hi in other.missing:
            self.add_missing(lo, hi)
        self.missing_count += other.missing_count - sum(hi - lo + 1 for lo, hi in other.missing)
        for totals, counts in (
            (self.source_kinds, other.source_kinds),
            (self.variants, other.variants),
            (self.entropy_records, other.entropy_records),
            (self.pq_signatures, other.pq_signatures),
            (self.externals, other.externals),
            (self.raw_batches, other.raw_batches),
            (self.not_checked, other.not_checked),
        ):
            for key, n in counts.items():
                _count(totals, key, n)
        for batch_id, lo, hi in other.unpublished_batches:
            self.unpublished(batch_id, lo)
            self.unpublished(batch_id, hi)
        combined = [*other.failures, *failures]
        combined.sort(key=failure_order)
        self.fail(combined)
        self.failure_count += other.failure_count - len(other.failures)
        if self.first_index is None:
            self.first_index = other.first_index
        if other.last_index is not None:
            self.last_index = other.last_index


@dataclass(frozen=True, slots=True)
class Segment:
    """A contiguous run of a chain checked on its own (``ChainVerifier.for_segment``),
    to be ``join``ed after the pulses before it. Pickles, to cross processes."""

    report: ChainReport
    first: Pulse | None
    skip: SkipListTracker


@dataclass(slots=True)
class ChainVerifier:
    """Replays one chain pulse by pulse, in index order, and accumulates a ``ChainReport``.

    ``certificates`` maps a certificateId to its certificate (None when it
    cannot be found: that pulse's signature is unverifiable, the rest is checked);
    each certificateId is looked up once.
    """

    certificates: CertificateLookup
    report: ChainReport = field(default_factory=ChainReport)
    skip: SkipListTracker = field(default_factory=SkipListTracker)
    first: Pulse | None = None
    _cert_cache: dict[bytes, TrustedCertificate | None] = field(default_factory=dict)

    @classmethod
    def for_segment(cls, certificates: CertificateLookup) -> ChainVerifier:
        """A verifier for pulses that continue a chain checked elsewhere (see ``join``)."""
        return cls(certificates=certificates, skip=SkipListTracker(segment=True))

    def segment(self) -> Segment:
        """What ``join`` needs of this verifier's pulses."""
        return Segment(report=self.report, first=self.first, skip=self.skip)

    def _certificate(self, certificate_id: bytes) -> TrustedCertificate | None:
        cache = self._cert_cache
        found = cache.get(certificate_id, _UNKNOWN)
        if found is _UNKNOWN:
            found = cache[certificate_id] = self.certificates(certificate_id)
        return found  # type: ignore[return-value]

    def missing(self, first: int, last: int) -> None:
        """Note that pulses ``first``..``last`` could not be had."""
        self.report.add_missing(first, last)

    def add(self, pulse: Pulse, evidence: Evidence | None = None, policy: Policy = ANY) -> Verdict:
        """Check ``pulse`` (with ``evidence``, if given: its entropy record, co-signature...)
        through the core, against the pulse added before it, and count the verdict."""
        r = self.report
        if evidence is None:
            evidence = Evidence(pulse)
        evidence.certificate = self._certificate(pulse.certificate_id)
        previous = self.skip.last
        consecutive = (
            previous is not None
            and previous.chain_index == pulse.chain_index
            and pulse.pulse_index == previous.pulse_index + 1
        )
        # Not consecutive: a missing pulse (reported as missing) or a segment's first
        # pulse (its predecessor is checked by ``join``); the core notes it unchecked.
        evidence.predecessor = previous if consecutive else None
        evidence.predecessor_verified = True
        verdict = check_pulse(evidence, policy)
        self._count(verdict)
        failures = verdict.failures
        if consecutive:
            links = self.skip.check(pulse)
            if links:
                failures.extend(links)
        elif previous is not None and previous.chain_index == pulse.chain_index:
            if pulse.pulse_index <= previous.pulse_index:
                failures.append(_not_after(pulse, previous))
        if failures:
            r.fail(failures)
        if pulse.status_code & STATUS_GAP:
            r.gaps += 1
        if pulse.status_code & STATUS_CERTIFICATE_CHANGED:
            r.certificate_changes += 1
        self.skip.advance(pulse)
        r.pulses_checked += 1
        if r.first_index is None:
            r.first_index = pulse.pulse_index
            self.first = pulse
        r.last_index = pulse.pulse_index
        return verdict

    def _count(self, verdict: Verdict) -> None:
        r = self.report
        if verdict.signature == "unverifiable":
            r.signatures_unverifiable += 1
        variant = verdict.output_variant
        if variant is not None:
            _count(r.variants, _VARIANT_KEYS[variant])
        _count(r.entropy_records, verdict.entropy)
        if verdict.entropy_source is not None:
            _count(r.source_kinds, verdict.entropy_source)
        _count(r.pq_signatures, verdict.pq)
        _count(r.externals, verdict.external)
        if verdict.raw_batch_id is not None:
            _count(r.raw_batches, verdict.raw_batch)
            if verdict.raw_batch == MISSING:
                r.unpublished(verdict.raw_batch_id, verdict.pulse_index)
        for reason in verdict.not_checked:
            if reason.startswith(("predecessor", "raw batch")):
                continue  # the chain reports missing pulses; the replay settles batches
            if reason in r.not_checked or len(r.not_checked) < MAX_REASONS:
                _count(r.not_checked, reason)

    def _relations(self, pulse: Pulse) -> list[CheckError]:
        """The failed relations between ``pulse`` and the pulse tracked before it
        (what ``add`` checks through the core and the skip links)."""
        previous = self.skip.last
        if previous is None or previous.chain_index != pulse.chain_index:
            return []
        if pulse.pulse_index == previous.pulse_index + 1:
            failures: list[CheckError] = list(check_pair(previous, pulse))
            failures.extend(self.skip.check(pulse))
            return failures
        if pulse.pulse_index <= previous.pulse_index:
            return [_not_after(pulse, previous)]
        return []

    def join(self, segment: Segment) -> None:
        """Continue with ``segment``: the pulses after those added or joined so far.

        Checks what the segment could not see alone (its first pulse against the
        pulse before it, and the skip links that point before it) and merges its
        report, so that the result is that of ``add``ing its pulses here.
        """
        found: list[CheckError] = []
        first = segment.first
        if first is not None:
            found.extend(self._relations(first))
            self.skip.advance(first)
            found.extend(self.skip.resolve(segment.skip))
            if self.first is None:
                self.first = first
        self.report.merge(segment.report, found)


def _not_after(pulse: Pulse, previous: Pulse) -> ChainError:
    return ChainError(
        "pulseIndex",
        pulse_index=pulse.pulse_index,
        expected=f"greater than {previous.pulse_index}",
        actual=str(pulse.pulse_index),
    )
