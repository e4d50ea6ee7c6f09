"""`beacon-verify --no-pq` on a site written by a real `beacon run` (co-signed pulses):
co-signatures are neither fetched nor checked, and reported as not checked."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.format import parse_pulse

from beacon.publish.archives import ArchiveItem, build_day_archive, build_pq_archive
from tests.beacon_proc import run_beacon, run_verify

pytestmark = pytest.mark.integration

PULSES = 4


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("pq")
    env = {"BEACON_ENTROPY_SOURCE": "os", "BEACON_KEY_BITS": "2048"}
    done = run_beacon(home, ["run", "--period", "1", "--count", str(PULSES)], env=env)
    assert done.returncode == 0, done.stderr
    return home / "public"


def _report(args: list[str]) -> tuple[int, dict[str, object]]:
    done = run_verify(args, timeout=60)
    return done.returncode, json.loads(done.stdout)


def _tamper(path: Path) -> None:
    """Flip the first hex digit of a co-signature's signature (well-formed, invalid)."""
    doc = json.loads(path.read_bytes())
    doc["signature"] = ("0" if doc["signature"][0] != "0" else "1") + doc["signature"][1:]
    path.chmod(0o644)
    path.write_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())


def test_no_pq_neither_fetches_nor_checks_cosignatures(original: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(original, site)
    code, report = _report(["chain", str(site), "--json", "--no-pq"])
    assert code == 0 and report["ok"] is True
    assert report["pqSignatures"] == {"not checked": PULSES}

    # Pulse 2's co-signature becomes a FIFO: opening it to read would block, so a
    # verifier that fetched it would never finish; pulse 3's is forged.
    cosignature = site / layout.pq_signature_key(1, 2)
    cosignature.unlink()
    os.mkfifo(cosignature)
    _tamper(site / layout.pq_signature_key(1, 3))
    code, report = _report(["chain", str(site), "--json", "--no-pq", "--jobs", "2"])
    assert code == 0 and report["failures"] == []
    assert report["pqSignatures"] == {"not checked": PULSES}
    done = run_verify(["pulse", str(site / layout.pulse_key(1, 2)), "--no-pq", "--json"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["pqSignature"] == "not checked"
    text = run_verify(["pulse", str(site / layout.pulse_key(1, 3)), "--no-pq"])
    assert text.returncode == 0 and "co-signature (ML-DSA-65): not checked" in text.stdout

    # The same site checked with co-signatures: the forgery is found.
    cosignature.unlink()
    code, report = _report(["chain", str(site), "--json"])
    assert code == 1
    assert report["pqSignatures"] == {"valid": PULSES - 2, "missing": 1, "invalid": 1}


def test_no_pq_from_a_daily_archive(original: Path, tmp_path: Path) -> None:
    """From a day archive, --no-pq never opens the PQ archive (a FIFO here: opening it
    would block); checked, a co-signature forged in the PQ archive fails, and one the
    PQ archive lacks comes from its object."""
    site = tmp_path / "site"
    shutil.copytree(original, site)
    items = []
    for p in range(1, PULSES + 1):
        data = (site / layout.pulse_key(1, p)).read_bytes()
        cosignature = (site / layout.pq_signature_key(1, p)).read_bytes() if p != 2 else None
        if p == 1:
            doc = json.loads(cosignature or b"")
            doc["signature"] = ("0" if doc["signature"][0] != "0" else "1") + doc["signature"][1:]
            cosignature = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        items.append(
            ArchiveItem(
                time_ms=parse_pulse(data).time_ms,
                chain=1,
                pulse=p,
                pulse_bytes=data,
                entropy_bytes=(site / layout.entropy_record_key(1, p)).read_bytes(),
                cosignature_bytes=cosignature,
            )
        )
    day = layout.day_of(items[0].time_ms)
    assert all(layout.day_of(i.time_ms) == day for i in items), "the run crossed midnight"
    archive = site / layout.archive_key(day)
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(build_day_archive(day, items))
    pq_archive = build_pq_archive(day, items)
    assert pq_archive is not None
    os.mkfifo(site / layout.pq_archive_key(day))
    for jobs in ("1", "2"):
        code, report = _report(["chain", str(site), "--json", "--no-pq", "--jobs", jobs])
        assert code == 0 and report["pqSignatures"] == {"not checked": PULSES}
        assert report["failures"] == []

    (site / layout.pq_archive_key(day)).unlink()
    (site / layout.pq_archive_key(day)).write_bytes(pq_archive)
    for jobs in ("1", "2"):
        code, report = _report(["chain", str(site), "--json", "--jobs", jobs])
        assert code == 1
        assert report["pqSignatures"] == {"valid": PULSES - 1, "invalid": 1}
        assert [(f["pulseIndex"], f["check"]) for f in report["failures"]] == [(1, "pq signature")]


def test_no_pq_and_require_pq_together_are_a_usage_error(original: Path) -> None:
    site = original
    for command in (["chain", str(site)], ["pulse", str(site / layout.pulse_key(1, 1))]):
        done = run_verify([*command, "--no-pq", "--require-pq"])
        assert done.returncode == 2
        assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
        assert "not allowed with" in done.stderr
