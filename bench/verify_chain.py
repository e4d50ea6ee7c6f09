"""beacon-verify chain throughput, against its floor: the signature and SHA-512 work alone.

Builds once, cached under build/verify_chain/, a chain of --pulses pulses (default
100,000) signed with RSA-4096 and co-signed with ML-DSA-65 by the beacon's own
builder (beacon.pulse.builder), 60 s apart from a fixed start, each with an
os-fallback entropy record, and publishes it twice:

- plain/: the per-pulse layout: pulse, entropy and co-signature objects, the
  certificate, the PQ key document, the ``last`` pointers and the time index
  (beacon.publish.indexes.build_indexes);
- archives/: the same objects (hard links) plus, for every complete UTC day, its
  day archive and its PQ archive of co-signatures, as the beacon writes them
  (beacon.publish.archives.build_day_archive and build_pq_archive).

Signing is sequential (each pulse links the previous outputValue), so the build
runs as a two-process pipeline: this process builds and signs, a second one
writes files and archives.

Then, in one run, it times ``beacon-verify chain SITE --jobs J`` as a separate
process on each site, without PQ checks (``--no-pq``: the figure of issue #6)
and with them, with its peak RSS (the verifier and its workers), and two floors
on the same pulses, inputs prepared beforehand (no reading, no parsing), in one
process and in J processes at once:

- the floor: the RSA-4096 verification of S and the SHA-512 computations the
  checks need (outputValue, the precommitment, the entropy record), S hashed once
  for both the signature and outputValue, as the verifier does;
- the PQ floor: the same plus the ML-DSA-65 verification of the co-signature.

The floor's J worker processes start once and keep their prepared inputs. After
a warm-up run of each verifier mode, --runs rounds each run the four modes, each
between two runs of its floor, and compare it with the mean of the two (their
mean time): the machine is shared, and its speed drifts by 10% and more from
minute to minute, so a floor run next to it sees the load the verifier saw, and
the two around it cancel a drift that goes one way.

The verifier reads the chain from memory, as the floor does, and runs with its
modules' bytecode compiled, as an installed package has it:

- it reads a copy of the chain in /dev/shm (tmpfs) when there is room there.
  This machine's kernel pages out page cache idle for about 6 s (DAMON
  ``pageout``), so a chain on disk, even read just before, is partly read from
  the disk again during a run: the figure would time the disk. Where there is
  no /dev/shm, it reads the chain in place after reading every file of it;
- the bytecode goes to build/verify_chain/pycache (PYTHONPYCACHEPREFIX), even
  where PYTHONDONTWRITEBYTECODE is set: without it every run compiles the
  verifier's modules again (about 80 ms here).

It prints, as medians, pulses/s, the ratio of each run to the floor runs around it
(to the PQ floor with PQ checks), and the extrapolated time for a year of
pulses (525,600), next to the targets of issue #6, with the load average. It
asserts nothing.

    .venv/bin/python bench/verify_chain.py [--pulses N] [--runs R] [--jobs J]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from beacon_verifier import layout
from beacon_verifier.checks import TrustedCertificate
from beacon_verifier.descriptor import Promise, SiteDescriptor, encode_descriptor
from beacon_verifier.format import canonical_json, parse_pulse, signing_input
from beacon_verifier.pq import CONTEXT, parse_cosignature, parse_key_document
from beacon_verifier.timeindex import TimeEntry
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, utils

from beacon.entropy.record import fallback_record
from beacon.publish.archives import ArchiveItem, build_day_archive, build_pq_archive
from beacon.publish.indexes import build_indexes
from beacon.pulse.builder import build_pulse
from beacon.pulse.keys import Signer, init_identity, load_identity

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "verify_chain"
PERIOD_MS = 60_000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
BASE_URL = "https://beacon.example"
YEAR_OF_PULSES = 525_600
TARGET_RATE = 12_000
TARGET_RATIO = 1.5
_BATCH = 500
#: Bump when the chain built changes, so that old caches are rebuilt (2: co-signed;
#: 3: co-signatures in PQ archives, not in the day archives; 4: archives deflated
#: with Z_FILTERED; 5: a site.json in each tree, without which the verifier reads a
#: site as NIST's, pulse by pulse, and neither archives nor records).
CACHE_VERSION = 5


# --- building the chain (once) ----------------------------------------------------


def _record(n: int) -> bytes:
    """The entropy record of pulse n + 1: deterministic stand-in OS bits."""
    return canonical_json(
        fallback_record(
            chain_index=1,
            pulse_index=n + 1,
            reason="bench",
            os_bits=hashlib.sha512(b"bench os bits %d" % n).digest(),
        )
    )


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_archives(archives: Path, day: datetime.date, items: list[ArchiveItem]) -> None:
    """A complete day's archives, in the beacon's order: the PQ archive, then the day's."""
    pq_archive = build_pq_archive(day, items)
    if pq_archive is not None:
        _write(archives / layout.pq_archive_key(day), pq_archive)
    _write(archives / layout.archive_key(day), build_day_archive(day, items))


