"""`beacon run` co-signs every pulse with ML-DSA-65 and publishes the vouched-for key."""

from __future__ import annotations

from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.fetch import LocalSource
from beacon_verifier.format import parse_pulse
from beacon_verifier.pq import check_cosignature, parse_cosignature, parse_key_document
from beacon_verifier.replay import certificate_lookup

from tests.beacon_proc import run_beacon

pytestmark = pytest.mark.integration


def test_every_pulse_is_cosigned_by_the_published_key(tmp_path: Path) -> None:
    env = {"BEACON_ENTROPY_SOURCE": "os", "BEACON_KEY_BITS": "2048"}
    done = run_beacon(tmp_path, ["run", "--period", "1", "--count", "4"], env=env)
    assert done.returncode == 0, done.stderr
    site = LocalSource(tmp_path / "public")
    certificates = certificate_lookup(site)
    for p in range(1, 5):
        pulse = parse_pulse(site.get(layout.pulse_key(1, p)) or b"")
        cosignature = site.get(layout.pq_signature_key(1, p))
        assert cosignature is not None, f"pulse {p} has no co-signature"
        kid, _ = parse_cosignature(cosignature)
        document = site.get(layout.pq_key_key(kid.hex()))
        assert document is not None
        key = parse_key_document(document, certificates)
        assert check_cosignature(pulse, cosignature, {key.key_id: key}.get) == key
