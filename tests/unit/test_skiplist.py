"""Skip-list paths: the greedy choice of links, the length bound for a year, real NIST
pulses, and paths that break (a lying link uri, a missing or forged pulse)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.checks import unit_starts
from beacon_verifier.cli import main
from beacon_verifier.errors import FetchError
from beacon_verifier.fetch import LocalSource
from beacon_verifier.format import parse_pulse
from beacon_verifier.siteread import certificate_lookup
from beacon_verifier.skiplist import choose_link, link_targets, skip_path

from beacon.pulse.builder import BuiltPulse
from beacon.pulse.keys import Signer
from tests.conftest import NIST
from tests.unit.test_builder import MINUTE, ms
from tests.unit.test_replay import build_records_chain, write_site

NIST_PULSES = (1, 54609, 54610)


def write_nist_layout(root: Path, *, certificate: bool = True) -> Path:
    """NIST's three vector pulses saved under NIST's REST paths (and its certificate)."""
    for index in NIST_PULSES:
        path = root / layout.pulse_key(1, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((NIST / f"nist_c1_p{index}.json").read_bytes())
    last = root / layout.LAST_KEY
    last.parent.mkdir(parents=True, exist_ok=True)
    last.write_bytes((NIST / "nist_c1_p54610.json").read_bytes())
    if certificate:
        (pem,) = NIST.glob("*.pem")
        cert = root / layout.certificate_key(pem.stem)
        cert.parent.mkdir(parents=True, exist_ok=True)
        cert.write_bytes(pem.read_bytes())
    return root


# --- choosing links --------------------------------------------------------------------


def test_the_link_closest_to_older_without_passing_it_wins() -> None:
    targets = {"previous": 99, "hour": 80, "day": 40, "month": 10, "year": 1}
    assert choose_link(targets, 95) == ("previous", 99)
    assert choose_link(targets, 80) == ("hour", 80)
    assert choose_link(targets, 50) == ("hour", 80)
    assert choose_link(targets, 40) == ("day", 40)
    assert choose_link(targets, 2) == ("month", 10)
    assert choose_link(targets, 1) == ("year", 1)
    assert choose_link({**targets, "day": None}, 40) == ("hour", 80)  # an unusable uri
    assert choose_link({**targets, "day": None}, 5) == ("month", 10)


T0 = ms("2026-01-01T00:00:00")


def _targets_of_a_minute_chain(index: int) -> dict[str, int | None]:
    """Where the links of pulse ``index`` point in a gapless 60 s chain starting at T0."""
    previous_time = T0 + (index - 2) * MINUTE
    out: dict[str, int | None] = {"previous": index - 1}
    for name, start in zip(
        ("hour", "day", "month", "year"), unit_starts(previous_time), strict=True
    ):
        out[name] = (max(start, T0) - T0) // MINUTE + 1
    return out


def test_a_year_apart_takes_at_most_about_130_pulses() -> None:
    rng = random.Random(130)
    lengths = []
    for older in [1, 60, 1440, 44_640, *(rng.randrange(1, 525_600) for _ in range(200))]:
        newer, steps = older + 525_600, 1
        current = newer
        while current > older:
            _, current = choose_link(_targets_of_a_minute_chain(current), older)
            steps += 1
        assert current == older
        lengths.append(steps)
    assert max(lengths) <= 130, max(lengths)
    assert min(lengths) < 20


# --- real NIST pulses --------------------------------------------------------------------


def test_nist_pulse_54610_reaches_pulse_1_through_its_year_link(tmp_path: Path) -> None:
    source = LocalSource(write_nist_layout(tmp_path))
    path = skip_path(source, 1, 1, 54610, certificate_lookup(source))
    assert [(s.pulse.pulse_index, s.via) for s in path.steps] == [(54610, None), (1, "year")]
    assert path.ok and path.complete and not path.failures
    consecutive = skip_path(source, 1, 54609, 54610, certificate_lookup(source))
    assert [s.via for s in consecutive.steps] == [None, "previous"] and consecutive.ok


def test_without_the_certificate_the_path_is_unverifiable(tmp_path: Path) -> None:
    source = LocalSource(write_nist_layout(tmp_path, certificate=False))
    path = skip_path(source, 1, 1, 54610, certificate_lookup(source))
    assert path.complete and not path.failures
    assert path.signatures_unverifiable == 2 and not path.ok


def test_link_targets_come_from_uris_and_only_point_back(tmp_path: Path) -> None:
    source = LocalSource(write_nist_layout(tmp_path))
    data = source.get(layout.pulse_key(1, 54610))
    assert data is not None
    targets = link_targets(parse_pulse(data))
    assert targets == {"previous": 54609, "hour": 54566, "day": 53546, "month": 11793, "year": 1}


# --- a chain built by the beacon's builder -----------------------------------------------

# Every 30 minutes from 2026-12-30 to 2027-01-02: pulse 97 is the first of 2027.
TIMES = [ms("2026-12-30T00:00:00") + i * 30 * MINUTE for i in range(145)]


@pytest.fixture(scope="module")
def chain(other_signer: Signer) -> list[tuple[BuiltPulse, bytes]]:
    return build_records_chain(TIMES, other_signer, period=30 * MINUTE)


@pytest.fixture
def site(tmp_path: Path, chain: list[tuple[BuiltPulse, bytes]], other_signer: Signer) -> Path:
    return write_site(tmp_path / "site", chain, other_signer)


def _path(site: Path, older: int, newer: int) -> list[tuple[int, str | None]]:
    source = LocalSource(site)
    found = skip_path(source, 1, older, newer, certificate_lookup(source))
    assert found.ok, [f.describe() for f in found.failures]
    return [(s.pulse.pulse_index, s.via) for s in found.steps]


def test_the_path_takes_day_and_month_links(site: Path) -> None:
    assert _path(site, 1, 145) == [(145, None), (97, "day"), (1, "month")]
    assert _path(site, 96, 145) == [(145, None), (97, "day"), (96, "previous")]
    # 145 is at 00:00, so its links point into the hour of 23:30 (pulse 144): 23:00 is 143.
    assert _path(site, 140, 145) == [(145, None), (143, "hour"), (141, "hour"), (140, "previous")]


def _rewrite(site: Path, index: int, change: Callable[[dict[str, object]], None]) -> None:
    path = site / layout.pulse_key(1, index)
    doc = json.loads(path.read_bytes())
    change(doc["pulse"])
    path.write_text(json.dumps(doc, indent=2))


def test_a_link_uri_naming_the_wrong_pulse_breaks_the_path(site: Path) -> None:
    # uris are not signed: pointing the day link at pulse 96 passes the signature,
    # but pulse 96's outputValue is not the signed link value.
    def point_day_link_at_96(pulse: dict[str, object]) -> None:
        links = pulse["listValues"]
        assert isinstance(links, list)
        links[2]["uri"] = links[2]["uri"].rsplit("/", 1)[0] + "/96"

    _rewrite(site, 145, point_day_link_at_96)
    source = LocalSource(site)
    found = skip_path(source, 1, 1, 145, certificate_lookup(source))
    assert not found.ok and not found.complete
    assert [(f.pulse_index, f.check) for f in found.failures] == [(145, "day link")]
    assert "pulse 96" in found.failures[0].detail


def test_a_forged_pulse_on_the_path_fails_its_signature(site: Path) -> None:
    _rewrite(site, 97, lambda p: p.update(statusCode=2))
    source = LocalSource(site)
    found = skip_path(source, 1, 1, 145, certificate_lookup(source))
    checks = {(f.pulse_index, f.check) for f in found.failures}
    # Its outputValue field still matches the link of 145, but it no longer hashes
    # the changed pulse, and the signature no longer covers it.
    assert checks == {(97, "signature"), (97, "outputValue")} and not found.ok


def test_a_missing_pulse_on_the_path_is_a_fetch_error(site: Path) -> None:
    (site / layout.pulse_key(1, 97)).unlink()
    source = LocalSource(site)
    with pytest.raises(FetchError, match=r"pulse/97 \(the day link of pulse 145\) is missing"):
        skip_path(source, 1, 1, 145, certificate_lookup(source))


def test_skiplist_command(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["skiplist", str(site), "1", "145"]) == 0
    out = capsys.readouterr().out
    assert "--day--> pulse 97" in out and "--month--> pulse 1 " in out
    assert "path of 3 pulses from 145 back to 1 on chain 1: VALID" in out
    assert main(["skiplist", str(site), "2026-12-30T00:00:00Z", "2027-01-02T00:00Z", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and [s["pulseIndex"] for s in doc["path"]] == [145, 97, 1]
    assert main(["skiplist", str(site), "145", "1"]) == 2
    assert "must come before" in capsys.readouterr().err
    (site / layout.pulse_key(1, 97)).unlink()
    assert main(["skiplist", str(site), "1", "145"]) == 3
    assert main(["skiplist", str(site), "0", "145"]) == 2