def _writer(queue: Any, plain: Path, archives: Path) -> None:
    """The second process of the build: per-pulse objects, then daily archives."""
    day: datetime.date | None = None
    items: list[ArchiveItem] = []
    while (batch := queue.get()) is not None:
        for index, time_ms, data, record, cosignature in batch:
            _write(plain / layout.pulse_key(1, index), data)
            _write(plain / layout.entropy_record_key(1, index), record)
            _write(plain / layout.pq_signature_key(1, index), cosignature)
            this_day = layout.day_of(time_ms)
            if day is not None and this_day != day:
                _write_archives(archives, day, items)
                items = []
            day = this_day
            items.append(
                ArchiveItem(
                    time_ms=time_ms,
                    chain=1,
                    pulse=index,
                    pulse_bytes=data,
                    entropy_bytes=record,
                    cosignature_bytes=cosignature,
                )
            )
    # The last day is not complete: like the beacon, no archive for it.


def _identity() -> Signer:
    """The bench's RSA-4096 identity with its ML-DSA-65 co-signing key (made once)."""
    directory = BUILD / "identity"
    if (directory / "signing-key.pem").exists():
        signer = load_identity(directory)
    else:
        signer = init_identity(
            directory,
            name="verify_chain bench",
            now=datetime.datetime(2025, 12, 1, tzinfo=datetime.UTC),
            key_bits=4096,
        )
    if signer.pq is None:
        raise SystemExit(f"{directory} has no ML-DSA-65 key: remove it to make a new identity")
    return signer


def build(pulses: int) -> Path:
    """Build the chain of ``pulses`` pulses under build/verify_chain/ unless it is there.

    Caches of other versions (and any unfinished build) are removed first.
    """
    target = BUILD / f"chain-{pulses}-v{CACHE_VERSION}"
    if (target / "complete").exists():
        return target
    for old in BUILD.glob("chain-*"):
        if old == target or not old.name.endswith(f"-v{CACHE_VERSION}"):
            shutil.rmtree(old)
    plain, archives = target / "plain", target / "archives"
    signer = _identity()
    print(
        f"building {pulses} pulses (RSA-4096 + ML-DSA-65, 2 processes) in {target} ...",
        flush=True,
    )
    started = time.monotonic()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue(maxsize=64)
    writer = ctx.Process(target=_writer, args=(queue, plain, archives))
    writer.start()
    head = None
    batch: list[tuple[int, int, bytes, bytes, bytes]] = []
    entries: list[TimeEntry] = []
    record = _record(0)
    last_data = b""
    for n in range(pulses):
        following = _record(n + 1)
        built = build_pulse(
            head,
            time_ms=START_MS + n * PERIOD_MS,
            period_ms=PERIOD_MS,
            local_random_value=hashlib.sha512(record).digest(),
            next_local_random_value=hashlib.sha512(following).digest(),
            signer=signer,
            base_url=BASE_URL,
        )
        head = built.head
        assert built.cosignature is not None  # the identity co-signs
        batch.append((n + 1, built.pulse.time_ms, built.data, record, built.cosignature))
        entries.append(TimeEntry(time_ms=built.pulse.time_ms, chain=1, pulse=n + 1))
        last_data = built.data
        record = following
        if len(batch) == _BATCH:
            queue.put(batch)
            batch = []
        if (n + 1) % 10_000 == 0:
            print(f"  {n + 1} pulses, {time.monotonic() - started:.0f} s", flush=True)
    queue.put(batch)
    queue.put(None)
    for key in (layout.LAST_KEY, layout.CHAIN_LAST_LAST_KEY, layout.chain_last_key(1)):
        _write(plain / key, last_data)
    cert_id = signer.certificate_id.hex()
    _write(plain / layout.certificate_key(cert_id), signer.certificate_pem)
    assert signer.pq is not None
    # As beacon.publish.pipeline.publish_identity writes it.
    _write(plain / layout.pq_key_key(signer.pq.key_id.hex()), signer.pq.key_document)
    for key, data in build_indexes(entries).items():
        _write(plain / key, data)
    # What the beacon promises (beacon.publish.descriptor): records and co-signatures
    # from pulse 1; daily archives where there are some.
    promised = SiteDescriptor(entropy_records=Promise(1, 1), cosignatures=Promise(1, 1))
    _write(plain / layout.SITE_KEY, encode_descriptor(promised))
    writer.join()
    if writer.exitcode != 0:
        raise SystemExit(f"the writer process failed ({writer.exitcode})")
    for path in plain.rglob("*"):
        if path.is_file() and path != plain / layout.SITE_KEY:
            link = archives / path.relative_to(plain)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, link)
    archived = dataclasses.replace(promised, daily_archives=True)
    _write(archives / layout.SITE_KEY, encode_descriptor(archived))
    (target / "complete").write_text(f"{pulses}\n")
    print(f"built in {time.monotonic() - started:.0f} s", flush=True)
    return target


