"""The pure pulse builder: links, rollovers, status bits, certificate changes, chain end.

Every chain built here is also replayed through the independent ChainVerifier,
so the producer and the verifier must agree.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import pytest
from beacon_verifier.chain import ChainVerifier
from beacon_verifier.checks import TrustedCertificate
from beacon_verifier.core import Evidence, check_pulse
from beacon_verifier.format import ZERO_HASH, Pulse, parse_pulse

from beacon.pulse.builder import BuildError, BuiltPulse, ChainHead, build_pulse
from beacon.pulse.keys import Signer

MINUTE = 60_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def value(n: int) -> bytes:
    """A deterministic stand-in for the n-th local random value."""
    return hashlib.sha512(b"lrv %d" % n).digest()


def build_chain(
    times: Iterable[int],
    signer: Signer | Callable[[int], Signer],
    *,
    period: int = MINUTE,
    head: ChainHead | None = None,
    lost: frozenset[int] = frozenset(),
) -> list[BuiltPulse]:
    """Build consecutive pulses at ``times``; values in ``lost`` break the precommitment."""
    out: list[BuiltPulse] = []
    for n, t in enumerate(times):
        s = signer(n) if callable(signer) and not isinstance(signer, Signer) else signer
        assert isinstance(s, Signer)
        built = build_pulse(
            head,
            time_ms=t,
            period_ms=period,
            local_random_value=value(n + 1000) if n in lost else value(n),
            next_local_random_value=value(n + 1),
            signer=s,
            base_url="https://beacon.example",
        )
        out.append(built)
        head = built.head
    return out


def replay(
    chain: list[BuiltPulse], lookup: Callable[[bytes], TrustedCertificate | None]
) -> list[str]:
    verifier = ChainVerifier(certificates=lookup)
    for b in chain:
        verifier.add(parse_pulse(b.data))
    return [f.describe() for f in verifier.report.failures]


def by_index(chain: list[BuiltPulse]) -> dict[int, Pulse]:
    return {b.pulse.pulse_index: b.pulse for b in chain}


def link_target(chain: list[BuiltPulse], pulse: Pulse, link: str) -> int:
    """The index of the pulse whose outputValue ``pulse``'s link holds."""
    matches = [b.pulse.pulse_index for b in chain if b.pulse.output_value == pulse.link(link)]
    assert len(matches) == 1, (link, matches)
    return matches[0]


def test_first_pulse_starts_a_chain(signer: Signer, cert_lookup: Callable) -> None:
    (first,) = build_chain([ms("2026-03-01T10:00:00")], signer)
    p = first.pulse
    assert (p.chain_index, p.pulse_index, p.status_code) == (1, 1, 1)
    assert all(lv.value == ZERO_HASH for lv in p.list_values)
    assert p.uri == "https://beacon.example/beacon/2.0/chain/1/pulse/1"
    assert p.precommitment_value == hashlib.sha512(value(1)).digest()
    assert p.version == "2.0" and p.cipher_suite == 0 and p.period == MINUTE
    evidence = Evidence(parse_pulse(first.data), certificate=cert_lookup(p.certificate_id))
    assert check_pulse(evidence).ok


def test_consecutive_pulses_open_precommitments(signer: Signer, cert_lookup: Callable) -> None:
    start = ms("2026-03-01T10:00:00")
    chain = build_chain([start + i * MINUTE for i in range(5)], signer)
    assert [b.pulse.status_code for b in chain] == [1, 0, 0, 0, 0]
    for before, after in itertools.pairwise(chain):
        assert after.pulse.previous == before.pulse.output_value
        assert hashlib.sha512(after.pulse.local_random_value).digest() == (
            before.pulse.precommitment_value
        )
    assert replay(chain, cert_lookup) == []


def test_hour_rollover_follows_the_spec_example(signer: Signer, cert_lookup: Callable) -> None:
    # Pulses 20:00, 20:57 (gap), 21:08 (gap), 21:09, 22:00 (gap).
    times = [
        ms("2026-03-01T20:00:00"),
        ms("2026-03-01T20:57:00"),
        ms("2026-03-01T21:08:00"),
        ms("2026-03-01T21:09:00"),
        ms("2026-03-01T22:00:00"),
    ]
    chain = build_chain(times, signer)
    p = by_index(chain)
    # 21:08's previous is 20:57, so hour -> the first pulse of hour 20 (20:00).
    assert link_target(chain, p[3], "hour") == 1
    # 22:00's previous is 21:09, so hour -> the first pulse of hour 21 (21:08).
    assert link_target(chain, p[5], "hour") == 3
    assert [b.pulse.status_code & 2 for b in chain] == [0, 2, 2, 0, 2]
    assert replay(chain, cert_lookup) == []


def test_gap_across_hour_boundary(signer: Signer, cert_lookup: Callable) -> None:
    times = [
        ms("2026-03-01T09:58:00"),
        ms("2026-03-01T09:59:00"),
        ms("2026-03-01T10:03:00"),
        ms("2026-03-01T10:04:00"),
    ]
    chain = build_chain(times, signer)
    p = by_index(chain)
    assert p[3].status_code == 2  # gap, precommitment still opened
    assert link_target(chain, p[3], "hour") == 1  # previous (09:59) is in hour 9
    assert link_target(chain, p[4], "hour") == 3  # 10:03 is the first of hour 10
    assert replay(chain, cert_lookup) == []


