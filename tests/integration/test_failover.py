"""Active/standby failover on the store: two real ``beacon run`` processes, one lease.

Both instances share the signing identity and the store, not their state. The
tests kill or pause the active one and check that the standby takes over within
two periods, continues the same chain (statusCode bit 1 on its first pulse),
and that an old active coming back never publishes again.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.format import STATUS_CHAIN_START_OR_NO_PRECOMMIT, parse_pulse

from beacon.lease import LEASE_KEY
from beacon.pulse.keys import CERT_FILE, KEY_FILE, PQ_KEY_FILE
from beacon.state import State
from tests.beacon_proc import beacon_env, run_beacon, run_verify
from tests.integration.s3server import SeaweedS3Server

pytestmark = pytest.mark.integration

PERIOD = 1.0
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


class Instance:
    """One ``beacon run`` process with its own data directory and log file."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.log = root / "beacon.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "beacon.cli", "run", "--period", str(PERIOD)],
                cwd=self.root,
                env=beacon_env(self.env),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def logged_at(self, pattern: str) -> float | None:
        """The wall time (Unix seconds) of the first log line matching ``pattern``."""
        for line in self.text().splitlines():
            if re.search(pattern, line):
                found = _LOG_TIME.match(line)
                assert found, line
                stamp = datetime.datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f")
                return stamp.timestamp()
        return None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_until(what: str, condition: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def pair(tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[Instance, Instance]]:
    """Two instances sharing one identity (``beacon init`` once, keys copied 0600)."""
    a, b = Instance(tmp_path / "a", env), Instance(tmp_path / "b", env)
    for instance in (a, b):
        instance.root.mkdir()
    init = run_beacon(a.root, ["init"], env=env)
    assert init.returncode == 0, init.stderr
    (b.root / "beacon-data").mkdir(mode=0o700)
    for name in (KEY_FILE, CERT_FILE, PQ_KEY_FILE):
        shutil.copy2(a.root / "beacon-data" / name, b.root / "beacon-data" / name)
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


class Store:
    """Reads the shared store the way a client does (S3 or a directory)."""

    def __init__(self, get: Callable[[str], bytes | None], verify_args: list[str]) -> None:
        self.get = get
        self.verify_args = verify_args
        self.env: dict[str, str] = {}

    def last_index(self) -> int:
        data = self.get(layout.LAST_KEY)
        return 0 if data is None else parse_pulse(data).pulse_index

    def holder(self) -> str | None:
        data = self.get(LEASE_KEY)
        return None if data is None else str(json.loads(data)["holder"])


def s3_store(server: SeaweedS3Server, prefix: str) -> Store:
    client = server.client()

    def get(key: str) -> bytes | None:
        try:
            body: bytes = client.get_object(Bucket=server.bucket, Key=f"{prefix}/{key}")[
                "Body"
            ].read()
        except client.exceptions.NoSuchKey:
            return None
        return body

    store = Store(get, [f"s3://{server.bucket}/{prefix}"])
    store.env = server.aws_env()
    return store


def dir_store(site: Path) -> Store:
    def get(key: str) -> bytes | None:
        path = site / key
        return path.read_bytes() if path.is_file() else None

    return Store(get, [str(site)])


@pytest.fixture(params=["s3", "local"])
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, key_prefix: str
) -> tuple[dict[str, str], Store]:
    common = {"BEACON_ENTROPY_SOURCE": "os", "BEACON_KEY_BITS": "2048"}
    if request.param == "local":
        site = tmp_path / "site"
        return common | {"BEACON_OUT_DIR": str(site)}, dir_store(site)
    server: SeaweedS3Server = request.getfixturevalue("s3_running")
    return server.beacon_env(key_prefix), s3_store(server, key_prefix)


