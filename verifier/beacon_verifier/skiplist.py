"""Proving with a few pulses that an older pulse is an ancestor of a newer one.

Each pulse signs the outputValue of the previous pulse and of the first pulse of
the hour, day, month and year that contain the previous pulse (``docs/format.md``,
"Links"). From NEWER back to OLDER, ``skip_path`` follows at each step the link
that lands closest to OLDER without passing it: a year's worth of pulses takes
at most about 130 steps (years, then months, days, hours, then single pulses).

A link names its target by outputValue only; the target's index is read from
the link's ``uri`` (not signed, so only a hint) and the pulse fetched from that
index must have that outputValue, which makes the step as strong as the
signature over the link. ``previous`` always targets the index before. A link
whose uri names nothing usable is not followed.

Every pulse on the path is checked by the one core (``core.check_pulse``, through
``check``: by default with its certificate only; the command line gives OLDER and
NEWER all the evidence the site has), and every step checked: the link value,
the chain, and for ``previous`` steps every relation of consecutive pulses
(``checks.check_pair``). The path stops at the first step that does not hold.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from beacon_verifier import layout
from beacon_verifier.chain import CertificateLookup
from beacon_verifier.checks import SKIP_LINK_TYPES, TrustedCertificate, check_pair
from beacon_verifier.core import Evidence, Verdict, check_pulse
from beacon_verifier.errors import ChainError, CheckError, FetchError, PulseFormatError
from beacon_verifier.fetch import Source
from beacon_verifier.format import MAX_PULSE_BYTES, Pulse, parse_pulse

__all__ = ["SkipPath", "Step", "choose_link", "link_targets", "skip_path"]

_LINK_URI = re.compile(r"/beacon/2\.0/chain/([1-9][0-9]{0,19})/pulse/([1-9][0-9]{0,19})\Z")


@dataclass(frozen=True, slots=True)
class Step:
    """A pulse on the path, and the link of the pulse before it that led here (None: NEWER)."""

    pulse: Pulse
    via: str | None


@dataclass(frozen=True, slots=True)
class SkipPath:
    """The path from NEWER back to OLDER, and what checking it found."""

    chain: int
    older: int
    newer: int
    steps: tuple[Step, ...]
    failures: tuple[CheckError, ...]
    signatures_unverifiable: int
    verdicts: tuple[Verdict, ...] = ()

    @property
    def not_checked(self) -> dict[str, int]:
        """What the core could not check on the path's pulses, by reason (the
        predecessor of each step but the last is the next step, checked by the path)."""
        counts: dict[str, int] = {}
        for verdict in self.verdicts:
            for reason in verdict.not_checked:
                if reason.startswith("predecessor") and verdict.pulse_index != self.older:
                    continue
                counts[reason] = counts.get(reason, 0) + 1
        return counts

    @property
    def complete(self) -> bool:
        """The path reaches OLDER."""
        return bool(self.steps) and self.steps[-1].pulse.pulse_index == self.older

    @property
    def ok(self) -> bool:
        return self.complete and not self.failures and not self.signatures_unverifiable


def link_targets(pulse: Pulse) -> dict[str, int | None]:
    """The pulse index each link of ``pulse`` points to: ``previous`` by definition,
    the others as their uri names them (None when it names no earlier pulse of the chain)."""
    targets: dict[str, int | None] = {"previous": pulse.pulse_index - 1}
    for link in pulse.list_values[1:]:
        match = _LINK_URI.search(link.uri) if link.uri else None
        index = None
        if match and int(match[1]) == pulse.chain_index and int(match[2]) < pulse.pulse_index:
            index = int(match[2])
        targets[link.type] = index
    return targets


def choose_link(targets: Mapping[str, int | None], older: int) -> tuple[str, int]:
    """The link that lands closest to ``older`` without passing it: (type, target index).

    ``targets`` must include ``previous``, at or after ``older``.
    """
    previous = targets["previous"]
    assert previous is not None and previous >= older
    best = ("previous", previous)
    for link_type in SKIP_LINK_TYPES:
        target = targets.get(link_type)
        if target is not None and older <= target < best[1]:
            best = (link_type, target)
    return best


def _fetch(source: Source, chain: int, index: int, why: str) -> Pulse:
    key = layout.pulse_key(chain, index)
    data = source.get(key, max_bytes=MAX_PULSE_BYTES)
    if data is None:
        raise FetchError(f"{source.describe()}: {key} ({why}) is missing")
    try:
        return parse_pulse(data)
    except PulseFormatError as exc:
        raise PulseFormatError(exc.field, f"{exc.reason} (in {key}, {why})") from None


def skip_path(
    source: Source,
    chain: int,
    older: int,
    newer: int,
    certificates: CertificateLookup,
    check: Callable[[Pulse], Verdict] | None = None,
) -> SkipPath:
    """Fetch and check the skip-list path from pulse ``newer`` back to pulse ``older``.

    ``check`` gives each pulse on the path its verdict (default: the core with the
    pulse's certificate as the only evidence).

    Fetches only the pulses on the path. Raises ``ValueError`` unless
    1 <= older < newer; ``FetchError`` when a pulse on the path cannot be had;
    ``PulseFormatError`` when one is malformed (naming it).
    """
    if not 1 <= older < newer:
        raise ValueError(f"need 1 <= OLDER < NEWER, got {older} and {newer}")
    cache: dict[bytes, TrustedCertificate | None] = {}
    failures: list[CheckError] = []
    verdicts: list[Verdict] = []

    def with_certificate(pulse: Pulse) -> Verdict:
        if pulse.certificate_id not in cache:
            cache[pulse.certificate_id] = certificates(pulse.certificate_id)
        return check_pulse(Evidence(pulse, certificate=cache[pulse.certificate_id]))

    def verify(pulse: Pulse) -> None:
        verdict = (check or with_certificate)(pulse)
        verdicts.append(verdict)
        failures.extend(verdict.failures)

    current = _fetch(source, chain, newer, "NEWER")
    steps = [Step(current, None)]
    if (current.chain_index, current.pulse_index) != (chain, newer):
        failures.append(_misplaced(current, chain, newer))
    else:
        verify(current)
    while not failures and current.pulse_index > older:
        link_type, target = choose_link(link_targets(current), older)
        found = _fetch(
            source, chain, target, f"the {link_type} link of pulse {current.pulse_index}"
        )
        steps.append(Step(found, link_type))
        failures.extend(_check_step(current, link_type, found, chain, target))
        if not failures:
            verify(found)
        current = found
    return SkipPath(
        chain=chain,
        older=older,
        newer=newer,
        steps=tuple(steps),
        failures=tuple(failures),
        signatures_unverifiable=sum(v.signature == "unverifiable" for v in verdicts),
        verdicts=tuple(verdicts),
    )


def _misplaced(pulse: Pulse, chain: int, index: int) -> ChainError:
    return ChainError(
        "location",
        pulse_index=index,
        detail="pulse is stored under another chain/index",
        expected=f"{chain}/{index}",
        actual=f"{pulse.chain_index}/{pulse.pulse_index}",
    )


def _check_step(
    current: Pulse, link_type: str, found: Pulse, chain: int, target: int
) -> list[CheckError]:
    """The failures of the step from ``current`` along ``link_type`` to ``found``."""
    if (found.chain_index, found.pulse_index) != (chain, target):
        return [_misplaced(found, chain, target)]
    if current.link(link_type) != found.output_value:
        return [
            ChainError(
                f"{link_type} link",
                pulse_index=current.pulse_index,
                detail=f"does not hold the outputValue of pulse {target}, which its uri names",
                expected=found.output_value.hex().upper()[:16] + "…",
                actual=current.link(link_type).hex().upper()[:16] + "…",
            )
        ]
    if link_type == "previous":
        return list(check_pair(found, current))
    if found.time_ms >= current.time_ms:
        return [
            ChainError(
                "timeStamp order",
                pulse_index=current.pulse_index,
                detail=f"its {link_type} link points to a pulse that is not earlier",
                expected=f"before {current.time_stamp}",
                actual=found.time_stamp,
            )
        ]
    return []
