"""``beacon``: init, run, stop, status.

Thin: parse, load settings, build the adapters, one call, map errors to exit
codes (0 ok, 1 error, 2 usage). A user mistake is one line, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from beacon_verifier.format import format_timestamp

from beacon import __version__
from beacon.config import DEFAULT_SERVE_PORT, Settings, load_settings
from beacon.entropy import EntropySource
from beacon.errors import BeaconError, ConfigError, EntropyError
from beacon.faults import with_entropy_faults
from beacon.lease import lease_ttl_ms
from beacon.publish import Publisher
from beacon.pulse.keys import KEY_FILE, Signer, init_identity, load_identity
from beacon.state import State, read_pid
from beacon.status import state_status

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
log = logging.getLogger("beacon")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="beacon", description="A public quantum randomness beacon.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", type=Path, help="TOML settings file (default ./beacon.toml)")
    parser.add_argument("--data-dir", type=str, help="key, certificate and state directory")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    i = sub.add_parser("init", help="create the signing key (0600) and certificate")
    i.add_argument("--force", action="store_true", help="replace an existing key")
    r = sub.add_parser("run", help="emit pulses on schedule")
    r.add_argument("--period", type=float, help="seconds between pulses (default 60)")
    r.add_argument("--count", type=int, help="stop after N pulses")
    r.add_argument("--out", type=str, help="local site directory (default ./public)")
    r.add_argument(
        "--take-over-chain",
        action="store_true",
        help="continue a published chain signed by another certificate (deliberate)",
    )
    r.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    r.add_argument("--metrics-port", type=int, help="serve Prometheus metrics (default 0: off)")
    r.add_argument("--metrics-address", type=str, help="where metrics listen (default 127.0.0.1)")
    s = sub.add_parser("stop", help="stop the running beacon")
    s.add_argument("--final", action="store_true", help="end the chain with a final pulse")
    s.add_argument("--timeout", type=float, default=0, help="seconds to wait (default: 2 periods)")
    st = sub.add_parser("status", help="show the chain and the running beacon's health")
    st.add_argument("--json", action="store_true")
    sv = sub.add_parser("serve", help="serve a site's NIST Beacon 2.0 REST API (read-only)")
    sv.add_argument("site", nargs="?", help="site root: DIR, s3://bucket/prefix or http(s):// URL")
    sv.add_argument("--host", type=str, help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (default 8080; 0: any free port)")
    return parser


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_source(settings: Settings) -> EntropySource:
    """The configured entropy source; adapters are imported only when chosen.

    A quantum source that cannot even be set up (qiskit missing, no IBM
    credentials) leaves the beacon running on the OS source, loudly: every
    record then says ``os-fallback`` with this reason. A configuration that
    no harvest could ever succeed with raises ``ConfigError`` instead.
    """
    from beacon.entropy.os_source import OsSource

    if settings.entropy_source == "os":
        return OsSource(reason="configured: entropy_source = os")
    try:
        if settings.entropy_source == "ibm":
            from beacon.entropy.ibm_source import IbmQuantumSource

            return IbmQuantumSource.from_settings(settings)
        from beacon.entropy.qiskit_source import LocalQuantumSource

        noisy = settings.local_backend != "aer"
        return LocalQuantumSource(
            noise_backend=settings.local_backend if noisy else None,
            qubits=None if noisy else settings.local_qubits,
            shots=settings.local_shots,
        )
    except (EntropyError, ImportError) as exc:
        if settings.entropy_source == "local":
            # The simulator ships with the beacon: failing to set it up is a
            # setting to fix (a mistyped local_backend), not an outage to ride out.
            raise ConfigError(
                f"entropy_source 'local' (local_backend {settings.local_backend!r}) "
                f"cannot be set up: {exc}"
            ) from None
        reason = f"{settings.entropy_source} quantum source unavailable: {exc}"
        log.warning("%s; using the OS source", reason)
        return OsSource(reason=reason)


def make_publisher(settings: Settings) -> Publisher:
    """The configured publisher (local directory or S3)."""
    if settings.publisher == "s3":
        from beacon.publish.s3 import S3Publisher

        return S3Publisher(
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region or None,
            object_lock_days=settings.s3_object_lock_days or None,
            lease_timeout=max(0.5, lease_ttl_ms(settings.period_ms) / 3000),
        )
    from beacon.publish.local import LocalDirPublisher

    return LocalDirPublisher(settings.out_dir)


def _check_data_dir(settings: Settings) -> None:
    """Make sure ``data_dir`` is a writable directory (creating it 0700), or one line why not."""
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"data_dir {path} cannot be created: {exc.strerror}") from None
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"data_dir {path} is not a writable directory")


def _signer_for_run(settings: Settings) -> Signer:
    """Load the identity; on a brand-new installation create it (and say so).

    A missing key next to an existing chain is an error, never a silent new identity.
    """
    if (settings.data_dir / KEY_FILE).exists() or settings.state_path.exists():
        return load_identity(settings.data_dir)
    signer = init_identity(
        settings.data_dir, name=settings.name, now=_now(), key_bits=settings.key_bits
    )
    log.info(
        "created a new signing identity in %s (certificateId %s…)",
        settings.data_dir,
        signer.certificate_id.hex()[:16],
    )
    return signer


def _cmd_init(settings: Settings, args: argparse.Namespace) -> int:
    _check_data_dir(settings)
    if args.force and (settings.data_dir / KEY_FILE).exists():
        print(
            "warning: replacing the signing key; the next pulse starts a new certificate "
            "(statusCode bit 4)",
            file=sys.stderr,
        )
    signer = init_identity(
        settings.data_dir,
        name=settings.name,
        now=_now(),
        force=args.force,
        key_bits=settings.key_bits,
    )
    print(f"signing key: {settings.data_dir / KEY_FILE} (mode 0600)")
    print(f"certificateId: {signer.certificate_id.hex()}")
    return EXIT_OK


def _cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    # The first run is a website: the gateway is up (or its port refused) before the
    # identity is made or any pulse emitted, and stops after the beacon.
    gateway = _start_gateway(settings)
    try:
        return _run_beacon(settings, args)
    finally:
        if gateway is not None:
            gateway.close()


def _run_beacon(settings: Settings, args: argparse.Namespace) -> int:
    from beacon.clock import SystemClock
    from beacon.drand import make_mixer
    from beacon.entropy.os_source import OsSource
    from beacon.metrics import require_prometheus_client, serve
    from beacon.service import Beacon

    if args.count is not None and args.count < 1:
        raise BeaconError("--count must be at least 1")
    if settings.metrics_port:
        require_prometheus_client()  # before the identity or any pulse
    _check_data_dir(settings)
    source = with_entropy_faults(make_source(settings))  # i26: first, it may refuse the config
    signer = _signer_for_run(settings)
    beacon = Beacon(
        settings=settings,
        signer=signer,
        clock=SystemClock(),
        source=source,  # unchanged unless SOAK_FAULT_DIR
        fallback=lambda reason: OsSource(reason=reason),
        publisher=make_publisher(settings),
        count=args.count,
        external=make_mixer(settings),
        take_over_chain=args.take_over_chain,
    )
    server = None
    if settings.metrics_port:
        try:
            server = serve(
                beacon.metrics, port=settings.metrics_port, address=settings.metrics_address
            )
        except BeaconError:
            beacon.shutdown()
            raise
        log.info("Prometheus metrics at %s", server.url)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s: stopping after the current tick", signal.Signals(signum).name)
        beacon.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        beacon.run()
    finally:
        if server is not None:
            server.close()
    return EXIT_OK


def _start_gateway(settings: Settings) -> Any:
    """``beacon serve`` over the local site on a thread, unless ``serve_port = 0`` or S3."""
    if not settings.serve_port or settings.publisher != "local":
        return None
    from beacon_verifier.fetch import LocalSource

    from beacon.serve import GatewayThread

    gateway = GatewayThread(
        LocalSource(settings.out_dir), settings.serve_address, settings.serve_port
    )
    url = gateway.start()
    print(f"beacon: serving the site and its NIST API at {url}", flush=True)
    return gateway


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from beacon_verifier.errors import FetchError
    from beacon_verifier.fetch import S3Source, Source, open_source

    from beacon.serve import serve_forever

    source: Source
    try:
        if args.site:
            source = open_source(args.site)
        elif settings.publisher == "s3":
            source = S3Source(
                settings.s3_bucket, settings.s3_prefix, settings.s3_endpoint_url or None
            )
        else:
            source = open_source(str(settings.out_dir))
    except FetchError as exc:
        raise BeaconError(f"cannot serve: {exc}") from None
    host = args.host if args.host is not None else settings.serve_address
    port = args.port if args.port is not None else settings.serve_port or DEFAULT_SERVE_PORT
    if not 0 <= port <= 65535:
        raise BeaconError(f"--port must be 0 to 65535, got {port}")
    serve_forever(
        source,
        host,
        port,
        ready=lambda url: print(f"beacon: serving {source.describe()} at {url}", flush=True),
    )
    return EXIT_OK


def _cmd_stop(settings: Settings, args: argparse.Namespace) -> int:
    lock = settings.data_dir / "beacon.lock"
    pid = read_pid(lock)
    if pid is None:
        raise BeaconError(f"no beacon is running on {settings.data_dir}")
    if args.final:
        state = State(settings.state_path)
        try:
            state.set_request("final", "stop --final")
        finally:
            state.close()
        print(f"asked beacon (pid {pid}) to end the chain with its next pulse")
    else:
        os.kill(pid, signal.SIGTERM)
        print(f"asked beacon (pid {pid}) to stop")
    deadline = time.monotonic() + (args.timeout or 2 * settings.period + 30)
    while read_pid(lock) is not None:
        if time.monotonic() > deadline:
            raise BeaconError(f"beacon (pid {pid}) has not stopped yet")
        time.sleep(0.2)
    print("stopped")
    return EXIT_OK


def _cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from beacon.entropy.ibm_source import harvest_report  # i26

    state = State(settings.state_path, readonly=True)
    try:
        head = state.head()
        running = read_pid(settings.data_dir / "beacon.lock") is not None
        # The period the running beacon uses (it records it), not this shell's settings.
        period_ms = int(state.meta("period_ms") or settings.period_ms)
        due = running and head is not None and not head.ended
        info: dict[str, Any] = {
            "running": running,
            "chain": head.chain_index if head else None,
            "lastPulse": head.pulse_index if head else None,
            "lastTimeStamp": format_timestamp(head.time_ms) if head else None,
            "chainEnded": head.ended if head else False,
            "nextDue": format_timestamp(head.time_ms + period_ms) if head and due else None,
            "outbox": state.outbox_length(),
            "entropySource": settings.entropy_source,
            **state_status(state),
        }
        info.update(harvest_report(settings))  # i26: pool level, last harvest and its result
    finally:
        state.close()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {_readable(value)}")
    return EXIT_OK


def _readable(value: object) -> str:
    """A status value as a person reads it: no Python reprs."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``beacon``; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("apscheduler", "qiskit", "qiskit_ibm_runtime", "qiskit_aer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        overrides = {
            "data_dir": args.data_dir,
            "period": getattr(args, "period", None),
            "out_dir": getattr(args, "out", None),
            "metrics_port": getattr(args, "metrics_port", None),
            "metrics_address": getattr(args, "metrics_address", None),
        }
        settings = load_settings(args.config, overrides=overrides)
        commands = {
            "init": _cmd_init,
            "run": _cmd_run,
            "stop": _cmd_stop,
            "status": _cmd_status,
            "serve": _cmd_serve,
        }
        return commands[args.command](settings, args)
    except BeaconError as exc:
        print(f"beacon: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("beacon: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