# --- timing ------------------------------------------------------------------------------


def _in_memory(target: Path) -> Path | None:
    """A copy of the chain ``target`` in /dev/shm (hard links kept), or None when there
    is no /dev/shm or not room for it (twice its size, to leave the machine some)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return None
    blocks: dict[tuple[int, int], int] = {}  # per inode: archives/ hard-links plain/'s files
    for directory, _, files in os.walk(target):
        for name in files:
            st = os.lstat(os.path.join(directory, name))
            blocks[st.st_dev, st.st_ino] = st.st_blocks
    size = sum(blocks.values()) * 512
    free = os.statvfs(shm)
    if free.f_bavail * free.f_frsize < 2 * size:
        return None
    copy = Path(tempfile.mkdtemp(prefix="verify_chain-", dir=shm))
    try:
        subprocess.run(["cp", "-a", f"{target}/.", str(copy)], check=True)
    except BaseException:
        shutil.rmtree(copy)
        raise
    return copy


def _warm(site: Path) -> None:
    """Read every file under ``site``, so that the run that follows finds most of them
    in the page cache."""
    for directory, _, files in os.walk(site):
        for name in files:
            with open(os.path.join(directory, name), "rb") as f:
                while f.read(1 << 20):
                    pass


#: Runs the verifier and reports its wall time and resource usage. The peak RSS must
#: be the verifier's own: a process forked from the bench would count the bench's
#: memory as its own (the kernel keeps the forked memory's high-water mark across
#: exec), so the verifier is started from this small launcher instead.
_LAUNCHER = """
import json, os, subprocess, sys, time
started = time.perf_counter()
with subprocess.Popen(sys.argv[1:], stderr=subprocess.DEVNULL) as proc:
    # wait4 gives this child's own rusage, its reaped workers' included.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
wall = time.perf_counter() - started
print(json.dumps([wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss]), file=sys.stderr)
"""


def _verify_once(
    site: Path, jobs: int, archives: bool, pq: bool
) -> tuple[float, tuple[float, float], int, dict[str, Any]]:
    """One ``beacon-verify chain`` process: wall seconds, CPU seconds (user, system), peak
    RSS (KiB), the last two of the process and its workers, and its JSON report."""
    args = [sys.executable, "-m", "beacon_verifier.cli", "chain", str(site), "--json"]
    args += ["--jobs", str(jobs)] + ([] if archives else ["--no-archives"])
    args += [] if pq else ["--no-pq"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "verifier")]),
        "PYTHONPYCACHEPREFIX": str(BUILD / "pycache"),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *args], capture_output=True, env=env, check=True
    )
    wall, user, system, peak = json.loads(done.stderr.splitlines()[-1])
    return wall, (user, system), peak, json.loads(done.stdout)


#: Per pulse: S, the RSA signature, localRandomValue, the entropy record, and the
#: ML-DSA-65 signature of the co-signature object.
FloorItem = tuple[bytes, bytes, bytes, bytes, bytes]


def _floor_inputs(site: Path, first: int, count: int) -> tuple[Any, Any, list[FloorItem]]:
    """The RSA public key, the ML-DSA-65 public key, and each pulse's inputs."""
    cert_dir = site / layout.ROOT / "certificate"
    (cert_path,) = cert_dir.iterdir()
    certificate = TrustedCertificate.from_bytes(cert_path.read_bytes())
    (key_path,) = (site / layout.ROOT / "pq-key").iterdir()
    pq_key = parse_key_document(
        key_path.read_bytes(), {certificate.certificate_id: certificate}.get
    )
    items = []
    for index in range(first, first + count):
        pulse = parse_pulse((site / layout.pulse_key(1, index)).read_bytes())
        record = (site / layout.entropy_record_key(1, index)).read_bytes()
        _, pq_signature = parse_cosignature((site / layout.pq_signature_key(1, index)).read_bytes())
        items.append(
            (
                signing_input(pulse),
                pulse.signature_value,
                pulse.local_random_value,
                record,
                pq_signature,
            )
        )
    return certificate.public_key, pq_key.public_key, items


