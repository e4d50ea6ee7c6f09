"""``beacon-verify entropy SITE [--chain C] [--from P] [--to P]``: re-run the entropy accounting.

For every pulse of the range it checks the signature and the entropy record,
re-derives ``quantumValue`` from the published raw batch, re-runs the health
tests and the SP 800-90B 6.3 estimators on the whole batch, and prints the
min-entropy each record claims next to what the re-run gives
(``beacon_verifier.audit``). Exit 0 when every pulse holds, 1 when one does
not, 2 for a usage error, 3 when the site cannot be read. Needs numpy
(``pip install 'beacon-verifier[entropy]'``); without it, one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from beacon_verifier.errors import FetchError, VerifierError
from beacon_verifier.fetch import open_source

#: Pulses audited when no range is given: the latest ones.
DEFAULT_COUNT = 10


class _NoNumpy(VerifierError):
    """The ``entropy`` extra is not installed."""


def _index(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError("must be a pulse index, a whole number from 1")
    return int(text)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``entropy`` to ``beacon-verify``'s subcommands."""
    e = sub.add_parser(
        "entropy",
        help="re-run health tests and min-entropy estimates on the published raw data",
    )
    e.add_argument("source", metavar="SOURCE", help="site root: directory, URL or s3://")
    e.add_argument("--chain", type=_index, help="chain index (default: the latest chain)")
    e.add_argument("--from", dest="first", type=_index, metavar="P", help="first pulse index")
    e.add_argument(
        "--to",
        dest="last",
        type=_index,
        metavar="P",
        help=f"last pulse index (default: the last; without --from, the last {DEFAULT_COUNT})",
    )
    e.add_argument("--json", action="store_true", help="print a machine-readable report")
    e.set_defaults(run=_cmd_entropy)


def _cmd_entropy(args: argparse.Namespace) -> int:
    try:
        from beacon_verifier import audit
        from beacon_verifier.siteread import chain_tip
    except ImportError as exc:  # numpy missing
        print(f"beacon-verify: entropy needs numpy: pip install 'beacon-verifier[entropy]' ({exc})")
        return 2
    source = open_source(args.source)
    tip = chain_tip(source, args.chain)
    last = tip.pulse_index if args.last is None else args.last
    first = max(1, last - DEFAULT_COUNT + 1) if args.first is None else args.first
    if last < first:
        print(f"beacon-verify: error: --from {first} is after --to {last}")
        return 2
    if last > tip.pulse_index:
        raise FetchError(f"chain {tip.chain_index} ends at pulse {tip.pulse_index}, not {last}")
    results = audit.audit_range(source, tip.chain_index, first, last)
    if args.json:
        print(json.dumps(audit.summary(results), indent=2))
    else:
        _print(results, audit.OPERATORS_WORD)
    return 0 if all(r.ok for r in results) else 1


def _bits(value: int | None) -> str:
    return "-" if value is None else f"{value} bits"


def _per_bit(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _print(results: list[Any], operators_word: str) -> None:
    print(
        f"{'pulse':>10}  {'source':<17}  {'claimed':>9}  {'re-run':>9}  "
        f"{'H/bit rec':>9}  {'H/bit re-run':>12}  {'weakest':<18}  raw data"
    )
    for r in results:
        print(
            f"{r.chain}/{r.pulse:<8}  {r.kind or '?':<17}  {_bits(r.claimed_bits):>9}  "
            f"{_bits(r.estimated_bits):>9}  {_per_bit(r.claimed_per_bit):>9}  "
            f"{_per_bit(r.estimated_per_bit):>12}  {r.weakest or '-':<18}  {r.raw}"
        )
        for failure in r.failures:
            print(f"{'':>10}  FAILED: {failure}")
    bad = sum(not r.ok for r in results)
    rerun = sum(r.raw == "re-run" for r in results)
    print(
        f"{len(results)} pulses, {rerun} re-run on their raw batch, "
        + ("all hold" if not bad else f"{bad} FAILED")
    )
    print("H/bit: min-entropy per raw bit; simulated and OS bits are credited 0 bits whatever")
    print("their statistics say. Operator's word, " + operators_word + ".")