def test_day_month_and_year_rollover(signer: Signer, cert_lookup: Callable) -> None:
    times = [
        ms("2026-12-31T23:58:00"),
        ms("2026-12-31T23:59:00"),
        ms("2027-01-01T00:00:00"),
        ms("2027-01-01T00:01:00"),
        ms("2027-01-01T00:02:00"),
    ]
    chain = build_chain(times, signer)
    p = by_index(chain)
    for link in ("hour", "day", "month", "year"):
        # 00:00's previous is 23:59 of 2026: every unit's first pulse is pulse 1.
        assert link_target(chain, p[3], link) == 1
        # 00:01's previous is 00:00, the first of every new unit.
        assert link_target(chain, p[4], link) == 3
        assert link_target(chain, p[5], link) == 3
    assert replay(chain, cert_lookup) == []


def test_month_link_survives_a_long_gap(signer: Signer, cert_lookup: Callable) -> None:
    times = [
        ms("2026-02-10T12:00:00"),
        ms("2026-02-10T12:01:00"),
        ms("2026-02-27T08:00:00"),
        ms("2026-03-02T00:00:00"),
        ms("2026-03-02T00:01:00"),
    ]
    chain = build_chain(times, signer)
    p = by_index(chain)
    assert link_target(chain, p[3], "month") == 1
    assert link_target(chain, p[3], "day") == 1  # previous (Feb 10) -> first of Feb 10
    assert link_target(chain, p[4], "day") == 3  # previous (Feb 27) -> first of Feb 27
    assert link_target(chain, p[4], "month") == 1  # still February
    assert link_target(chain, p[5], "month") == 4  # first of March
    assert replay(chain, cert_lookup) == []


def test_lost_commitment_sets_bit_one(signer: Signer, cert_lookup: Callable) -> None:
    start = ms("2026-03-01T10:00:00")
    chain = build_chain([start + i * MINUTE for i in range(4)], signer, lost=frozenset({2}))
    assert [b.pulse.status_code for b in chain] == [1, 0, 1, 0]
    assert replay(chain, cert_lookup) == []


def test_certificate_change_sets_bit_four(
    signer: Signer, other_signer: Signer, cert_lookup: Callable
) -> None:
    start = ms("2026-03-01T10:00:00")
    chain = build_chain(
        [start + i * MINUTE for i in range(4)],
        lambda n: other_signer if n >= 2 else signer,
    )
    assert [b.pulse.status_code for b in chain] == [1, 0, 4, 0]
    assert chain[2].pulse.certificate_id == other_signer.certificate_id
    assert replay(chain, cert_lookup) == []


def test_gap_and_certificate_change_combine(
    signer: Signer, other_signer: Signer, cert_lookup: Callable
) -> None:
    times = [ms("2026-03-01T10:00:00"), ms("2026-03-01T10:05:00")]
    chain = build_chain(times, lambda n: other_signer if n else signer)
    assert chain[1].pulse.status_code == 6
    assert replay(chain, cert_lookup) == []


def test_final_pulse_ends_the_chain_and_the_next_starts_chain_two(signer: Signer) -> None:
    start = ms("2026-03-01T10:00:00")
    chain = build_chain([start, start + MINUTE], signer)
    final = build_pulse(
        chain[-1].head,
        time_ms=start + 2 * MINUTE,
        period_ms=MINUTE,
        local_random_value=value(2),
        next_local_random_value=value(3),
        signer=signer,
        base_url="https://beacon.example",
        final=True,
    )
    assert final.pulse.status_code == 8 and final.head.ended
    nxt = build_pulse(
        final.head,
        time_ms=start + 3 * MINUTE,
        period_ms=MINUTE,
        local_random_value=value(9),
        next_local_random_value=value(10),
        signer=signer,
        base_url="https://beacon.example",
    )
    assert (nxt.pulse.chain_index, nxt.pulse.pulse_index, nxt.pulse.status_code) == (2, 1, 1)


@pytest.mark.parametrize("offset", [0, -MINUTE, 30_000])
def test_time_must_be_a_later_boundary(signer: Signer, offset: int) -> None:
    start = ms("2026-03-01T10:00:00")
    (first,) = build_chain([start], signer)
    with pytest.raises(BuildError):
        build_pulse(
            first.head,
            time_ms=start + offset,
            period_ms=MINUTE,
            local_random_value=value(1),
            next_local_random_value=value(2),
            signer=signer,
            base_url="https://beacon.example",
        )


def test_one_second_period_over_an_hour_boundary(signer: Signer, cert_lookup: Callable) -> None:
    start = ms("2026-03-01T10:59:55")
    chain = build_chain([start + i * 1000 for i in range(10)], signer, period=1000)
    assert all(b.pulse.status_code == 0 for b in chain[1:])
    assert link_target(chain, by_index(chain)[7], "hour") == 6  # 11:00:00 is pulse 6
    assert replay(chain, cert_lookup) == []


def test_verifier_catches_a_wrong_skip_link(signer: Signer, cert_lookup: Callable) -> None:
    times = [ms("2026-03-01T09:59:00"), ms("2026-03-01T10:00:00"), ms("2026-03-01T10:01:00")]
    chain = build_chain(times, signer)
    # Rebuild pulse 3 from a head whose hour anchor points at the wrong pulse.
    head = chain[1].head
    wrong = ChainHead(
        **{
            **{f: getattr(head, f) for f in head.__dataclass_fields__},
            "anchors": {**head.anchors, "hour": chain[0].head.anchors["hour"]},
        }
    )
    bad = build_pulse(
        wrong,
        time_ms=times[2],
        period_ms=MINUTE,
        local_random_value=value(2),
        next_local_random_value=value(3),
        signer=signer,
        base_url="https://beacon.example",
    )
    failures = replay([*chain[:2], bad], cert_lookup)
    assert len(failures) == 1 and "hour link" in failures[0]
