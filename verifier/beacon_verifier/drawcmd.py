"""``beacon-verify draw new|run|check``: announce a fair draw, then derive and check its winners.

The I/O edge around the pure ``draw`` module: read the entrant list, the
manifest and result files, fetch the target pulses, verify them, print.

- ``new`` writes a manifest (create-only) for a time after every named beacon's
  latest pulse, so the draw is fixed before its randomness exists, and prints
  the manifest's SHA-512 to publish.
- ``run`` fetches the target pulse of each beacon (the first pulse of the
  manifest's chain at or after pulseTime), verifies its signature and that it
  is that first pulse, and prints the winners.
- ``check`` does the same and compares with a result file (``run --json``).

Errors are raised (``DrawError``, ``FetchError``, ``CheckError``); ``cli.main``
turns them into one line and exit code 1 (invalid) or 3 (could not fetch).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from beacon_verifier import drawcmd2, external_site
from beacon_verifier.core import ANY, NOT_FETCHED, NotFetched, Policy, Verdict, check_pulse
from beacon_verifier.draw import (
    MAX_MANIFEST_BYTES,
    BeaconRef,
    DrawResult,
    Manifest,
    PulseRef,
    check_entrants,
    compare_results,
    draw,
    entrant_list_bytes,
    manifest_hash,
    parse_manifest,
    parse_result,
)
from beacon_verifier.draw2 import DrawResultV2, ManifestV2, compare_v2, manifest_version
from beacon_verifier.errors import DrawError, FetchError
from beacon_verifier.fetch import Source, open_source, read_location
from beacon_verifier.format import ZERO_HASH, Pulse, format_timestamp
from beacon_verifier.lookup import find_by_time
from beacon_verifier.siteread import gather_evidence, latest_pulse, read_descriptor

__all__ = ["parse_time", "register", "target_pulse"]

EXIT_VALID, EXIT_INVALID = 0, 1
DEFAULT_MANIFEST = "draw-manifest.json"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)


def register(sub: argparse._SubParsersAction[_Parser]) -> None:
    """Add ``draw new|run|check`` to ``beacon-verify``'s subcommands."""
    d = sub.add_parser("draw", help="fair draws: announce one, derive and check its winners")
    # The same parser class as ours (cli._Parser: one-line usage errors, exit 2).
    dsub = d.add_subparsers(dest="draw_command", required=True, parser_class=type(d))

    n = dsub.add_parser("new", help="write a draw manifest for a future pulse")
    n.add_argument("--source", required=True, metavar="SOURCE", help="the beacon's site root")
    n.add_argument("--entrants", required=True, metavar="FILE", help="one entrant per line")
    n.add_argument("--winners", required=True, type=int, metavar="K", help="how many win")
    n.add_argument(
        "--at",
        required=True,
        type=parse_time,
        metavar="TIME",
        help="ISO 8601 UTC (2026-11-21T12:00:00Z) or Unix ms; the first pulse at or after it",
    )
    n.add_argument("--label", default="", metavar="L", help="free text naming the draw")
    n.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="SOURCE",
        help="a further NIST-format beacon whose pulse is mixed in (repeatable)",
    )
    n.add_argument(
        "--out", default=DEFAULT_MANIFEST, metavar="FILE", help="manifest to create (not replace)"
    )
    n.add_argument(
        "--version",
        dest="manifest_version",
        type=int,
        choices=(1, 2),
        default=None,
        help="2: seeded by localRandomValue and the drand external, not outputValue "
        "(grind-proof; docs/draws.md, Draws v2); 1: seeded by outputValue. Default: 2 when "
        "the site's latest pulse carries a valid drand round, else 1",
    )
    n.add_argument("--json", action="store_true", help="print a machine-readable summary")
    n.set_defaults(run=_cmd_new)

    for name, help_text in (
        ("run", "derive the winners of a draw"),
        ("check", "derive the winners and compare them with a result file"),
    ):
        r = dsub.add_parser(name, help=help_text)
        r.add_argument("manifest", metavar="MANIFEST", help="the manifest file or URL")
        r.add_argument("--entrants", required=True, metavar="FILE", help="the entrant list")
        r.add_argument(
            "--source", metavar="SOURCE", help="where to fetch pulses (default: the manifest's)"
        )
        if name == "check":
            r.add_argument(
                "--result", required=True, metavar="FILE", help="what `draw run --json` printed"
            )
        r.add_argument(
            "--drand-info",
            metavar="FILE",
            help="v2 draws: the drand chain of the externals, as /info JSON (default: quicknet)",
        )
        r.add_argument("--json", action="store_true", help="print a machine-readable result")
        r.set_defaults(run=_cmd_run if name == "run" else _cmd_check)


