"""The state is the authority on what the key signed (issue 21, A and B).

Real ``beacon run`` processes on one data directory and several out dirs: no
(chain, index) is ever signed twice, whatever out dir a run is pointed at; a
data directory with another key refuses a published chain unless told to take
it over.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.format import STATUS_CERTIFICATE_CHANGED, parse_pulse

from beacon.pulse.keys import load_identity
from tests.beacon_proc import replay, run_beacon

pytestmark = pytest.mark.integration

OS_SOURCE = {"BEACON_ENTROPY_SOURCE": "os", "BEACON_KEY_BITS": "2048"}


def run(cwd: Path, out: str, count: int, *extra: str, data: str = "data") -> str:
    done = run_beacon(
        cwd,
        ["--data-dir", data, "run", "--period", "1", "--count", str(count), "--out", out, *extra],
        env=OS_SOURCE,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def indexes(site: Path) -> dict[int, bytes]:
    found = {}
    for path in (site / "beacon/2.0/chain/1/pulse").glob("*"):
        if path.name.isdigit():
            found[int(path.name)] = path.read_bytes()
    return found


def test_one_data_dir_on_two_out_dirs_never_signs_an_index_twice(tmp_path: Path) -> None:
    run(tmp_path, "A", 3)
    run(tmp_path, "B", 2)  # B is empty: the state's pulses are republished first
    run(tmp_path, "A", 2)  # A is behind the state: it catches up, then goes on
    a, b = indexes(tmp_path / "A"), indexes(tmp_path / "B")
    assert sorted(a) == list(range(1, 8)), sorted(a)
    assert sorted(b) == list(range(1, 6)), sorted(b)
    assert all(a[i] == b[i] for i in b), "one key signed two pulses for one index"
    for site in ("A", "B"):
        report = replay(tmp_path / site)
        assert report.ok and not report.missing, (site, report)
        # Derived objects of the republished pulses are there too.
        last = parse_pulse((tmp_path / site / layout.LAST_KEY).read_bytes())
        assert (tmp_path / site / layout.time_key(last.time_ms)).read_bytes() == last.raw


def test_a_data_dir_with_another_key_refuses_a_published_chain(tmp_path: Path) -> None:
    run(tmp_path, "site", 2, data="first")
    before = indexes(tmp_path / "site")
    refused = run_beacon(
        tmp_path,
        ["--data-dir", "second", "run", "--period", "1", "--count", "1", "--out", "site"],
        env=OS_SOURCE,
    )
    assert refused.returncode == 1, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.startswith("beacon: ")]
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    site_cert = parse_pulse(before[2]).certificate_id.hex()
    own_cert = load_identity(tmp_path / "second").certificate_id.hex()
    assert site_cert in lines[0] and own_cert in lines[0], lines[0]
    assert "--take-over-chain" in lines[0]
    assert indexes(tmp_path / "site") == before  # nothing written

    run(tmp_path, "site", 1, "--take-over-chain", data="second")
    taken = parse_pulse(indexes(tmp_path / "site")[3])
    assert taken.status_code & STATUS_CERTIFICATE_CHANGED
    assert taken.certificate_id.hex() != site_cert
    assert replay(tmp_path / "site").ok