def _floor_loop(public_key: Any, pq_key: Any | None, items: list[FloorItem]) -> None:
    """The work no verifier can skip: SHA-512 of S, once, for the RSA verification of S
    (given its digest) and for outputValue (S ‖ signature, from the same state), and
    the SHA-512 of the precommitment (localRandomValue) and of the entropy record;
    with ``pq_key``, the ML-DSA-65 verification of S ‖ signature too."""
    pad, prehashed = padding.PKCS1v15(), utils.Prehashed(hashes.SHA512())
    for signed, signature, local_random_value, record, pq_signature in items:
        hashed = hashlib.sha512(signed)
        public_key.verify(signature, hashed.digest(), pad, prehashed)
        hashed.update(signature)
        hashed.digest()
        hashlib.sha512(local_random_value).digest()
        hashlib.sha512(record).digest()
        if pq_key is not None:
            pq_key.verify(pq_signature, signed + signature, CONTEXT)


def _floor_worker(site: Path, first: int, count: int, conn: Any) -> None:
    """Prepare the inputs of pulses ``first``.. once, then time the floor loop over
    them each time the parent asks (it sends whether with PQ; None to stop)."""
    public_key, pq_key, items = _floor_inputs(site, first, count)
    conn.send("ready")
    while (pq := conn.recv()) is not None:
        started = time.monotonic()
        _floor_loop(public_key, pq_key if pq else None, items)
        conn.send((started, time.monotonic()))


