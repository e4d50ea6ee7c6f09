"""The grinding attack of issue 20, replayed: a signer who picks the next pulse's
commitment at signing time steers a draw seeded by outputValue (v1), and cannot
steer one seeded by localRandomValue and the drand round (v2, randomValue)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from beacon_verifier import external as ext
from beacon_verifier.chain import ChainVerifier
from beacon_verifier.checks import TrustedCertificate
from beacon_verifier.draw import Manifest, draw, entrant_list_bytes, manifest_hash
from beacon_verifier.draw2 import ManifestV2, draw_v2
from beacon_verifier.format import parse_pulse

from beacon.pulse.builder import build_pulse
from beacon.pulse.keys import Signer
from tests.drand_relay import SigningChain

PERIOD_MS = 60_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % PERIOD_MS
ENTRANTS = entrant_list_bytes("\n".join(f"entrant-{i}" for i in range(10)))
WANTED = "entrant-7"
TRIES = 200  # one in ten tries picks WANTED; 0.9**200 < 1e-9 that grinding fails by chance


def _manifests() -> tuple[bytes, bytes]:
    base = Manifest(
        beacon="https://beacon.example",
        chain=1,
        pulse_time_ms=T0 + PERIOD_MS,
        entrants=manifest_hash(ENTRANTS),
        entrant_count=10,
        winners=1,
        label="grinding replay",
    )
    return base.to_bytes(), ManifestV2(base, T0 - 5 * PERIOD_MS).to_bytes()


def test_grinding_steers_output_value_but_not_random_value(
    signer: Signer, cert_lookup: Callable[[bytes], TrustedCertificate | None]
) -> None:
    drand = SigningChain(genesis_time=(T0 - 3_600_000) // 1000, period=60)
    v1, v2 = _manifests()
    lrv1, lrv2 = os.urandom(64), os.urandom(64)
    first = build_pulse(
        None,
        time_ms=T0,
        period_ms=PERIOD_MS,
        local_random_value=lrv1,
        next_local_random_value=lrv2,  # committed now: pulse 2's localRandomValue
        signer=signer,
        base_url="https://beacon.example",
    )
    target_time = T0 + PERIOD_MS
    round_number = drand.chain.round_at(target_time)
    assert round_number is not None
    record = ext.RoundRecord(
        chain_hash=drand.chain.chain_hash,
        round=round_number,
        status_code=0,
        signature=drand.sign(round_number),
    )
    external = ext.external_of(drand.chain, record)

    winners_v1, winners_v2, steered_at = set(), set(), None
    for attempt in range(1, TRIES + 1):
        # The operator's only free input at signing time: the next commitment,
        # from an honest fresh job each try.
        candidate = build_pulse(
            first.head,
            time_ms=target_time,
            period_ms=PERIOD_MS,
            local_random_value=lrv2,
            next_local_random_value=os.urandom(64),
            signer=signer,
            base_url="https://beacon.example",
            external=external,
        )
        pulse = candidate.pulse
        # Every candidate is a valid pulse the verifier accepts...
        verifier = ChainVerifier(certificates=cert_lookup)
        verifier.add(parse_pulse(first.data))
        verifier.add(parse_pulse(candidate.data))
        assert verifier.report.ok, verifier.report.failures
        assert ext.check_external(pulse, record.to_json(), drand.chain).verdict == ext.VALID
        # ...and opens the commitment made a period ago.
        assert hashlib.sha512(pulse.local_random_value).digest() == first.pulse.precommitment_value
        (w1,) = draw(v1, ENTRANTS, [pulse.output_value])
        (w2,) = draw_v2(v2, ENTRANTS, [(pulse.local_random_value, pulse.external.value)])
        winners_v1.add(w1)
        winners_v2.add(w2)
        if w1 == WANTED and steered_at is None:
            steered_at = attempt
    # v1 (outputValue): the operator gets the winner it wants (a known property of
    # the format, docs/threat-model.md).
    assert steered_at is not None
    assert len(winners_v1) > 1
    # v2 (localRandomValue and the drand round): every candidate draws the same winner.
    assert len(winners_v2) == 1
    # randomValue is the same for every candidate, too.
    assert ext.random_value(lrv2, external.value) == ext.random_value(
        pulse.local_random_value, pulse.external.value
    )
