"""``beacon-verify``: check pulses and chains of a NIST-format beacon.

Subcommands: ``pulse`` (one pulse), ``chain`` (replay a range), ``time`` (the
pulse NIST would answer for a time), ``skiplist`` (prove an old pulse is an
ancestor of a newer one), ``draw`` (fair draws). Every command takes ``--json``.

Exit codes: 0 valid, 1 invalid, 2 usage error, 3 could not fetch or read.
Thin by design: parse arguments, make one library call, print, map errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beacon_verifier import __version__, drawcmd, entropycmd, layout
from beacon_verifier.chain import ChainReport
from beacon_verifier.checks import TrustedCertificate
from beacon_verifier.claims import kind_words
from beacon_verifier.core import NOT_FETCHED, Evidence, NotFetched, Policy, Verdict, check_pulse
from beacon_verifier.descriptor import MAX_DESCRIPTOR_BYTES, NIST_SITE, SiteDescriptor
from beacon_verifier.drawcmd import parse_time
from beacon_verifier.errors import CheckError, FetchError, PulseFormatError, VerifierError
from beacon_verifier.external_site import load_pinned
from beacon_verifier.fetch import Source, open_source, read_location, site_root_of
from beacon_verifier.format import MAX_PULSE_BYTES, Pulse, format_timestamp, parse_pulse
from beacon_verifier.lookup import find_by_time, pulse_by_time
from beacon_verifier.prefetch import pipelined
from beacon_verifier.replay import MAX_JOBS, Progress, replay_chain
from beacon_verifier.report import failure_as_dict, report_as_dict, verdict_as_dict
from beacon_verifier.resume import ResumeError, prepare
from beacon_verifier.siteread import (
    certificate_lookup,
    gather_evidence,
    latest_pulse,
    read_descriptor,
)
from beacon_verifier.skiplist import SkipPath, skip_path
from beacon_verifier.throttle import DEFAULT_CONCURRENCY, MAX_CONCURRENCY
from beacon_verifier.timeindex import Kind

EXIT_VALID, EXIT_INVALID, EXIT_USAGE, EXIT_FETCH = 0, 1, 2, 3
#: A bare number below this is a pulse index, from it on Unix milliseconds (1973-03-03).
_FIRST_TIME_MS = 10**11


class UsageError(VerifierError):
    """The arguments make no sense together (exit 2)."""


@dataclass(frozen=True, slots=True)
class _At:
    """A point of a chain given as a time (Unix ms), not a pulse index."""

    t_ms: int


def _point(text: str) -> int | _At:
    """P|TIME: a pulse index, or a time (ISO 8601 with a zone, or Unix ms)."""
    if text.isascii() and text.isdigit() and int(text) < _FIRST_TIME_MS:
        if int(text) < 1:
            raise argparse.ArgumentTypeError("pulse indexes start at 1")
        return int(text)
    return _At(_time(text))


def _time(text: str) -> int:
    """TIMESTAMP: ISO 8601 with a zone, or Unix ms; within the years 1970..9999."""
    t_ms = parse_time(text)
    if not 0 <= t_ms < 253_402_300_800_000:
        raise argparse.ArgumentTypeError(f"{text!r} is outside the years 1970..9999")
    return t_ms


def _index(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError("must be a whole number from 1")
    return int(text)


def _jobs(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"must be a number of processes, 1..{MAX_JOBS}")
    return int(text)


def _concurrency(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"must be a number of requests, 1..{MAX_CONCURRENCY}")
    return int(text)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _policy_options(command: argparse.ArgumentParser, *, pq: bool = True) -> None:
    """--require-entropy, --require-external, and --require-pq / --no-pq (one or the
    other: argparse makes both a usage error). A site's descriptor adds its promises."""
    command.add_argument(
        "--require-entropy",
        action="store_true",
        help="a missing entropy record is a failure (also where the site does not promise one)",
    )
    command.add_argument(
        "--require-external",
        action="store_true",
        help="a pulse without a checked external (drand) round is a failure",
    )
    command.add_argument(
        "--drand-info",
        metavar="FILE",
        help="the drand chain to check externals against, as its /info JSON (default: quicknet)",
    )
    if not pq:
        return
    group = command.add_mutually_exclusive_group()
    group.add_argument(
        "--require-pq", action="store_true", help="a missing ML-DSA co-signature is a failure"
    )
    group.add_argument(
        "--no-pq",
        dest="check_pq",
        action="store_false",
        help="neither fetch nor check ML-DSA co-signatures (reported as not checked)",
    )


