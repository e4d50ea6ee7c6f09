"""`beacon run` co-signs every pulse with ML-DSA-65 and publishes the vouched-for key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.fetch import LocalSource
from beacon_verifier.format import parse_pulse
from beacon_verifier.pq import check_cosignature, parse_cosignature, parse_key_document
from beacon_verifier.siteread import certificate_lookup

from tests.beacon_proc import run_beacon, run_verify

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


def test_verifier_checks_cosignatures_and_require_pq(tmp_path: Path) -> None:
    env = {"BEACON_ENTROPY_SOURCE": "os", "BEACON_KEY_BITS": "2048"}
    done = run_beacon(tmp_path, ["run", "--period", "1", "--count", "4"], env=env)
    assert done.returncode == 0, done.stderr
    site = tmp_path / "public"
    full = run_verify(["chain", str(site), "--require-pq", "--json"])
    assert full.returncode == 0, full.stdout + full.stderr
    assert json.loads(full.stdout)["pqSignatures"] == {"valid": 4}

    one = run_verify(["pulse", str(site / layout.pulse_key(1, 2)), "--require-pq", "--json"])
    assert one.returncode == 0, one.stdout
    assert json.loads(one.stdout)["pqSignature"] == "valid"

    # Altered: detected with or without --require-pq.
    path = site / layout.pq_signature_key(1, 3)
    original = path.read_bytes()
    doc = json.loads(original)
    doc["signature"] = ("0" if doc["signature"][0] != "0" else "1") + doc["signature"][1:]
    path.chmod(0o644)
    path.write_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    altered = run_verify(["chain", str(site), "--json"])
    assert altered.returncode == 1
    report = json.loads(altered.stdout)
    assert report["pqSignatures"] == {"valid": 3, "invalid": 1}
    assert [(f["pulseIndex"], f["check"]) for f in report["failures"]] == [(3, "pq signature")]

    # Removed: the site promises co-signatures (site.json), so a failure as it is;
    # on a site that promises none, a failure only with --require-pq.
    path.unlink()
    promised = run_verify(["chain", str(site), "--json"])
    assert promised.returncode == 1, promised.stdout
    assert json.loads(promised.stdout)["pqSignatures"] == {"valid": 3, "missing": 1}
    (site / layout.SITE_KEY).unlink()
    lenient = run_verify(["chain", str(site), "--json"])
    assert lenient.returncode == 0, lenient.stdout
    # No descriptor: checked as NIST, so co-signatures are not fetched, and that is said.
    assert json.loads(lenient.stdout)["pqSignatures"] == {"not checked": 4}
    strict = run_verify(["chain", str(site), "--require-pq"])
    assert strict.returncode == 1
    assert "pulse 3" in strict.stdout and "no co-signature" in strict.stdout
    alone = run_verify(["pulse", str(site / layout.pulse_key(1, 3)), "--require-pq"])
    assert alone.returncode == 1 and "co-signature (ML-DSA-65): missing" in alone.stdout