def start_active_then_standby(a: Instance, b: Instance, store: Store) -> str:
    """Start ``a``, let it publish, start ``b`` as standby. Returns a's instance id."""
    a.start()
    wait_until("a to publish pulse 3", lambda: store.last_index() >= 3)
    active = store.holder()
    assert active is not None and f"lease: active as {active}" in a.text()
    b.start()
    wait_until("b to wait as standby", lambda: "lease: standby as" in b.text())
    seen = store.last_index()
    wait_until("two more pulses from a", lambda: store.last_index() >= seen + 2)
    assert store.holder() == active
    assert "took over" not in b.text()
    return active


def test_standby_takes_over_a_killed_active_within_two_periods(
    tmp_path: Path, setup: tuple[dict[str, str], Store]
) -> None:
    env, store = setup
    with pair(tmp_path, env) as (a, b):
        dead = start_active_then_standby(a, b, store)
        killed_at = time.time()
        a.signal(signal.SIGKILL)
        a.wait()
        wait_until("b to take over", lambda: "lease: took over from" in b.text())
        taken_at = b.logged_at("lease: took over from")
        assert taken_at is not None
        assert taken_at - killed_at <= 2 * PERIOD, f"takeover after {taken_at - killed_at:.2f} s"
        found = re.search(rf"took over from {dead}, head is pulse 1/(\d+)", b.text())
        assert found, b.text()
        head = int(found.group(1))
        wait_until("b to publish 3 pulses", lambda: store.last_index() >= head + 3)
        b.stop()
        assert b.process is not None and b.process.returncode == 0, b.text()

    # If the dead instance stored the plan of pulse head + 1, b signed that plan
    # (beacon.plan): it opens the dead one's precommitment. b's own first pulse
    # cannot open the value the dead instance committed to next.
    inherited = "inheriting the plan a previous active stored" in b.text()
    first = parse_pulse(store.get(layout.pulse_key(1, head + 1)) or b"")
    own = parse_pulse(store.get(layout.pulse_key(1, head + 1 + inherited)) or b"")
    assert bool(first.status_code & STATUS_CHAIN_START_OR_NO_PRECOMMIT) != inherited
    assert own.status_code & STATUS_CHAIN_START_OR_NO_PRECOMMIT
    assert store.holder() != dead
    report = run_verify(["chain", *store.verify_args, "--json"], env=store.env)
    assert report.returncode == 0, report.stdout + report.stderr
    summary = json.loads(report.stdout)
    assert summary["pulsesChecked"] == store.last_index() and not summary["missing"]


def test_paused_active_finds_the_lease_lost_and_publishes_nothing(
    tmp_path: Path, setup: tuple[dict[str, str], Store]
) -> None:
    env, store = setup
    with pair(tmp_path, env) as (a, b):
        start_active_then_standby(a, b, store)
        a.signal(signal.SIGSTOP)
        wait_until("b to take over", lambda: "lease: took over from" in b.text())
        seen = store.last_index()
        wait_until("b to publish", lambda: store.last_index() >= seen + 2)
        a.signal(signal.SIGCONT)
        assert a.wait() == 1, a.text()  # it stops on its own
        assert re.search(r"lease: lost to [0-9a-f]{16}; stopping", a.text()), a.text()
        wait_until("b to go on", lambda: store.last_index() >= seen + 4)
        b.stop()

    # Whatever a signed and did not publish stayed in its state. It can only be
    # a plan the store holds (beacon.plan), so b published the very same pulse
    # at that index, or nothing there: never another pulse.
    state = State(a.root / "beacon-data" / "state.sqlite", readonly=True)
    try:
        stranded = state.outbox()
    finally:
        state.close()
    for item in stranded:
        stored = store.get(layout.pulse_key(item.chain_index, item.pulse_index))
        assert stored in (None, item.pulse), item.pulse_index
    report = run_verify(["chain", *store.verify_args, "--json"], env=store.env)
    assert report.returncode == 0, report.stdout + report.stderr
    assert json.loads(report.stdout)["pulsesChecked"] == store.last_index()
