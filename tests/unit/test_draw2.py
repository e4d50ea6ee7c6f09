"""Draws v2, pure: the manifest's strict form, the seed, the commitment check."""

from __future__ import annotations

import hashlib

import pytest
from beacon_verifier.draw import Manifest, entrant_list_bytes, manifest_hash, parse_manifest
from beacon_verifier.draw2 import (
    ManifestV2,
    check_commitment,
    draw_seed_v2,
    draw_v2,
    manifest_version,
    parse_manifest_v2,
)
from beacon_verifier.errors import DrawError

ENTRANTS = entrant_list_bytes("alice\nbob\ncarol\ndave")
T = 1_800_000_000_000 - 1_800_000_000_000 % 60_000


def _v2(**kw: object) -> ManifestV2:
    base = Manifest(
        beacon="https://beacon.example",
        chain=1,
        pulse_time_ms=T,
        entrants=manifest_hash(ENTRANTS),
        entrant_count=4,
        winners=2,
        label="v2",
    )
    return ManifestV2(base, int(kw.get("announced", T - 600_000)))  # type: ignore[call-overload]


def test_manifest_round_trip_and_strictness() -> None:
    data = _v2().to_bytes()
    assert manifest_version(data) == 2 and b'"announcedAt":"' in data
    assert parse_manifest_v2(data) == _v2()
    with pytest.raises(DrawError, match="canonical"):
        parse_manifest_v2(data.replace(b",", b", ", 1))
    with pytest.raises(DrawError, match="announcedAt: missing"):
        parse_manifest_v2(data.replace(b'"announcedAt"', b'"announcedAx"'))
    with pytest.raises(DrawError, match="before pulseTime"):
        _v2(announced=T)
    # a v1 reader refuses a v2 manifest
    with pytest.raises(DrawError, match=r"announcedAt: unknown key|version"):
        parse_manifest(data)


def test_seed_is_the_documented_hash() -> None:
    data = _v2().to_bytes()
    lrv, ext = bytes(range(64)), bytes(range(64, 128))
    expected = hashlib.sha512(
        b"beacon-draw/v2" + hashlib.sha512(data).digest() + lrv + ext
    ).digest()
    assert draw_seed_v2(data, [(lrv, ext)]) == expected
    winners = draw_v2(data, ENTRANTS, [(lrv, ext)])
    assert len(winners) == 2 and len(set(winners)) == 2
    # any change of either value changes the seed
    assert draw_seed_v2(data, [(lrv, ext[:-1] + b"\0")]) != expected
    with pytest.raises(DrawError, match="names 1 beacon"):
        draw_v2(data, ENTRANTS, [(lrv, ext), (lrv, ext)])


def test_commitment_check() -> None:
    lrv = b"\7" * 64
    check_commitment(lrv, hashlib.sha512(lrv).digest(), "pulse 1/5")
    with pytest.raises(DrawError, match="pulse 1/5: localRandomValue does not open"):
        check_commitment(lrv, hashlib.sha512(b"other").digest(), "pulse 1/5")