def _policy(args: argparse.Namespace) -> Policy:
    return Policy(
        require_entropy=args.require_entropy,
        require_pq=getattr(args, "require_pq", False),
        require_external=args.require_external,
        drand=None if args.drand_info is None else load_pinned(args.drand_info),
    )


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
    p.add_argument(
        "--source",
        metavar="SOURCE",
        help="site root to fetch the certificate, entropy record, co-signature and "
        "predecessor from",
    )
    _policy_options(p)
    p.add_argument("--json", action="store_true", help="print a machine-readable report")
    p.set_defaults(run=_cmd_pulse)

    source_help = "site root: directory, http(s):// URL or s3://bucket/prefix"
    point_help = "pulse index, or time: ISO 8601 with a zone (2026-01-01T00:00Z) or Unix ms"
    c = sub.add_parser("chain", help="replay and verify a chain (default: all of the latest)")
    c.add_argument("source", metavar="SOURCE", help=source_help)
    c.add_argument("--chain", type=_index, help="chain index (default: the latest chain)")
    c.add_argument(
        "--from", dest="first", type=_point, metavar="P|TIME", help=f"first pulse: {point_help}"
    )
    c.add_argument(
        "--to", dest="last", type=_point, metavar="P|TIME", help=f"last pulse: {point_help}"
    )
    c.add_argument("--jobs", type=_jobs, default=1, metavar="N", help="worker processes (1)")
    # Network audits (docs/verifying-network.md): requests in flight, resume.
    c.add_argument(
        "--concurrency",
        type=_concurrency,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"requests in flight to an http(s) or S3 site, in all ({DEFAULT_CONCURRENCY}; "
        f"at most {MAX_CONCURRENCY})",
    )
    c.add_argument(
        "--resume",
        metavar="FILE",
        type=Path,
        help="save progress to FILE after each segment; continue from it if it exists",
    )
    c.add_argument(
        "--no-archives",
        dest="archives",
        action="store_false",
        help="read every pulse from its own object, not from daily archives",
    )
    _policy_options(c)
    c.add_argument("--json", action="store_true", help="print a machine-readable report")
    c.set_defaults(run=_cmd_chain)

    t = sub.add_parser("time", help="fetch and verify the pulse NIST answers for a time")
    t.add_argument("source", metavar="SOURCE", help=source_help)
    t.add_argument(
        "timestamp",
        type=_time,
        metavar="TIMESTAMP",
        help="ISO 8601 with a zone (2026-01-01T12:00:00Z) or Unix ms",
    )
    which = t.add_mutually_exclusive_group()
    which.add_argument(
        "--previous", dest="kind", action="store_const", const="previous", help="last before it"
    )
    which.add_argument(
        "--next", dest="kind", action="store_const", const="next", help="first after it"
    )
    _policy_options(t)
    t.add_argument("--json", action="store_true", help="print a machine-readable report")
    t.set_defaults(run=_cmd_time, kind="at_or_after")

    k = sub.add_parser("skiplist", help="prove with few pulses that OLDER precedes NEWER")
    k.add_argument("source", metavar="SOURCE", help=source_help)
    k.add_argument("older", type=_point, metavar="OLDER", help=point_help)
    k.add_argument("newer", type=_point, metavar="NEWER", help=point_help)
    k.add_argument("--chain", type=_index, help="chain index (default: the latest chain)")
    _policy_options(k)
    k.add_argument("--json", action="store_true", help="print a machine-readable report")
    k.set_defaults(run=_cmd_skiplist)
    drawcmd.register(sub)
    entropycmd.register(sub)
    return parser


def _site_root(args: argparse.Namespace) -> Source | None:
    """The site the pulse came from (``--source``, else guessed from its location)."""
    if args.source:
        return open_source(args.source)
    location = args.location
    if "://" not in location:
        location = str(Path(location).resolve())
    return site_root_of(location)