class Floor:
    """``processes`` worker processes, each holding the prepared inputs of its share of
    ``pulses`` pulses (read and parsed once, outside every timing) and running the
    floor loop over them when asked, all at once."""

    def __init__(self, site: Path, processes: int, pulses: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.share = pulses // processes
        self.workers = []
        for i in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_floor_worker, args=(site, 1 + i * self.share, self.share, child)
            )
            proc.start()
            self.workers.append((proc, parent))
        for _, conn in self.workers:
            assert conn.recv() == "ready"

    def rate(self, pq: bool, processes: int | None = None) -> float:
        """Pulses per second of the floor (with ``pq``, the PQ floor) in the first
        ``processes`` workers (default: all) started together."""
        chosen = self.workers[:processes]
        for _, conn in chosen:
            conn.send(pq)
        spans = [conn.recv() for _, conn in chosen]
        elapsed: float = max(end for _, end in spans) - min(start for start, _ in spans)
        return self.share * len(chosen) / elapsed

    def close(self) -> None:
        for proc, conn in self.workers:
            conn.send(None)
            proc.join()


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _runs(values: list[float]) -> str:
    return " ".join(f"{v:,.2f}" if v < 1000 else f"{v:,.0f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pulses", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5, help="rounds of timed runs (median)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    target = build(args.pulses)
    archives = len(list((target / "archives" / layout.ARCHIVE_ROOT).glob("*[0-9].jsonl.gz")))
    print(
        f"verify_chain: {args.pulses} pulses signed with RSA-4096 and co-signed with ML-DSA-65, "
        f"60 s apart, {archives} daily archives (and as many PQ archives); "
        f"beacon-verify chain --jobs {args.jobs}; {args.runs} rounds after a warm-up, each "
        "verifier run between two floor runs; medians"
    )
    memory = _in_memory(target)
    chain = target if memory is None else memory
    print(
        f"the verifier reads {'the chain in place' if memory is None else 'a copy'} in {chain}"
        + (", after reading all of it before each run" if memory is None else " (tmpfs)")
    )
    print(f"load average before: {_load()}")
    modes = {
        "plain layout   --no-pq": (chain / "plain", False, False),
        "daily archives --no-pq": (chain / "archives", True, False),
        "plain layout   with PQ": (chain / "plain", False, True),
        "daily archives with PQ": (chain / "archives", True, True),
    }
    floor = None
    try:
        floor = Floor(target / "plain", args.jobs, args.pulses)
        for site, use_archives, pq in modes.values():
            _verify_once(site, args.jobs, use_archives, pq)  # warm-up: page cache, bytecode
        single = {pq: floor.rate(pq, processes=1) for pq in (False, True)}
        floors: dict[bool, list[float]] = {False: [], True: []}
        rates: dict[str, list[float]] = {label: [] for label in modes}
        ratios: dict[str, list[float]] = {label: [] for label in modes}
        peaks: dict[str, list[int]] = {label: [] for label in modes}
        cpus: dict[str, list[tuple[float, float]]] = {label: [] for label in modes}
        for _ in range(args.runs):
            # Each run sits between two floor runs; the one after a run is the one
            # before the next run against the same floor.
            last_floor: dict[bool, float] = {}
            for label, (site, use_archives, pq) in modes.items():
                if memory is None:
                    _warm(site / layout.ARCHIVE_ROOT if use_archives else site)
                if pq not in last_floor:
                    last_floor[pq] = floor.rate(pq)
                    floors[pq].append(last_floor[pq])
                before = last_floor[pq]
                wall, cpu, peak, report = _verify_once(site, args.jobs, use_archives, pq)
                after = last_floor[pq] = floor.rate(pq)
                floors[pq].append(after)
                floor_rate = 2 / (1 / before + 1 / after)  # the mean of their times
                expected = {"valid": args.pulses} if pq else {"not checked": args.pulses}
                if (
                    not report.get("ok")
                    or report.get("pulsesChecked") != args.pulses
                    or report.get("pqSignatures") != expected
                ):
                    print(f"  {label}: unexpected report: {json.dumps(report)[:300]}")
                rates[label].append(args.pulses / wall)
                ratios[label].append(floor_rate * wall / args.pulses)
                peaks[label].append(peak)
                cpus[label].append(cpu)
    finally:
        if floor is not None:
            floor.close()
        if memory is not None:
            shutil.rmtree(memory)
    for pq, name in (
        (False, "floor (RSA-4096 + 3 SHA-512 per pulse)"),
        (True, "PQ floor (RSA-4096 + ML-DSA-65 + 3 SHA-512 per pulse)"),
    ):
        print(
            f"{name}, inputs prepared, no parsing: 1 process {single[pq]:,.0f} pulses/s; "
            f"{args.jobs} processes {statistics.median(floors[pq]):,.0f} pulses/s "
            f"(runs {_runs(floors[pq])})"
        )
    verdicts = []
    for label in modes:
        pq = label.endswith("with PQ")
        rate, ratio = statistics.median(rates[label]), statistics.median(ratios[label])
        user, system = (statistics.median(c[i] for c in cpus[label]) for i in (0, 1))
        if not pq:
            verdicts.append((label.split(" --")[0].strip(), rate, ratio))
        print(
            f"{label} --jobs {args.jobs}: {rate:,.0f} pulses/s (runs {_runs(rates[label])}), "
            f"{ratio:.2f} x the {'PQ floor' if pq else 'floor'} runs around it "
            f"(runs {_runs(ratios[label])}), one year (525,600 pulses) in "
            f"{YEAR_OF_PULSES / rate:.1f} s, peak RSS {max(peaks[label]) / 1024:.0f} MB; "
            f"CPU per pulse, all processes: {user / args.pulses * 1e6:.1f} µs user, "
            f"{system / args.pulses * 1e6:.1f} µs system"
        )
    for label, rate, ratio in verdicts:
        verdict = "met" if rate >= TARGET_RATE and ratio <= TARGET_RATIO else "NOT met"
        print(
            f"issue #6 target (>= {TARGET_RATE:,} pulses/s and <= {TARGET_RATIO} x the floor) "
            f"from {label}, --no-pq: {rate:,.0f} pulses/s, {ratio:.2f} x: {verdict}"
        )
    print(f"load average after:  {_load()}")


if __name__ == "__main__":
    main()
