"""Failover leaves nothing behind (issue 21, C and D), with real processes.

C: the active dies after storing pulse N's plan, after signing it, or between
its entropy record N and pulse N; the new active must not wedge, and must not
sign a pulse N of its own: it signs the stored plan, which gives the very
bytes the dead active signed (``beacon.plan``). D: the active dies half-way
through publishing pulse N; the new active completes pulse N's derived objects
(time alias, page, index entry, ``last``).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.fetch import LocalSource
from beacon_verifier.format import STATUS_CHAIN_START_OR_NO_PRECOMMIT, parse_pulse
from beacon_verifier.timeindex import resolve

from beacon.plan import Plan
from beacon.publish.site import pulse_page_key
from beacon.state import State
from tests.beacon_proc import replay, run_verify
from tests.drand_relay import running_relay, signing_chain_for
from tests.integration.s3server import SeaweedS3Server
from tests.integration.test_failover import Store, dir_store, pair, s3_store, wait_until

pytestmark = pytest.mark.integration

ENV = {"BEACON_ENTROPY_SOURCE": "os", "BEACON_KEY_BITS": "2048"}
DIES_AT = 8  # late enough for the standby to be waiting under load


def _kill_active_at(
    tmp_path: Path, failpoint: str, env: dict[str, str] | None = None, store: Store | None = None
) -> Path:
    """a dies at ``failpoint`` while publishing pulse DIES_AT; b takes over and goes on."""
    site = tmp_path / "site"
    env = env or ENV | {"BEACON_OUT_DIR": str(site)}
    store = store or dir_store(site)
    with pair(tmp_path, env) as (a, b):
        a.env = env | {"BEACON_FAILPOINT": f"{failpoint}:{DIES_AT}"}
        a.start()
        wait_until("a to be active", lambda: "lease: active as" in a.text())
        b.start()
        wait_until("b to wait as standby", lambda: "lease: standby as" in b.text())
        assert a.wait(timeout=120) == -signal.SIGKILL, a.text()
        wait_until("b to take over", lambda: "lease: took over from" in b.text())
        wait_until("b to publish 3 pulses", lambda: store.last_index() >= DIES_AT + 3)
        b.stop()
        assert b.process is not None and b.process.returncode == 0, b.text()
    return site


def _signed_by(root: Path, index: int) -> bytes | None:
    """Pulse ``index`` as the instance at ``root`` signed it (its state), if it did."""
    state = State(root / "beacon-data" / "state.sqlite", readonly=True)
    try:
        return state.pulse_at(1, index)
    finally:
        state.close()


@pytest.mark.parametrize("failpoint", ["after-commit", "after-entropy-record"])
def test_a_pulse_signed_by_a_dead_active_is_the_one_its_successor_publishes(
    tmp_path: Path, failpoint: str
) -> None:
    """The key never signs two pulses for one index, even when the signer dies unseen."""
    site = _kill_active_at(tmp_path, failpoint)
    report = replay(site)
    assert report.ok and not report.missing, report
    signed = _signed_by(tmp_path / "a", DIES_AT)
    assert signed is not None  # a signed pulse DIES_AT before it died
    assert (site / layout.pulse_key(1, DIES_AT)).read_bytes() == signed
    # b could not know the value a committed to next: pulse DIES_AT + 1 says so.
    following = parse_pulse((site / layout.pulse_key(1, DIES_AT + 1)).read_bytes())
    assert following.status_code & STATUS_CHAIN_START_OR_NO_PRECOMMIT
    # The record a died with opens a's precommitment: pulse DIES_AT lost nothing.
    inherited = parse_pulse(signed)
    assert not inherited.status_code & STATUS_CHAIN_START_OR_NO_PRECOMMIT


def test_a_plan_stored_by_a_dead_active_is_signed_by_its_successor(tmp_path: Path) -> None:
    site = _kill_active_at(tmp_path, "before-commit")
    assert _signed_by(tmp_path / "a", DIES_AT) is None  # a died before committing it
    plan = Plan.from_bytes(
        next((site / layout.ROOT / "chain/1/plan" / str(DIES_AT)).iterdir()).read_bytes()
    )
    published = parse_pulse((site / layout.pulse_key(1, DIES_AT)).read_bytes())
    assert published.time_stamp == plan.pulse.time_stamp
    assert published.local_random_value == plan.pulse.local_random_value
    assert replay(site).ok


def test_an_orphan_record_under_object_lock_does_not_wedge(
    tmp_path: Path, s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    locked = {"BEACON_S3_BUCKET": s3_running.locked_bucket, "BEACON_S3_OBJECT_LOCK_DAYS": "1"}
    env = s3_running.beacon_env(key_prefix) | locked
    base = s3_store(s3_running, key_prefix)
    client = s3_running.client()

    def get(key: str) -> bytes | None:
        try:
            body: bytes = client.get_object(
                Bucket=s3_running.locked_bucket, Key=f"{key_prefix}/{key}"
            )["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
        return body

    store = Store(get, [f"s3://{s3_running.locked_bucket}/{key_prefix}"])
    store.env = base.env
    _kill_active_at(tmp_path, "after-entropy-record", env, store)
    assert get(layout.pulse_key(1, DIES_AT)) == _signed_by(tmp_path / "a", DIES_AT)
    report = run_verify(["chain", *store.verify_args, "--json"], env=store.env)
    assert report.returncode == 0, report.stdout + report.stderr


def test_the_new_active_completes_a_half_published_pulse(tmp_path: Path) -> None:
    site = _kill_active_at(tmp_path, "mid-publish")
    report = replay(site)
    assert report.ok and not report.missing, report
    last = parse_pulse((site / layout.LAST_KEY).read_bytes())
    source = LocalSource(site)
    for index in range(1, last.pulse_index + 1):
        pulse = parse_pulse((site / layout.pulse_key(1, index)).read_bytes())
        assert (site / layout.time_key(pulse.time_ms)).read_bytes() == pulse.raw, index
        assert (site / pulse_page_key(1, index)).is_file(), index
        assert resolve("at_or_after", pulse.time_ms, source.get) == (1, index), index


def test_a_resumed_active_cannot_overwrite_what_the_new_active_wrote(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = ENV | {"BEACON_OUT_DIR": str(site)}
    store = dir_store(site)
    with pair(tmp_path, env) as (a, b):
        # a freezes with pulse DIES_AT's index writes planned but not made.
        a.env = env | {"BEACON_FAILPOINT": f"after-index-plan:{DIES_AT}:stop"}
        a.start()
        wait_until("a to be active", lambda: "lease: active as" in a.text())
        b.start()
        wait_until("b to wait as standby", lambda: "lease: standby as" in b.text(), timeout=120)
        wait_until("b to take over", lambda: "lease: took over from" in b.text(), timeout=120)
        seen = store.last_index()
        wait_until("b to publish 3 pulses", lambda: store.last_index() >= seen + 3)
        a.signal(signal.SIGCONT)  # a finishes what it planned before the pause
        assert a.wait() == 1, a.text()
        wait_until("b to go on", lambda: store.last_index() >= seen + 5)
        b.stop()
    last = parse_pulse((site / layout.LAST_KEY).read_bytes())
    source = LocalSource(site)
    for index in range(1, last.pulse_index + 1):
        pulse = parse_pulse((site / layout.pulse_key(1, index)).read_bytes())
        assert resolve("at_or_after", pulse.time_ms, source.get) == (1, index), index
    assert replay(site).ok


def test_a_dead_actives_drand_round_record_is_its_successors(tmp_path: Path) -> None:
    """The dead active published the drand round record of pulse N (written before the
    pulse); its successor signs pulse N as planned, with that round, so the record is
    the pulse's and nothing collides."""
    tc = signing_chain_for(1)
    site = tmp_path / "site"
    with running_relay(tc) as relay:
        env = ENV | {
            "BEACON_OUT_DIR": str(site),
            "BEACON_EXTERNAL_SOURCE": "drand",
            "BEACON_DRAND_URLS": relay.url,
            "BEACON_DRAND_CHAIN_HASH": tc.chain.chain_hash.hex(),
            "BEACON_DRAND_PUBLIC_KEY": tc.chain.public_key.hex(),
            "BEACON_EXTERNAL_WAIT_MS": "400",
        }
        _kill_active_at(tmp_path, "after-entropy-record", env)
    orphans = sorted((site / "beacon" / "2.0" / "chain" / "1" / "external").iterdir())
    times = {
        parse_pulse(p.read_bytes()).time_ms for p in (site / layout.ROOT).glob("chain/1/pulse/*")
    }
    assert {int(o.name) for o in orphans} == times  # no orphan: every record has its pulse
    assert (site / layout.pulse_key(1, DIES_AT)).read_bytes() == _signed_by(tmp_path / "a", DIES_AT)
    info = tmp_path / "drand-info.json"
    info.write_text(json.dumps(tc.chain.info()))
    ok = run_verify(["chain", str(site), "--drand-info", str(info), "--require-external"])
    assert ok.returncode == 0, ok.stdout + ok.stderr
