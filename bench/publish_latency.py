"""Publish latency: how long after its boundary each pulse file is complete.

Runs the real `beacon run --period 1` (default entropy: local qiskit-aer jobs)
to a fresh local directory for N pulses, several times, and prints p50 / p99 /
max of (time the pulse file is complete) - (its timeStamp), per run and the
median over runs. A pulse file appears atomically (link of a fully written,
fsynced temp file), so its inode change time is the moment it was complete.
The kernel stamps inodes from its coarse clock (one scheduler tick, ~4 ms), so
figures are +-4 ms and a value slightly below 0 means "within a tick".
Target from the issue: p99 under 250 ms.

``--external drand`` mixes a drand round into every pulse, from a drand-compatible
relay on 127.0.0.1 (tests/drand_relay.py: a test chain with a 1 s period, each
round signed with blst and released ``--relay-delay-ms`` after its time; drand's
own relays deliver 300 to 850 ms after). The pulse then waits for the round:
target p99 <= 1500 ms with the wait included. ``--external none`` (the default
here) is the baseline without it.

    python bench/publish_latency.py [--pulses 120] [--runs 3] [--source local|os]
        [--external none|drand] [--relay-delay-ms 850] [--period 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_P99_MS = 250.0
TARGET_P99_DRAND_MS = 1500.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def one_run(pulses: int, source: str, external: dict[str, str], period: int = 1) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "BEACON_ENTROPY_SOURCE": source, **external}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "verifier")])
        subprocess.run(
            [
                sys.executable,
                "-m",
                "beacon.cli",
                "run",
                "--period",
                str(period),
                "--count",
                str(pulses),
                "-q",
            ],
            cwd=tmp,
            env=env,
            check=True,
            timeout=pulses * (period + 1) + 120,
        )
        chain = Path(tmp) / "public" / "beacon" / "2.0" / "chain" / "1" / "pulse"
        latencies = []
        for index in range(1, pulses + 1):
            path = chain / str(index)
            boundary_ms = pulse_time_ms(path.read_bytes())
            latencies.append(path.stat().st_ctime_ns / 1e6 - boundary_ms)
        return latencies


def pulse_time_ms(data: bytes) -> int:
    from beacon_verifier.format import parse_timestamp

    return parse_timestamp(json.loads(data)["pulse"]["timeStamp"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulses", type=int, default=120)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--source", default="local", choices=["local", "os"])
    parser.add_argument("--external", default="none", choices=["none", "drand"])
    parser.add_argument("--relay-delay-ms", type=int, default=850)
    parser.add_argument(
        "--period", type=int, default=1, help="seconds; the wait for round T is capped at half"
    )
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "verifier"), str(ROOT)]
    external = {"BEACON_EXTERNAL_SOURCE": "none"}
    relay = None
    if args.external == "drand":
        from tests.drand_relay import Relay, signing_chain_for

        relay = Relay(signing_chain_for(1)).start()
        relay.release_delay_ms = args.relay_delay_ms
        external = {
            "BEACON_EXTERNAL_SOURCE": "drand",
            "BEACON_DRAND_URLS": relay.url,
            "BEACON_DRAND_CHAIN_HASH": relay.chain.chain_hash.hex(),
            "BEACON_DRAND_PUBLIC_KEY": relay.chain.public_key.hex(),
            "BEACON_EXTERNAL_WAIT_MS": "5000",  # capped at half the 1 s period by the beacon
        }
    target = TARGET_P99_DRAND_MS if relay else TARGET_P99_MS
    rows = []
    for run in range(1, args.runs + 1):
        lat = one_run(args.pulses, args.source, external, args.period)
        row = (percentile(lat, 50), percentile(lat, 99), max(lat))
        rows.append(row)
        print(
            f"run {run}: {len(lat)} pulses  p50 {row[0]:7.1f} ms  p99 {row[1]:7.1f} ms  "
            f"max {row[2]:7.1f} ms",
            flush=True,
        )
    p50, p99, worst = (statistics.median(col) for col in zip(*rows, strict=True))
    if relay is not None:
        relay.close()
    how = "no external" if relay is None else f"drand relay +{args.relay_delay_ms} ms"
    print(
        f"median of {args.runs} runs ({args.source} entropy, {how}, period {args.period} s, "
        f"{args.pulses} pulses): p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {worst:.1f} ms"
    )
    print(f"p99 / target ({target:.0f} ms) = {p99 / target:.3f}")


if __name__ == "__main__":
    main()
