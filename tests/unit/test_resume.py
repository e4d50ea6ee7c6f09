"""The resume file: saved atomically, read back as it was, refused when malformed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from beacon_verifier.chain import ChainVerifier
from beacon_verifier.errors import ChainError
from beacon_verifier.report import report_as_dict
from beacon_verifier.resume import Audit, ResumeError, load, rebuild, save

AUDIT = Audit("https://beacon.example", 1, 1, 5000)


def _verifier() -> ChainVerifier:
    verifier = ChainVerifier(certificates=lambda _cid: None)
    report = verifier.report
    report.pulses_checked = 1436
    report.add_missing(7, 9)
    report.add_missing(100, 100)
    report.fail([ChainError("precommitment", pulse_index=12, expected="AB", actual="CD")])
    report.source_kinds["os-fallback"] = 1436
    report.pq_signatures["not checked"] = 1436
    report.first_index, report.last_index = 1, 1440
    return verifier


def test_the_state_reads_back_as_saved(tmp_path: Path) -> None:
    path = tmp_path / "audit.json"
    verifier = _verifier()
    save(path, AUDIT, 1440, verifier)
    assert [p.name for p in tmp_path.iterdir()] == ["audit.json"]  # no temporary file left
    found = load(path)
    assert found is not None
    audit, verified, doc = found
    assert audit == AUDIT and verified == 1440
    rebuilt = rebuild(source=None, chain=1, doc=doc)  # type: ignore[arg-type]  # no pulse added
    assert report_as_dict(rebuilt.report) == report_as_dict(verifier.report)


def test_saving_again_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "audit.json"
    save(path, AUDIT, 1440, _verifier())
    save(path, AUDIT, 2880, _verifier())
    assert json.loads(path.read_text())["verified"] == 2880


def test_no_file_is_a_fresh_audit(tmp_path: Path) -> None:
    assert load(tmp_path / "absent.json") is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: "{not json",
        lambda d: json.dumps(d | {"version": 99}),
        lambda d: json.dumps(d | {"verified": 9999}),
        lambda d: json.dumps(d | {"verified": -1}),
        lambda d: json.dumps(d | {"verified": True}),
        lambda d: json.dumps({k: v for k, v in d.items() if k != "audit"}),
        lambda d: json.dumps(d | {"report": d["report"] | {"pulsesChecked": "many"}}),
        lambda d: json.dumps(d | {"report": d["report"] | {"failures": [{"check": "x"}]}}),
        lambda d: "[]",
    ],
)
def test_a_malformed_file_is_one_clear_error(tmp_path: Path, mangle: object) -> None:
    path = tmp_path / "audit.json"
    save(path, AUDIT, 1440, _verifier())
    doc = json.loads(path.read_text())
    path.write_text(mangle(doc))  # type: ignore[operator]
    with pytest.raises(ResumeError, match="not a usable resume file"):
        load(path)
