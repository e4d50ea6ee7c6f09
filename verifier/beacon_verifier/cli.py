"""``beacon-verify``: check pulses and chains of a NIST-format beacon.

Exit codes: 0 valid, 1 invalid, 2 usage error, 3 could not fetch or read.
Thin by design: parse arguments, make one library call, print, map errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from beacon_verifier import __version__, drawcmd, layout
from beacon_verifier.checks import PulseReport, TrustedCertificate, verify_pulse
from beacon_verifier.errors import CheckError, FetchError, PulseFormatError, VerifierError
from beacon_verifier.fetch import Source, open_source, read_location, site_root_of
from beacon_verifier.format import Pulse, parse_pulse
from beacon_verifier.replay import Progress, failure_as_dict, replay_chain, report_as_json

EXIT_VALID, EXIT_INVALID, EXIT_USAGE, EXIT_FETCH = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="beacon-verify",
        description="Verify pulses of a NIST Randomness Beacon 2.0 format beacon. "
        "Beacon values are public: never use them as secret keys.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("pulse", help="verify one pulse (file path or URL)")
    p.add_argument("location", metavar="PATH_OR_URL")
    p.add_argument("--cert", metavar="PEM", help="the signing certificate (PEM or DER file)")
    p.add_argument("--source", metavar="SOURCE", help="site root to fetch the certificate from")
    p.add_argument("--json", action="store_true", help="print a machine-readable report")
    p.set_defaults(run=_cmd_pulse)

    c = sub.add_parser("chain", help="replay and verify a chain from a site")
    c.add_argument("source", metavar="SOURCE", help="directory, http(s):// URL or s3://bucket")
    c.add_argument("--chain", type=int, help="chain index (default: the latest chain)")
    c.add_argument("--from", dest="first", type=int, default=1, metavar="P")
    c.add_argument("--to", dest="last", type=int, metavar="P")
    c.add_argument("--json", action="store_true", help="print a machine-readable report")
    c.set_defaults(run=_cmd_chain)
    drawcmd.register(sub)
    return parser


def _certificate_for(pulse: Pulse, args: argparse.Namespace) -> TrustedCertificate | None:
    if args.cert:
        return TrustedCertificate.from_bytes(read_location(args.cert))
    root: Source | None
    if args.source:
        root = open_source(args.source)
    else:
        location = args.location
        if "://" not in location:
            location = str(Path(location).resolve())
        root = site_root_of(location)
    if root is None:
        return None
    data = root.get(layout.certificate_key(pulse.certificate_id.hex()))
    if data is None:
        return None
    cert = TrustedCertificate.from_bytes(data)
    return cert if cert.certificate_id == pulse.certificate_id else None


def _pulse_report_json(report: PulseReport) -> str:
    return json.dumps(
        {
            "ok": report.ok,
            "chainIndex": report.chain_index,
            "pulseIndex": report.pulse_index,
            "timeStamp": report.time_stamp,
            "signature": report.signature,
            "outputVariant": report.output_variant.value if report.output_variant else None,
            "failures": [failure_as_dict(f) for f in report.failures],
        },
        indent=2,
    )


def _cmd_pulse(args: argparse.Namespace) -> int:
    data = read_location(args.location)
    try:
        pulse = parse_pulse(data)
    except PulseFormatError as exc:
        if args.json:
            print(json.dumps({"ok": False, "format": {"field": exc.field, "error": exc.reason}}))
        else:
            print(f"invalid pulse: {exc}")
        return EXIT_INVALID
    report = verify_pulse(pulse, _certificate_for(pulse, args))
    if args.json:
        print(_pulse_report_json(report))
    else:
        for failure in report.failures:
            print(failure.describe())
        if report.signature == "unverifiable":
            print(
                f"pulse {pulse.pulse_index}: signature unverifiable: no certificate "
                f"{pulse.certificate_id.hex()[:16]}… (pass --cert or --source)"
            )
        if report.ok:
            variant = report.output_variant.value if report.output_variant else "?"
            print(
                f"pulse {pulse.chain_index}/{pulse.pulse_index} at {pulse.time_stamp}: valid "
                f"(signature, certificateId, outputValue [{variant}])"
            )
    return EXIT_VALID if report.ok else EXIT_INVALID


def _progress(enabled: bool) -> Progress | None:
    """A progress line on a terminal; nothing when piped."""
    if not enabled:
        return None

    def show(done: int, total: int) -> None:
        if done == total or done % 100 == 0:
            sys.stderr.write(f"\r  checked {done}/{total} pulses")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    return show


def _cmd_chain(args: argparse.Namespace) -> int:
    source = open_source(args.source)
    show = _progress(sys.stderr.isatty() and not args.json)
    report = replay_chain(
        source,
        chain=args.chain,
        first=args.first,
        last=args.last,
        progress=show,
    )
    if args.json:
        print(report_as_json(report))
    else:
        for failure in report.failures:
            print(failure.describe())
        for lo, hi in report.missing:
            print(f"pulses {lo}..{hi}: missing" if hi > lo else f"pulse {lo}: missing")
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(report.source_kinds.items())) or "none"
        print(
            f"{report.pulses_checked} pulses checked ({report.first_index}..{report.last_index}); "
            f"gaps {report.gaps}; certificate changes {report.certificate_changes}; "
            f"unverifiable signatures {report.signatures_unverifiable}; "
            f"entropy sources: {kinds}; failures {len(report.failures)}: "
            + ("VALID" if report.ok else "INVALID")
        )
    return EXIT_VALID if report.ok else EXIT_INVALID


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``beacon-verify``; returns the exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except FetchError as exc:
        print(f"beacon-verify: could not fetch: {exc}", file=sys.stderr)
        return EXIT_FETCH
    except PulseFormatError as exc:
        print(f"beacon-verify: invalid input: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except CheckError as exc:
        print(exc.describe())
        return EXIT_INVALID
    except VerifierError as exc:
        print(f"beacon-verify: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("beacon-verify: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