def _verdict(
    source: Source | None,
    pulse: Pulse,
    args: argparse.Namespace,
    *,
    descriptor: SiteDescriptor | None = None,
    certificate: TrustedCertificate | None = None,
    predecessor: Pulse | NotFetched | None = NOT_FETCHED,
) -> Verdict:
    """The core's verdict on ``pulse`` with the evidence ``source`` has of what it
    promises, under the options (the one path of ``pulse``, ``time``, ``skiplist``).
    ``predecessor``: already fetched (and proved) by the caller, if it was."""
    check_pq = getattr(args, "check_pq", True)
    if descriptor is None:
        descriptor = NIST_SITE if source is None else read_descriptor(source)
    if not check_pq:
        descriptor = dataclasses.replace(descriptor, cosignatures=None)
    policy = descriptor.policy_for(pulse.chain_index, pulse.pulse_index, _policy(args))
    records, cosignatures = descriptor.fetches(policy, check_pq)
    fetched = not isinstance(predecessor, NotFetched)
    evidence = gather_evidence(
        source,
        pulse,
        certificate=certificate,
        cosignatures=cosignatures,
        records=records,
        predecessor=not fetched,
    )
    if fetched:
        evidence.predecessor = predecessor
    return check_pulse(evidence, policy)


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
    root = _site_root(args)
    given = TrustedCertificate.from_bytes(read_location(args.cert)) if args.cert else None
    verdict = _verdict(root, pulse, args, certificate=given)
    if args.json:
        _print_json(verdict_as_dict(verdict))
    else:
        _print_verdict(pulse, verdict, " (pass --cert or --source)")
    return EXIT_VALID if verdict.ok else EXIT_INVALID


def _progress(enabled: bool) -> Progress | None:
    """A progress bar on a terminal (stderr); nothing when piped."""
    if not enabled:
        return None
    started = time.monotonic()
    shown = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - shown[0] < 0.2:
            return
        shown[0] = now
        width = 30
        filled = width * done // max(total, 1)
        rate = done / max(now - started, 1e-9)
        eta = _duration((total - done) / rate) if rate > 0 else "?"
        sys.stderr.write(
            f"\r  [{'#' * filled}{'.' * (width - filled)}] {done}/{total} pulses, "
            f"{rate:,.0f}/s, ETA {eta} "
        )
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _print_json(doc: dict[str, Any]) -> None:
    print(json.dumps(doc, indent=2))


def _resolve(source: Source, point: int | _At | None, end: str) -> tuple[int | None, int | None]:
    """(chain, pulse index) of a ``--from``/``--to`` point: a time becomes the first pulse
    at or after it (``from``) or the last at or before it (``to``)."""
    if point is None or isinstance(point, int):
        return None, point
    if end == "from":
        pulse = pulse_by_time(source, "at_or_after", point.t_ms)
        what = "at or after"
    else:
        pulse = pulse_by_time(source, "previous", point.t_ms + 1)
        what = "at or before"
    if pulse is None:
        raise FetchError(f"{source.describe()}: no pulse {what} {format_timestamp(point.t_ms)}")
    return pulse.chain_index, pulse.pulse_index


def _chain_of(given: int | None, *found: int | None) -> int | None:
    """The chain the arguments name; they must agree."""
    chains = {c for c in (given, *found) if c is not None}
    if len(chains) > 1:
        raise UsageError(
            "the range spans chains "
            + " and ".join(map(str, sorted(chains)))
            + ": verify one chain at a time (--chain)"
        )
    return chains.pop() if chains else None


def _cmd_chain(args: argparse.Namespace) -> int:
    source = pipelined(open_source(args.source), args.concurrency, args.jobs)
    chain_a, first = _resolve(source, args.first, "from")
    chain_b, last = _resolve(source, args.last, "to")
    chain = _chain_of(args.chain, chain_a, chain_b)
    first = 1 if first is None else first
    if last is not None and last < first:
        raise UsageError(f"--from {first} is after --to {last}")
    resumed, checkpoint = None, None
    if args.resume is not None:
        try:
            resumed = prepare(args.resume, args.source, source, chain, first, last)
        except ResumeError as exc:
            raise UsageError(f"--resume {exc}") from None
        chain, first, last = resumed.chain, resumed.first, resumed.last
        checkpoint = resumed.checkpoint(args.resume)
    ahead = getattr(source, "read_ahead", None)
    if ahead is not None:
        # The descriptor, the head and (for the head check) pulse 1 of the chain, in
        # flight together; chain 1 when not named (the head's, on most sites).
        ahead(
            [
                (layout.SITE_KEY, MAX_DESCRIPTOR_BYTES),
                (layout.LAST_KEY, MAX_PULSE_BYTES),
                (layout.pulse_key(1 if chain is None else chain, 1), MAX_PULSE_BYTES),
            ]
        )
    descriptor = read_descriptor(source)
    report = replay_chain(
        source,
        descriptor=descriptor,
        chain=chain,
        first=first,
        last=last,
        jobs=args.jobs,
        archives=args.archives,
        policy=_policy(args),
        check_pq=args.check_pq,
        progress=_progress(sys.stderr.isatty() and not args.json),
        start=None if resumed is None else resumed.start,
        checkpoint=checkpoint,
    )
    if args.json:
        _print_json(report_as_dict(report) | {"site": descriptor.describe()})
    else:
        print(descriptor.describe())
        _print_chain_report(report)
    return EXIT_VALID if report.ok else EXIT_INVALID