# --- inputs -------------------------------------------------------------------------


def parse_time(text: str) -> int:
    """TIME as Unix ms: ISO 8601 with a zone (``2026-11-21T12:00:00Z``) or Unix milliseconds."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither ISO 8601 (2026-11-21T12:00:00Z) nor Unix milliseconds"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z for UTC)")
    elapsed = moment - _EPOCH
    if elapsed % timedelta(milliseconds=1):
        raise argparse.ArgumentTypeError(f"{text!r} is finer than a millisecond")
    return elapsed // timedelta(milliseconds=1)


def _read_entrants(location: str) -> bytes:
    """The entrant list bytes of a UTF-8 file (a leading byte-order mark is not an entrant)."""
    raw = read_location(location)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DrawError(f"{location}: not UTF-8 text (byte {exc.start})") from None
    try:
        return entrant_list_bytes(text.removeprefix("\ufeff"))
    except DrawError as exc:
        raise DrawError(f"{location}: {exc}") from None


def _site_url(spec: str) -> str:
    """The site root URL a manifest records for SOURCE (a directory becomes a file:// URL)."""
    if urllib.parse.urlsplit(spec).scheme:
        stripped = urllib.parse.urlsplit(spec.rstrip("/"))
        return spec.rstrip("/") if stripped.netloc or stripped.path else spec
    return Path(spec).resolve().as_uri()


def _write_new(path: str, data: bytes) -> None:
    try:
        with open(path, "xb") as fh:
            fh.write(data)
    except FileExistsError:
        raise DrawError(f"{path} already exists; a manifest is never overwritten") from None
    except OSError as exc:
        raise DrawError(f"cannot write {path}: {exc.strerror or exc}") from None


# --- target pulses ------------------------------------------------------------------


def target_pulse(
    source: Source, chain: int, t_ms: int, policy: Policy = ANY
) -> tuple[Pulse, Verdict]:
    """The verified first pulse of ``chain`` at or after ``t_ms`` on ``source``.

    The time lookup proves it the first (``lookup.find_by_time``: the pulse before
    it, linked by ``previous``, is earlier than ``t_ms``, so a rewritten time index
    cannot substitute a later pulse), and the core (``core.check_pulse``) must find
    it valid with the evidence the site has, held to what the site promises.
    Raises ``DrawError`` when the pulse is not there yet, is on another chain or
    does not verify; ``FetchError`` when it cannot be had or proved the first.
    """
    where, when = source.describe(), format_timestamp(t_ms)
    answer = find_by_time(source, "at_or_after", t_ms)
    pulse = answer.pulse
    if pulse is None:
        latest = latest_pulse(source)
        if latest.time_ms >= t_ms:
            raise FetchError(
                f"{where}: the site names no pulse at or after {when} (neither its time index "
                f"nor NIST's time path), although its latest pulse is at {latest.time_stamp}"
            )
        raise DrawError(
            f"{where}: the target pulse (the first at or after {when}) is not yet available; "
            f"the latest pulse is at {latest.time_stamp}"
        )
    ref = f"pulse {pulse.chain_index}/{pulse.pulse_index} at {pulse.time_stamp}"
    if pulse.chain_index != chain:
        raise DrawError(
            f"{where}: the first pulse at or after {when} is {ref}, on chain "
            f"{pulse.chain_index}, but the draw is on chain {chain}"
        )
    if answer.index_error is not None:
        raise DrawError(
            f"{where}: the site's time index is wrong ({answer.index_error}); the target is {ref}"
        )
    if answer.unproved is not None:
        raise FetchError(
            f"{where}: {ref} cannot be shown to be the first at or after {when}: {answer.unproved}"
        )
    return pulse, check_draw_pulse(source, pulse, policy, answer.predecessor)


def check_draw_pulse(
    source: Source,
    pulse: Pulse,
    policy: Policy = ANY,
    predecessor: Pulse | NotFetched | None = NOT_FETCHED,
) -> Verdict:
    """The core's verdict on a pulse a draw uses (all the evidence ``source`` has, held
    to what the site promises). Raises ``DrawError`` unless it is valid: no winners
    from an unverified pulse."""
    where = source.describe()
    ref = f"pulse {pulse.chain_index}/{pulse.pulse_index} at {pulse.time_stamp}"
    descriptor = read_descriptor(source)
    policy = descriptor.policy_for(pulse.chain_index, pulse.pulse_index, policy)
    records, cosignatures = descriptor.fetches(policy)
    fetched = not isinstance(predecessor, NotFetched)
    evidence = gather_evidence(
        source, pulse, predecessor=not fetched, records=records, cosignatures=cosignatures
    )
    if fetched:
        evidence.predecessor = predecessor
    verdict = check_pulse(evidence, policy)
    if verdict.signature == "unverifiable":
        raise DrawError(
            f"{where}: {ref}: signature unverifiable, no certificate "
            f"{pulse.certificate_id.hex()[:16]}… on the site; no winners from an unverified pulse"
        )
    if not verdict.ok:
        failures = "; ".join(f.describe() for f in verdict.failures)
        raise DrawError(f"{where}: {ref} does not verify: {failures}")
    return verdict


# --- commands -----------------------------------------------------------------------


def _cmd_new(args: argparse.Namespace) -> int:
    entrant_bytes = _read_entrants(args.entrants)
    t_ms: int = args.at
    refs = []
    version = args.manifest_version
    for spec in (args.source, *args.also):
        source = open_source(spec)
        latest = latest_pulse(source)
        if version is None:  # this beacon's: v2 where it mixes a drand round
            external = latest.external
            version = 2 if external.status_code == 0 and external.source_id != ZERO_HASH else 1
        if version == 2:
            drawcmd2.check_new_target(source, t_ms)
        if latest.time_ms >= t_ms:
            raise DrawError(
                f"{source.describe()} already has pulse {latest.chain_index}/"
                f"{latest.pulse_index} at {latest.time_stamp}, at or after "
                f"{format_timestamp(t_ms)}: a draw must be fixed before its pulse exists; "
                "pick a later --at"
            )
        refs.append(BeaconRef(beacon=_site_url(spec), chain=latest.chain_index))
    manifest = Manifest(
        beacon=refs[0].beacon,
        chain=refs[0].chain,
        pulse_time_ms=t_ms,
        entrants=manifest_hash(entrant_bytes),
        entrant_count=entrant_bytes.count(b"\n") + 1,
        winners=args.winners,
        label=args.label,
        also=tuple(refs[1:]),
    )
    data = manifest.to_bytes()
    if version == 2:
        data = ManifestV2(manifest, time.time_ns() // 1_000_000).to_bytes()
    _write_new(args.out, data)
    digest = manifest_hash(data).hex()
    if args.json:
        print(
            json.dumps(
                {
                    "manifest": args.out,
                    "manifestSha512": digest,
                    "pulseTime": manifest.pulse_time,
                    "entrantCount": manifest.entrant_count,
                    "winners": manifest.winners,
                    "version": version,
                },
                indent=2,
            )
        )
    else:
        beacons = ", ".join(f"{r.beacon} chain {r.chain}" for r in refs)
        print(
            f"wrote {args.out}: {manifest.winners} of {manifest.entrant_count} entrants win, "
            f"drawn with the first pulse at or after {manifest.pulse_time} of {beacons}"
        )
        if version == 2:
            print("draw v2: seeded by localRandomValue and the drand round, which nobody can steer")
        else:
            print(
                "draw v1: seeded by outputValue, which the pulse's signer could grind "
                "(the beacon mixes no valid drand round; docs/threat-model.md)"
            )
        print(f"publish now, before {manifest.pulse_time}: manifest SHA-512 {digest}")
    return EXIT_VALID


def _compute(args: argparse.Namespace) -> DrawResult | DrawResultV2:
    """Read the manifest and entrants, fetch and verify the target pulses, draw."""
    manifest_bytes = read_location(args.manifest, max_bytes=MAX_MANIFEST_BYTES)
    if manifest_version(manifest_bytes) == 2:
        return drawcmd2.compute_v2(
            manifest_bytes,
            _read_entrants(args.entrants),
            args.source,
            external_site.load_pinned(args.drand_info),
        )
    manifest = parse_manifest(manifest_bytes)
    entrant_bytes = _read_entrants(args.entrants)
    try:
        check_entrants(manifest, entrant_bytes)  # before any fetch
    except DrawError as exc:
        raise DrawError(f"{args.entrants}: {exc}") from None
    beacons = [(args.source or manifest.beacon, manifest.beacon, manifest.chain)]
    beacons += [(ref.beacon, ref.beacon, ref.chain) for ref in manifest.also]
    refs = []
    for spec, url, chain in beacons:
        pulse, _ = target_pulse(open_source(spec), chain, manifest.pulse_time_ms)
        refs.append(
            PulseRef(
                beacon=url,
                chain_index=pulse.chain_index,
                pulse_index=pulse.pulse_index,
                time_stamp=pulse.time_stamp,
                output_value=pulse.output_value,
            )
        )
    winners = draw(manifest_bytes, entrant_bytes, [r.output_value for r in refs])
    return DrawResult(
        manifest_hash=manifest_hash(manifest_bytes), pulses=tuple(refs), winners=tuple(winners)
    )


def _shown(name: str) -> str:
    """An entrant as printed: as is when printable, escaped otherwise (no terminal controls)."""
    return name if name.isprintable() else repr(name)


def _print_result(result: DrawResult) -> None:
    print(f"manifest SHA-512 {result.manifest_hash.hex()}")
    for ref in result.pulses:
        print(
            f"pulse {ref.chain_index}/{ref.pulse_index} at {ref.time_stamp} of {ref.beacon}: "
            f"verified, outputValue {ref.output_value.hex().upper()}"
        )
    for i, winner in enumerate(result.winners, 1):
        print(f"{i}. {_shown(winner)}")


def _cmd_run(args: argparse.Namespace) -> int:
    result = _compute(args)
    if args.json:
        print(result.to_bytes().decode("utf-8"), end="")
    elif isinstance(result, DrawResultV2):
        drawcmd2.print_v2(result)
    else:
        _print_result(result)
    return EXIT_VALID


def _cmd_check(args: argparse.Namespace) -> int:
    claimed_bytes = read_location(args.result)
    result = _compute(args)
    if isinstance(result, DrawResultV2):
        differences = compare_v2(result, claimed_bytes)
    else:
        differences = compare_results(result, parse_result(claimed_bytes))
    if args.json:
        doc = {
            "ok": not differences,
            "differences": differences,
            "result": json.loads(result.to_bytes()),
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        for line in differences:
            print(_shown(line))
        if differences:
            print(f"{args.result}: {len(differences)} difference(s) from the draw: INVALID")
        else:
            print(f"{args.result}: the same pulses and winners as the draw: VALID")
    return EXIT_INVALID if differences else EXIT_VALID
