"""The site descriptor (issue 22): the beacon declares what it publishes in
``beacon/2.0/site.json``, and the verifier holds the site to it. Deleted entropy
records, a flipped or withheld raw batch and a deleted co-signature gave VALID
before; a NIST site without a descriptor is still checked as NIST."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from beacon_verifier import layout
from beacon_verifier.cli import main
from beacon_verifier.core import ANY, Policy
from beacon_verifier.descriptor import (
    NIST_SITE,
    Promise,
    SiteDescriptor,
    encode_descriptor,
    parse_descriptor,
)
from beacon_verifier.errors import PulseFormatError
from beacon_verifier.fetch import LocalSource
from beacon_verifier.replay import replay_chain

from beacon.entropy import QUANTUM_HARDWARE
from beacon.entropy.health import run_health_tests
from beacon.entropy.pool import EntropyPool
from beacon.entropy.record import Provenance, quantum_record, seal
from beacon.publish.descriptor import describe_site, publish_descriptor
from beacon.publish.local import LocalDirPublisher
from beacon.pulse.builder import build_pulse
from beacon.pulse.keys import Signer
from tests.unit.test_builder import MINUTE, ms
from tests.unit.test_replay import site  # noqa: F401 - a fixture: a site the beacon wrote

T0 = ms("2026-03-01T10:00:00")


def chain_output(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["chain", str(root)])
    return code, capsys.readouterr().out


# --- the beacon writes it -----------------------------------------------------------------


def test_the_beacon_declares_what_it_publishes(site: Path) -> None:  # noqa: F811
    descriptor = parse_descriptor((site / layout.SITE_KEY).read_bytes())
    assert descriptor.entropy_records == Promise(1, 1)
    assert descriptor.cosignatures == Promise(1, 1)
    assert descriptor.raw_data is None  # the OS source publishes no raw batches
    assert descriptor.external is None and descriptor.daily_archives


def test_a_later_run_keeps_earlier_promises_and_dates_new_ones(tmp_path: Path) -> None:
    publisher = LocalDirPublisher(tmp_path)
    args = {"cosigned": False, "raw_data": False, "max_age": 60}
    publish_descriptor(publisher, chain=1, pulse=1, **args)
    first = (tmp_path / layout.SITE_KEY).read_bytes()
    publish_descriptor(publisher, chain=1, pulse=40, **args)
    assert (tmp_path / layout.SITE_KEY).read_bytes() == first  # unchanged: not rewritten
    publish_descriptor(publisher, chain=1, pulse=50, cosigned=True, raw_data=False, max_age=60)
    now = parse_descriptor((tmp_path / layout.SITE_KEY).read_bytes())
    assert now.entropy_records == Promise(1, 1) and now.cosignatures == Promise(1, 50)
    withdrawn = describe_site(now, chain=2, pulse=1, cosigned=False, raw_data=False)
    assert withdrawn.cosignatures is None and withdrawn.entropy_records == Promise(1, 1)
    mixed = describe_site(
        now, chain=2, pulse=1, cosigned=True, raw_data=False, external_source="drand"
    )
    assert mixed.external == Promise(2, 1) and mixed.external_source == "drand"
    assert parse_descriptor(encode_descriptor(mixed)) == mixed
    # An external promise does not make a withheld round (declared in the pulse) a
    # failure; a pulse claiming a valid round must have its record either way (core).
    assert not mixed.policy_for(2, 1).require_external


def test_descriptor_round_trip_and_malformed() -> None:
    descriptor = SiteDescriptor(entropy_records=Promise(1, 5), raw_data=Promise(2, 1))
    assert parse_descriptor(encode_descriptor(descriptor)) == descriptor
    policy = descriptor.policy_for(1, 4)
    assert not policy.require_entropy and descriptor.policy_for(1, 5).require_entropy
    assert descriptor.policy_for(2, 1).require_entropy and descriptor.promises_raw(2, 1)
    assert not descriptor.promises_raw(1, 99)
    for bad in (b"[]", b'{"version":1,"entropyRecords":{"from":[0,1]}}', b'{"version":"1"}'):
        with pytest.raises(PulseFormatError, match=r"site\.json"):
            parse_descriptor(bad)


# --- the verifier holds the site to it ------------------------------------------------------


def test_deleted_entropy_records_are_failures_where_promised(
    site: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    for index in (2, 4):
        (site / layout.entropy_record_key(1, index)).unlink()
    report = replay_chain(LocalSource(site))
    assert not report.ok
    assert [(f.pulse_index, f.check) for f in report.failures] == [
        (2, "entropy record"),
        (4, "entropy record"),
    ]
    assert report.entropy_records == {"valid": 4, "missing": 2}
    code, out = chain_output(site, capsys)
    assert code == 1 and "pulse 2: entropy record failed: missing, but required" in out
    # The same evidence through `pulse`: the same verdict.
    pulse = site / layout.pulse_key(1, 4)
    assert main(["pulse", str(pulse), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["entropyRecord"] == "missing"
    assert [f["check"] for f in doc["failures"]] == ["entropy record"]


def test_a_site_without_a_descriptor_is_checked_as_nist(site: Path) -> None:  # noqa: F811
    (site / layout.SITE_KEY).unlink()
    for index in (2, 4):
        (site / layout.entropy_record_key(1, index)).unlink()
        (site / layout.pq_signature_key(1, index)).unlink()
    report = replay_chain(LocalSource(site))
    assert report.ok, report.failures
    # A NIST site: pulses only. Nothing it does not promise is fetched (no probing,
    # issue 25), and what was not checked is said.
    assert report.entropy_records == {"not checked": 6}
    assert report.pq_signatures == {"not checked": 6}
    assert report.not_checked["entropy record: not fetched"] == 6


def test_a_deleted_co_signature_is_a_failure_where_promised(site: Path) -> None:  # noqa: F811
    (site / layout.pq_signature_key(1, 3)).unlink()
    report = replay_chain(LocalSource(site))
    assert [(f.pulse_index, f.check) for f in report.failures] == [(3, "pq signature")]
    # --no-pq: not looked at, so not held to the promise; said, never silent.
    quiet = replay_chain(LocalSource(site), check_pq=False)
    assert quiet.ok and quiet.not_checked == {"co-signature: not fetched": 6}


# --- raw batches --------------------------------------------------------------------------


def _pool(tmp_path: Path) -> tuple[EntropyPool, list[tuple[str, np.ndarray]]]:
    pool = EntropyPool(tmp_path / "pool.db", clock=lambda: 1_790_000_100.0)
    batches = []
    for n in (1, 2):
        bits = np.random.default_rng(n).integers(0, 2, size=(1024, 12), dtype=np.uint8)
        provenance = Provenance(
            backend="fake_torino",
            job_id=f"job-{n}",
            batch_id=f"job-{n}",
            qubits=tuple(range(12)),
            shots=1024,
            harvested_at=1_790_000_000.0,
        )
        pool.add_batch(
            kind=QUANTUM_HARDWARE, provenance=provenance, bits=bits, health=run_health_tests(bits)
        )
        batches.append((f"job-{n}", bits))
    return pool, batches


@pytest.fixture
def raw_site(tmp_path: Path, signer: Signer) -> Path:
    """Pulses whose records draw from two raw batches; the first is used up and
    published, the second still in use (the last pulse draws from it)."""
    pool, _ = _pool(tmp_path)
    records: list[bytes] = []
    released: dict[str, bytes] = {}

    def drawing_from(batch_id: str) -> int:
        return sum(json.loads(r)["batchId"] == batch_id for r in records)

    while pool.usable_draws() and drawing_from("job-2") < 2:
        index = len(records) + 1
        pooled = pool.take(1, index)
        records.append(
            seal(
                quantum_record(
                    kind=pooled.kind,
                    chain_index=1,
                    pulse_index=index,
                    provenance=pooled.provenance,
                    health=pooled.health,
                    conditioned=pooled.conditioned,
                    os_bits=hashlib.sha512(b"os %d" % index).digest(),
                    batch_sha512=pooled.batch_sha512,
                    batch_bits=pooled.batch_bits,
                )
            ).record
        )
        for raw in pool.released_batches(1, index):
            released[raw.batch_id] = raw.data
    cited = [json.loads(r)["batchId"] for r in records]
    assert cited[0] == "job-1" and cited[-1] == "job-2" and set(released) == {"job-1"}
    root = tmp_path / "site"
    head = None
    for n, rec in enumerate(records):
        following = records[n + 1] if n + 1 < len(records) else b"next"
        built = build_pulse(
            head,
            time_ms=T0 + n * MINUTE,
            period_ms=MINUTE,
            local_random_value=hashlib.sha512(rec).digest(),
            next_local_random_value=hashlib.sha512(following).digest(),
            signer=signer,
            base_url="https://beacon.example",
        )
        head = built.head
        for key, data in (
            (layout.pulse_key(1, n + 1), built.data),
            (layout.entropy_record_key(1, n + 1), rec),
        ):
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)
    for key in (layout.LAST_KEY, layout.chain_last_key(1)):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(built.data)
    cert = root / layout.certificate_key(signer.certificate_id.hex())
    cert.parent.mkdir(parents=True, exist_ok=True)
    cert.write_bytes(signer.certificate_pem)
    for batch_id, data in released.items():
        path = root / layout.batch_key(batch_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    descriptor = SiteDescriptor(entropy_records=Promise(1, 1), raw_data=Promise(1, 1))
    (root / layout.SITE_KEY).write_bytes(encode_descriptor(descriptor))
    return root


IN_USE = "raw batch: the last pulse's batch is not published yet (published once used up)"


def test_chain_checks_every_published_raw_batch(raw_site: Path) -> None:
    report = replay_chain(LocalSource(raw_site), check_pq=False)
    assert report.ok, report.failures
    cited = [
        json.loads(p.read_bytes())["batchId"]
        for p in sorted(
            (raw_site / "beacon/2.0/chain/1/entropy").iterdir(), key=lambda p: int(p.name)
        )
    ]
    assert report.raw_batches == {"valid": cited.count("job-1"), "missing": cited.count("job-2")}
    assert report.not_checked[IN_USE] == 1


def test_a_flipped_raw_batch_is_a_failure(raw_site: Path) -> None:
    path = raw_site / layout.batch_key("job-1")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    report = replay_chain(LocalSource(raw_site), check_pq=False)
    assert not report.ok
    assert {f.check for f in report.failures} == {"raw batch"}
    assert all("batchSha512" in f.detail for f in report.failures)


def test_a_withheld_used_up_raw_batch_is_a_failure(raw_site: Path) -> None:
    (raw_site / layout.batch_key("job-1")).unlink()
    report = replay_chain(LocalSource(raw_site), check_pq=False)
    assert [f.check for f in report.failures] == ["raw batch"]
    assert "batch job-1, used up by pulses 1.." in report.failures[0].detail
    # Without the promise, the same absence is said, not failed.
    unpromised = dataclasses.replace(
        parse_descriptor((raw_site / layout.SITE_KEY).read_bytes()), raw_data=None
    )
    (raw_site / layout.SITE_KEY).write_bytes(encode_descriptor(unpromised))
    quiet = replay_chain(LocalSource(raw_site), check_pq=False)
    assert quiet.ok and any("does not promise raw data" in k for k in quiet.not_checked)


def test_nist_site_descriptor_is_nothing() -> None:
    assert not NIST_SITE.present and NIST_SITE.policy_for(1, 1).require_entropy is False


def test_what_is_fetched_is_what_the_site_promises_or_the_policy_requires() -> None:
    # A NIST site (no descriptor): pulses only, unless the policy asks for more.
    assert NIST_SITE.fetches(ANY) == (False, False)
    assert NIST_SITE.fetches(Policy(require_entropy=True, require_pq=True)) == (True, True)
    ours = SiteDescriptor(entropy_records=Promise(1, 1), cosignatures=Promise(1, 5))
    assert ours.fetches(ANY) == (True, True)
    assert ours.fetches(ANY, check_pq=False) == (True, False)
    assert SiteDescriptor(entropy_records=Promise(1, 1)).fetches(ANY) == (True, False)
