"""One definition of valid (issue 22): the same evidence about a pulse gives the
same verdict through every command — chain, pulse, time, skiplist and draw — since
all of them check through ``core.check_pulse``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.cli import main
from beacon_verifier.core import NOT_FETCHED, Evidence, Policy, check_pulse
from beacon_verifier.drawcmd import target_pulse
from beacon_verifier.errors import DrawError
from beacon_verifier.fetch import LocalSource
from beacon_verifier.format import parse_pulse
from beacon_verifier.timeindex import TimeEntry

from beacon.publish.indexes import build_indexes
from tests.unit.test_replay import site  # noqa: F401 - a fixture: a site the beacon wrote

INDEX = 4  # the pulse every command is asked about


def _failed_checks(failures: list[dict[str, object]]) -> list[str]:
    return sorted(str(f["check"]) for f in failures if f["pulseIndex"] == INDEX)


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    main([*args, "--json"])
    doc: dict[str, object] = json.loads(capsys.readouterr().out)
    return doc


def verdicts(root: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, list[str]]:
    """The failed checks of pulse INDEX as each command sees them."""
    pulse = parse_pulse((root / layout.pulse_key(1, INDEX)).read_bytes())
    chain = _run(capsys, "chain", str(root))
    one = _run(capsys, "pulse", str(root / layout.pulse_key(1, INDEX)))
    at = _run(capsys, "time", str(root), str(pulse.time_ms))
    path = _run(capsys, "skiplist", str(root), str(INDEX - 1), str(INDEX))
    try:
        target_pulse(LocalSource(root), 1, pulse.time_ms)
        draw: list[str] = []
    except DrawError as exc:
        draw = sorted(re.findall(rf"pulse {INDEX}: (.+?) failed", str(exc)))
    return {
        "chain": _failed_checks(chain["failures"]),  # type: ignore[arg-type]
        "pulse": _failed_checks(one["failures"]),  # type: ignore[arg-type]
        "time": _failed_checks(at["failures"]),  # type: ignore[arg-type]
        "skiplist": _failed_checks(path["failures"]),  # type: ignore[arg-type]
        "draw": draw,
    }


def _delete(key: str) -> Callable[[Path], None]:
    return lambda root: (root / key).unlink()


def _rewrite_record(root: Path) -> None:
    path = root / layout.entropy_record_key(1, INDEX)
    record = json.loads(path.read_bytes())
    record["reason"] = "quantum, honestly"
    path.write_text(json.dumps(record))


def _garble_cosignature(root: Path) -> None:
    path = root / layout.pq_signature_key(1, INDEX)
    doc = json.loads(path.read_bytes())
    doc["signature"] = "00" + doc["signature"][2:]
    path.write_text(json.dumps(doc, separators=(",", ":"), sort_keys=True))


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (lambda root: None, []),
        (_delete(layout.entropy_record_key(1, INDEX)), ["entropy record"]),
        (_rewrite_record, ["entropy record"]),
        (_delete(layout.pq_signature_key(1, INDEX)), ["pq signature"]),
        (_garble_cosignature, ["pq signature"]),
    ],
    ids=["clean", "record-deleted", "record-rewritten", "cosig-deleted", "cosig-garbled"],
)
def test_every_command_gives_the_same_verdict(
    site: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[Path], None],
    expected: list[str],
) -> None:
    tamper(site)
    found = verdicts(site, capsys)
    assert found == dict.fromkeys(found, expected)


def test_the_core_names_what_it_could_not_check(site: Path) -> None:  # noqa: F811
    pulse = parse_pulse((site / layout.pulse_key(1, INDEX)).read_bytes())
    verdict = check_pulse(Evidence(pulse))
    assert verdict.signature == "unverifiable" and not verdict.ok
    assert verdict.not_checked == [
        "signature: certificate not fetched",
        "predecessor: not fetched",
        "entropy record: not fetched",
        "co-signature: not fetched",
    ]
    assert (verdict.entropy, verdict.pq, verdict.predecessor) == ("not checked",) * 3
    # Absent evidence fails only where the policy requires it.
    missing = Evidence(pulse, entropy=None, cosignature=NOT_FETCHED)
    assert not check_pulse(missing).failures
    required = check_pulse(missing, Policy(require_entropy=True, require_pq=True))
    assert sorted(f.check for f in required.failures) == ["entropy record", "pq signature"]


def test_an_external_is_never_reported_valid_without_a_checker(site: Path) -> None:  # noqa: F811
    pulse = parse_pulse((site / layout.pulse_key(1, INDEX)).read_bytes())
    assert check_pulse(Evidence(pulse)).external == "none"  # this beacon mixes none yet
    required = check_pulse(Evidence(pulse), Policy(require_external=True))
    assert [f.check for f in required.failures] == ["external"]


def test_a_time_index_missing_an_entry_is_caught_and_corrected(
    site: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    pulses = [
        parse_pulse(p.read_bytes()) for p in (site / "beacon/2.0/chain/1/pulse").glob("[0-9]*")
    ]
    entries = [
        TimeEntry(time_ms=p.time_ms, chain=1, pulse=p.pulse_index)
        for p in pulses
        if p.pulse_index != INDEX
    ]
    for key, data in build_indexes(entries).items():
        (site / key).write_bytes(data)
    target = next(p for p in pulses if p.pulse_index == INDEX)
    code = main(["time", str(site), str(target.time_ms), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["ok"] is False  # the site is wrong ...
    assert doc["pulseIndex"] == INDEX  # ... and the answer is right
    assert f"answered pulse 1/{INDEX + 1}" in doc["indexError"]
    code = main(["time", str(site), str(target.time_ms)])
    out = capsys.readouterr().out
    assert code == 1 and "the site's index is wrong" in out