def _print_chain_report(report: ChainReport) -> None:
    for failure in report.failures:
        print(failure.describe())
    if report.failure_count > len(report.failures):
        print(f"... and {report.failure_count - len(report.failures)} more failures")
    for lo, hi in report.missing:
        print(f"pulses {lo}..{hi}: missing" if hi > lo else f"pulse {lo}: missing")
    if report.missing_count > sum(hi - lo + 1 for lo, hi in report.missing):
        print("... and more missing pulses")
    for reason, n in sorted(report.not_checked.items()):
        print(f"not checked: {reason} ({n} pulses)")
    kinds = ", ".join(f"{kind_words(k)} {v}" for k, v in sorted(report.source_kinds.items()))
    kinds = kinds or "none"
    pq = ", ".join(f"{k} {v}" for k, v in sorted(report.pq_signatures.items())) or "none"
    print(
        f"{report.pulses_checked} pulses checked ({report.first_index}..{report.last_index}); "
        f"entropy sources: {kinds}; co-signatures: {pq}; gaps {report.gaps}; "
        f"certificate changes {report.certificate_changes}; "
        f"missing {report.missing_count}; "
        f"unverifiable signatures {report.signatures_unverifiable}; "
        f"failures {report.failure_count}: " + ("VALID" if report.ok else "INVALID")
    )


_RELATION = {"at_or_after": "at or after", "previous": "before", "next": "after"}


def _cmd_time(args: argparse.Namespace) -> int:
    source = open_source(args.source)
    kind: Kind = args.kind
    when = format_timestamp(args.timestamp)
    answer = find_by_time(source, kind, args.timestamp)
    pulse = answer.pulse
    if pulse is None and answer.index_error is None:
        raise FetchError(f"{source.describe()}: no pulse {_RELATION[kind]} {when}")
    verdict = None
    if pulse is not None:
        verdict = _verdict(source, pulse, args, predecessor=answer.predecessor)
    ok = verdict is not None and verdict.ok and answer.index_error is None
    not_checked = [] if answer.unproved is None else [f"time answer: {answer.unproved}"]
    if args.json:
        doc: dict[str, Any] = {"query": {"kind": kind, "time": args.timestamp, "timeStamp": when}}
        if verdict is not None:
            doc |= verdict_as_dict(verdict)
            doc["notChecked"] = not_checked + doc["notChecked"]
        doc |= {"ok": ok, "indexError": answer.index_error, "proved": answer.unproved is None}
        doc["pulse"] = None if pulse is None else json.loads(pulse.raw or b"null")
        _print_json(doc)
        return EXIT_VALID if ok else EXIT_INVALID
    if pulse is not None and verdict is not None:
        print(json.dumps(json.loads(pulse.raw or b"null"), indent=2))  # ASCII-safe display
        print(
            f"the pulse {_RELATION[kind]} {when} is pulse {pulse.chain_index}/"
            f"{pulse.pulse_index} at {pulse.time_stamp}"
        )
    else:
        print(f"there is no pulse {_RELATION[kind]} {when}")
    if answer.index_error is not None:
        print(f"the site's index is wrong: {answer.index_error}")
    for line in not_checked:
        print(f"not checked: {line}")
    if pulse is not None and verdict is not None:
        _print_verdict(pulse, verdict)
    return EXIT_VALID if ok else EXIT_INVALID


def _print_verdict(pulse: Pulse, verdict: Verdict, hint: str = "") -> None:
    """The core's verdict in lines: failures, what was checked, what was not."""
    for failure in verdict.failures:
        print(failure.describe())
    if verdict.signature == "unverifiable":
        print(
            f"pulse {pulse.pulse_index}: signature unverifiable: no certificate "
            f"{pulse.certificate_id.hex()[:16]}…{hint}"
        )
    elif verdict.signature == "valid" and not verdict.failures:
        variant = verdict.output_variant.value if verdict.output_variant else "?"
        print(
            f"pulse {pulse.chain_index}/{pulse.pulse_index} at {pulse.time_stamp}: valid "
            f"(signature, certificateId, outputValue [{variant}])"
        )
    source = f" ({kind_words(verdict.entropy_source)})" if verdict.entropy_source else ""
    print(f"predecessor: {verdict.predecessor}")
    print(f"entropy record: {verdict.entropy}{source}")
    if verdict.raw_batch_id is not None:
        print(f"raw batch {verdict.raw_batch_id}: {verdict.raw_batch}")
    print(f"co-signature (ML-DSA-65): {verdict.pq}")
    print(f"external (drand): {verdict.external}")
    if verdict.random_value is not None:
        print(f"the value to use (randomValue): {verdict.random_value.hex().upper()}")
    for reason in verdict.not_checked:
        print(f"not checked: {reason}")
    print("VALID" if verdict.ok else "INVALID")


