"""beacon-verify chain throughput, against its floor: the RSA and SHA-512 work alone.

Builds once, cached under build/verify_chain/, a chain of --pulses pulses (default
100,000) signed with RSA-4096 by the beacon's own builder (beacon.pulse.builder),
60 s apart from a fixed start, each with an os-fallback entropy record, and
publishes it twice:

- plain/: the per-pulse layout: pulse and entropy objects, the certificate, the
  ``last`` pointers and the time index (beacon.publish.indexes.build_indexes);
- archives/: the same objects (hard links) plus a daily archive for every
  complete UTC day (beacon.publish.archives.build_day_archive).

Signing is sequential (each pulse links the previous outputValue), so the build
runs as a two-process pipeline: this process builds and signs, a second one
writes files and archives.

Then, in one run, it times ``beacon-verify chain SITE --jobs J`` as a separate
process on each site, with its peak RSS (the verifier and its workers), and the
floor on the same pulses: the RSA-4096 verification of S and the SHA-512
computations the checks need (outputValue, the precommitment, the entropy
record), with S, signatures and records prepared beforehand (no parsing), in one
process and in J processes at once. After a warm-up run of each site, --runs
rounds each time the floor and both sites, so that all three see the same load;
medians are reported. It prints pulses/s, the floor, their ratio and the
extrapolated time for a year of pulses (525,600), next to the targets of issue
#6. The machine is shared, so the load average is printed too. It asserts nothing.

    .venv/bin/python bench/verify_chain.py [--pulses N] [--runs R] [--jobs J]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from beacon_verifier import layout
from beacon_verifier.checks import TrustedCertificate
from beacon_verifier.format import canonical_json, parse_pulse, signing_input
from beacon_verifier.timeindex import TimeEntry
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from beacon.entropy.record import fallback_record
from beacon.publish.archives import ArchiveItem, build_day_archive
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


def _writer(queue: Any, plain: Path, archives: Path) -> None:
    """The second process of the build: per-pulse objects, then daily archives."""
    day: datetime.date | None = None
    items: list[ArchiveItem] = []
    while (batch := queue.get()) is not None:
        for index, time_ms, data, record in batch:
            _write(plain / layout.pulse_key(1, index), data)
            _write(plain / layout.entropy_record_key(1, index), record)
            this_day = layout.day_of(time_ms)
            if day is not None and this_day != day:
                _write(archives / layout.archive_key(day), build_day_archive(day, items))
                items = []
            day = this_day
            items.append(
                ArchiveItem(
                    time_ms=time_ms, chain=1, pulse=index, pulse_bytes=data, entropy_bytes=record
                )
            )
    # The last day is not complete: like the beacon, no archive for it.


def _identity() -> Signer:
    directory = BUILD / "identity"
    if (directory / "signing-key.pem").exists():
        return load_identity(directory)
    return init_identity(
        directory,
        name="verify_chain bench",
        now=datetime.datetime(2025, 12, 1, tzinfo=datetime.UTC),
        key_bits=4096,
    )


def build(pulses: int) -> Path:
    """Build the chain of ``pulses`` pulses under build/verify_chain/ unless it is there."""
    target = BUILD / f"chain-{pulses}"
    if (target / "complete").exists():
        return target
    if target.exists():
        shutil.rmtree(target)
    plain, archives = target / "plain", target / "archives"
    signer = _identity()
    print(f"building {pulses} pulses (RSA-4096, 2 processes) in {target} ...", flush=True)
    started = time.monotonic()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue(maxsize=64)
    writer = ctx.Process(target=_writer, args=(queue, plain, archives))
    writer.start()
    head = None
    batch: list[tuple[int, int, bytes, bytes]] = []
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
        batch.append((n + 1, built.pulse.time_ms, built.data, record))
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
    for key, data in build_indexes(entries).items():
        _write(plain / key, data)
    writer.join()
    if writer.exitcode != 0:
        raise SystemExit(f"the writer process failed ({writer.exitcode})")
    for path in plain.rglob("*"):
        if path.is_file():
            link = archives / path.relative_to(plain)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, link)
    (target / "complete").write_text(f"{pulses}\n")
    print(f"built in {time.monotonic() - started:.0f} s", flush=True)
    return target


# --- timing ------------------------------------------------------------------------------


def _verify_once(site: Path, jobs: int, archives: bool) -> tuple[float, int, dict[str, Any]]:
    """One ``beacon-verify chain`` process: wall seconds, peak RSS (KiB, the process and
    its workers), and its JSON report."""
    args = [sys.executable, "-m", "beacon_verifier.cli", "chain", str(site), "--json"]
    args += ["--jobs", str(jobs)] + ([] if archives else ["--no-archives"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "verifier")])}
    started = time.perf_counter()
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env) as proc:
        assert proc.stdout is not None
        out = proc.stdout.read()
        # wait4 gives this child's own rusage, its reaped workers' included.
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    return wall, usage.ru_maxrss, json.loads(out)


def _floor_inputs(
    site: Path, first: int, count: int
) -> tuple[Any, list[tuple[bytes, bytes, bytes, bytes]]]:
    """The public key and, per pulse, (S, signature, localRandomValue, entropy record)."""
    cert_dir = site / layout.ROOT / "certificate"
    (cert_path,) = cert_dir.iterdir()
    public_key = TrustedCertificate.from_bytes(cert_path.read_bytes()).public_key
    items = []
    for index in range(first, first + count):
        pulse = parse_pulse((site / layout.pulse_key(1, index)).read_bytes())
        record = (site / layout.entropy_record_key(1, index)).read_bytes()
        items.append(
            (signing_input(pulse), pulse.signature_value, pulse.local_random_value, record)
        )
    return public_key, items


def _floor_loop(public_key: Any, items: list[tuple[bytes, bytes, bytes, bytes]]) -> None:
    """The work no verifier can skip: the RSA verification of S, and the SHA-512 of
    outputValue (S ‖ signature), of the precommitment (localRandomValue) and of the
    entropy record."""
    pad, sha512 = padding.PKCS1v15(), hashes.SHA512()
    for signed, signature, local_random_value, record in items:
        public_key.verify(signature, signed, pad, sha512)
        hashlib.sha512(signed + signature).digest()
        hashlib.sha512(local_random_value).digest()
        hashlib.sha512(record).digest()


def _floor_worker(site: Path, first: int, count: int, barrier: Any, results: Any) -> None:
    public_key, items = _floor_inputs(site, first, count)
    barrier.wait()
    started = time.monotonic()
    _floor_loop(public_key, items)
    results.put((started, time.monotonic()))


def floor_rate(site: Path, processes: int, pulses: int) -> float:
    """Pulses per second of the floor alone over ``pulses`` pulses, in ``processes``
    processes started together (inputs prepared first, outside the timing)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    share = pulses // processes
    workers = [
        ctx.Process(target=_floor_worker, args=(site, 1 + i * share, share, barrier, results))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    spans = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    elapsed: float = max(end for _, end in spans) - min(start for start, _ in spans)
    return share * processes / elapsed


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pulses", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="rounds of timed runs (median)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    target = build(args.pulses)
    archives = len(list((target / "archives" / layout.ARCHIVE_ROOT).iterdir()))
    print(
        f"verify_chain: {args.pulses} pulses signed with RSA-4096, 60 s apart, "
        f"{archives} daily archives; beacon-verify chain --jobs {args.jobs}; "
        f"median of {args.runs} rounds (floor, plain layout, archives) after a warm-up"
    )
    print(f"load average before: {_load()}")
    modes = {
        "plain layout  ": (target / "plain", False),
        "daily archives": (target / "archives", True),
    }
    for site, use_archives in modes.values():
        _verify_once(site, args.jobs, use_archives)  # warm-up: page cache, imports
    single_floor = floor_rate(target / "plain", 1, args.pulses)
    floors: list[float] = []
    walls: dict[str, list[float]] = {label: [] for label in modes}
    peaks: dict[str, list[int]] = {label: [] for label in modes}
    for _ in range(args.runs):
        floors.append(floor_rate(target / "plain", args.jobs, args.pulses))
        for label, (site, use_archives) in modes.items():
            wall, peak, report = _verify_once(site, args.jobs, use_archives)
            if not report.get("ok") or report.get("pulsesChecked") != args.pulses:
                print(f"  {label}: unexpected report: {json.dumps(report)[:300]}")
            walls[label].append(wall)
            peaks[label].append(peak)
    floor = statistics.median(floors)
    print(
        "floor (RSA-4096 verification + 3 SHA-512 per pulse, inputs prepared, no parsing): "
        f"1 process {single_floor:,.0f} pulses/s; {args.jobs} processes {floor:,.0f} pulses/s "
        f"(runs {' '.join(f'{f:,.0f}' for f in floors)})"
    )
    verdicts = []
    for label, runs in walls.items():
        rate = args.pulses / statistics.median(runs)
        ratio = floor / rate
        verdicts.append((label.strip(), rate, ratio))
        print(
            f"{label} --jobs {args.jobs}: {rate:,.0f} pulses/s "
            f"(runs {' '.join(f'{w:.2f}' for w in runs)} s), "
            f"{ratio:.2f} x the floor, one year (525,600 pulses) in {YEAR_OF_PULSES / rate:.1f} s, "
            f"peak RSS {max(peaks[label]) / 1024:.0f} MB"
        )
    for label, rate, ratio in verdicts:
        verdict = "met" if rate >= TARGET_RATE and ratio <= TARGET_RATIO else "NOT met"
        print(
            f"issue #6 target (>= {TARGET_RATE:,} pulses/s and <= {TARGET_RATIO} x the floor) "
            f"from {label}: {rate:,.0f} pulses/s, {ratio:.2f} x: {verdict}"
        )
    print(f"load average after:  {_load()}")


if __name__ == "__main__":
    main()
