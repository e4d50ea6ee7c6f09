"""The I/O of v2 draws (``draw2``): fetch, verify and pick the target pulses.

Called by ``drawcmd`` when a manifest says ``"version": 2``. On the manifest's
own beacon the target is the first pulse at or after pulseTime whose drand
external is valid (checked against ``--drand-info``, default quicknet); the
pulses passed over are listed. Each target's localRandomValue must open the
precommitmentValue of the pulse its ``previous`` link names.
"""

from __future__ import annotations

import time

from beacon_verifier.checks import check_output_value
from beacon_verifier.core import VALID, Policy
from beacon_verifier.draw import check_entrants, manifest_hash, select_winners
from beacon_verifier.draw2 import (
    MAX_SKIPPED,
    Contribution,
    DrawResultV2,
    Skipped,
    check_commitment,
    draw_seed_v2,
    parse_manifest_v2,
)
from beacon_verifier.errors import DrawError, FetchError
from beacon_verifier.external import DrandChain
from beacon_verifier.fetch import Source, open_source
from beacon_verifier.format import Pulse, format_timestamp
from beacon_verifier.siteread import fetch_pulse, latest_pulse

#: ``draw new --version 2`` refuses a target closer than this many periods.
MIN_PERIODS_AHEAD = 2


def check_new_target(source: Source, t_ms: int, now_ms: int | None = None) -> None:
    """Refuse a v2 target less than two periods after now (the next commitment is
    already made; a target that close leaves the operator a choice of pulse)."""
    latest = latest_pulse(source)
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if t_ms < now + MIN_PERIODS_AHEAD * latest.period:
        raise DrawError(
            f"--at {format_timestamp(t_ms)} is less than {MIN_PERIODS_AHEAD} periods "
            f"({MIN_PERIODS_AHEAD * latest.period // 1000} s) after now: pick a later --at"
        )


def _previous(source: Source, pulse: Pulse) -> Pulse:
    """The pulse ``pulse`` links to as previous, authenticated by that link."""
    where = source.describe()
    if pulse.pulse_index == 1:
        raise DrawError(
            f"{where}: pulse {pulse.chain_index}/1 starts a chain: its localRandomValue "
            "opens no earlier commitment"
        )
    before = fetch_pulse(source, pulse.chain_index, pulse.pulse_index - 1)
    if before is None:
        raise FetchError(f"{where}: pulse {pulse.pulse_index - 1} is missing")
    check_output_value(before)
    if before.output_value != pulse.previous:
        raise DrawError(f"{where}: pulse {before.pulse_index} is not pulse {pulse.pulse_index}'s")
    return before


def _next(source: Source, pulse: Pulse) -> Pulse:
    """The pulse after ``pulse`` (checked by the core with its predecessor ``pulse``)."""
    after = fetch_pulse(source, pulse.chain_index, pulse.pulse_index + 1)
    if after is None:
        raise DrawError(
            f"{source.describe()}: pulse {pulse.pulse_index} has no valid external and pulse "
            f"{pulse.pulse_index + 1} is not yet available"
        )
    return after


def _contribution(source: Source, url: str, pulse: Pulse) -> Contribution:
    before = _previous(source, pulse)
    check_commitment(
        pulse.local_random_value,
        before.precommitment_value,
        f"{source.describe()}: pulse {pulse.chain_index}/{pulse.pulse_index}",
    )
    return Contribution(
        beacon=url,
        chain_index=pulse.chain_index,
        pulse_index=pulse.pulse_index,
        time_stamp=pulse.time_stamp,
        local_random_value=pulse.local_random_value,
        external_value=pulse.external.value,
    )


def compute_v2(
    manifest_bytes: bytes,
    entrant_bytes: bytes,
    source_spec: str | None,
    drand: DrandChain,
) -> DrawResultV2:
    """Fetch and verify the target pulses of a v2 draw, skip those without a valid
    external on its own beacon, and draw."""
    from beacon_verifier.drawcmd import check_draw_pulse, target_pulse

    manifest = parse_manifest_v2(manifest_bytes)
    base = manifest.base
    entrants = check_entrants(base, entrant_bytes)
    source = open_source(source_spec or base.beacon)
    policy = Policy(drand=drand)
    pulse, verdict = target_pulse(source, base.chain, base.pulse_time_ms, policy)
    skipped: list[Skipped] = []
    while verdict.external != VALID:
        skipped.append(
            Skipped(
                pulse_index=pulse.pulse_index,
                time_stamp=pulse.time_stamp,
                reason=f"external {verdict.external}",
            )
        )
        if len(skipped) > MAX_SKIPPED:
            raise DrawError(f"{source.describe()}: {MAX_SKIPPED} pulses without a valid external")
        # The next pulse, checked by the core with the one before it as its predecessor.
        previous, pulse = pulse, _next(source, pulse)
        verdict = check_draw_pulse(source, pulse, policy, previous)
    contributions = [_contribution(source, base.beacon, pulse)]
    for ref in base.also:
        other = open_source(ref.beacon)
        contributions.append(
            _contribution(other, ref.beacon, target_pulse(other, ref.chain, base.pulse_time_ms)[0])
        )
    seed = draw_seed_v2(
        manifest_bytes, [(c.local_random_value, c.external_value) for c in contributions]
    )
    return DrawResultV2(
        manifest_hash=manifest_hash(manifest_bytes),
        pulses=tuple(contributions),
        skipped=tuple(skipped),
        winners=tuple(select_winners(seed, entrants, base.winners)),
    )


def print_v2(result: DrawResultV2) -> None:
    print(f"manifest SHA-512 {result.manifest_hash.hex()} (draw v2)")
    for s in result.skipped:
        print(f"pulse {s.pulse_index} at {s.time_stamp}: skipped ({s.reason})")
    for c in result.pulses:
        print(
            f"pulse {c.chain_index}/{c.pulse_index} at {c.time_stamp} of {c.beacon}: verified, "
            f"localRandomValue opens its commitment, external.value {c.external_value.hex()[:16]}…"
        )
    for i, winner in enumerate(result.winners, 1):
        print(f"{i}. {winner if winner.isprintable() else repr(winner)}")