def _cmd_skiplist(args: argparse.Namespace) -> int:
    source = open_source(args.source)
    chain_a, older = _resolve(source, args.older, "from")
    chain_b, newer = _resolve(source, args.newer, "to")
    assert older is not None and newer is not None
    chain = _chain_of(args.chain, chain_a, chain_b)
    if older >= newer:
        raise UsageError(f"OLDER (pulse {older}) must come before NEWER (pulse {newer})")
    if chain is None:
        chain = latest_pulse(source).chain_index
    descriptor = read_descriptor(source)
    certificates = certificate_lookup(source)
    ends = (older, newer)

    def check(pulse: Pulse) -> Verdict:
        if pulse.pulse_index in ends:  # all the evidence the site has
            return _verdict(source, pulse, args, descriptor=descriptor)
        return check_pulse(Evidence(pulse, certificate=certificates(pulse.certificate_id)))

    path = skip_path(source, chain, older, newer, certificates, check)
    if args.json:
        _print_json(_skip_path_dict(path))
    else:
        _print_skip_path(path)
    return EXIT_VALID if path.ok else EXIT_INVALID


def _skip_path_dict(path: SkipPath) -> dict[str, Any]:
    return {
        "ok": path.ok,
        "chain": path.chain,
        "older": path.older,
        "newer": path.newer,
        "complete": path.complete,
        "pulses": len(path.steps),
        "path": [
            {
                "pulseIndex": step.pulse.pulse_index,
                "timeStamp": step.pulse.time_stamp,
                "outputValue": step.pulse.output_value.hex().upper(),
                "via": step.via,
            }
            for step in path.steps
        ],
        "signaturesUnverifiable": path.signatures_unverifiable,
        "notChecked": path.not_checked,
        "ends": [
            verdict_as_dict(v) for v in path.verdicts if v.pulse_index in (path.older, path.newer)
        ],
        "failures": [failure_as_dict(f) for f in path.failures],
    }


def _print_skip_path(path: SkipPath) -> None:
    for step in path.steps:
        via = f"  --{step.via}--> " if step.via else ""
        print(f"{via}pulse {step.pulse.pulse_index} at {step.pulse.time_stamp}")
    for failure in path.failures:
        print(failure.describe())
    if path.signatures_unverifiable:
        print(f"{path.signatures_unverifiable} signatures unverifiable: no certificate found")
    for reason, n in sorted(path.not_checked.items()):
        print(f"not checked: {reason} ({n} pulses)")
    verdict = "VALID" if path.ok else "INVALID"
    reached = "" if path.complete else f" (stopped before reaching {path.older})"
    print(
        f"path of {len(path.steps)} pulses from {path.newer} back to {path.older} "
        f"on chain {path.chain}{reached}: {verdict}"
    )


def _failed(args: argparse.Namespace, code: int, message: str) -> int:
    """Report a command that could not finish: one line on stderr, and with ``--json``
    (for the commands here) a JSON object on stdout too, so that output stays parseable."""
    print(f"beacon-verify: {message}", file=sys.stderr)
    if getattr(args, "json", False) and args.command in ("pulse", "chain", "time", "skiplist"):
        print(json.dumps({"ok": False, "exitCode": code, "error": message}))
    return code


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
    except UsageError as exc:
        return _failed(args, EXIT_USAGE, f"error: {exc}")
    except FetchError as exc:
        return _failed(args, EXIT_FETCH, f"could not fetch: {exc}")
    except PulseFormatError as exc:
        return _failed(args, EXIT_INVALID, f"invalid input: {exc}")
    except CheckError as exc:
        print(exc.describe())
        return EXIT_INVALID
    except VerifierError as exc:
        return _failed(args, EXIT_INVALID, str(exc))
    except KeyboardInterrupt:
        print("beacon-verify: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
