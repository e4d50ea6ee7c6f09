"""Fair draws from beacon pulses: the algorithm, as pure functions.

A lottery operator announces a draw as a **manifest** before the pulse it uses
exists; anyone can later re-derive the winners from the manifest, the entrant
list and the target pulse's outputValue (docs/draws.md is the spec):

- entrant list bytes: entrants one per line, stripped, empty lines dropped,
  joined with LF, UTF-8 (``entrant_list_bytes``);
- manifest: canonical JSON naming the beacon, chain, target time, the SHA-512 of
  the entrant list, the number of entrants and of winners (``Manifest``);
- seed = SHA-512("beacon-draw/v1" ‖ SHA-512(manifest) ‖ outputValue ‖ …) (``draw_seed``);
- a SHA-512 counter-mode stream of big-endian u64s (``DrawStream``), rejection
  sampling without modulo bias (``uniform``), and the first k steps of a
  Fisher-Yates shuffle (``select_winners``).

``draw`` does it all in one call. The result of a draw (which pulses, which
winners) has its own small JSON format (``DrawResult``), so that a published
result can be checked. Nothing here performs I/O: ``drawcmd`` fetches and
verifies pulses, reads files and prints.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from beacon_verifier.errors import DrawError, PulseFormatError
from beacon_verifier.format import (
    HASH_LEN,
    canonical_json,
    format_timestamp,
    load_json,
    parse_timestamp,
)

__all__ = [
    "DOMAIN",
    "BeaconRef",
    "DrawResult",
    "DrawStream",
    "Manifest",
    "PulseRef",
    "U64Source",
    "check_entrants",
    "compare_results",
    "draw",
    "draw_seed",
    "entrant_list_bytes",
    "manifest_hash",
    "parse_entrant_bytes",
    "parse_manifest",
    "parse_result",
    "select_winners",
    "uniform",
]

DOMAIN = b"beacon-draw/v1"
MANIFEST_VERSION = 1
RESULT_VERSION = 1

MAX_MANIFEST_BYTES = 64 * 1024
MAX_RESULT_BYTES = 16 * 1024 * 1024
MAX_ENTRANTS = 2**32 - 1
MAX_LABEL_BYTES = 4096
MAX_URL_BYTES = 2048
MAX_ALSO = 16
MAX_CHAIN = 2**64 - 1
_MAX_TIME_MS = 253_402_300_799_000  # 9999-12-31T23:59:59.000Z, the last whole second
_TWO_64 = 2**64

#: Whitespace stripped from both ends of each entrant line (LF separates lines).
ENTRANT_WHITESPACE = " \t\r\v\f"
#: Site-root URL schemes a manifest may name (those ``fetch.open_source`` opens).
BEACON_SCHEMES = frozenset({"http", "https", "s3", "file"})

_LOWER_HEX_RE = re.compile(r"\A[0-9a-f]*\Z")
_HEX_RE = re.compile(r"\A[0-9A-Fa-f]*\Z")


# --- entrant lists --------------------------------------------------------------


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def entrant_list_bytes(text: str) -> bytes:
    """The entrant list bytes of ``text``: its lines, stripped, non-empty, joined by LF, UTF-8.

    Lines are separated by LF only (a CR before it is stripped with the other
    whitespace in ``ENTRANT_WHITESPACE``). Raises ``DrawError`` when no entrant
    is left, when two lines name the same entrant (compared exactly, after
    stripping), or when an entrant is not encodable as UTF-8.
    """
    entrants: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), 1):
        entrant = line.strip(ENTRANT_WHITESPACE)
        if not entrant:
            continue
        if entrant in first_line:
            raise DrawError(
                f"entrant list: duplicate entrant {_short(entrant)} "
                f"(lines {first_line[entrant]} and {number})"
            )
        first_line[entrant] = number
        entrants.append(entrant)
    if not entrants:
        raise DrawError("entrant list: no entrants (every line is empty)")
    try:
        return "\n".join(entrants).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DrawError("entrant list: contains text that is not valid Unicode") from exc


def parse_entrant_bytes(data: bytes) -> list[str]:
    """The entrants of entrant list bytes, refusing bytes that are not in that exact form."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DrawError(f"entrant list: not UTF-8 (byte {exc.start})") from exc
    if entrant_list_bytes(text) != data:
        raise DrawError(
            "entrant list: not in normal form (one stripped entrant per line, "
            "no empty lines, no trailing newline)"
        )
    return text.split("\n")


# --- the manifest ---------------------------------------------------------------


def _require_int(name: str, value: object, low: int, high: int) -> None:
    if type(value) is not int:
        raise DrawError(f"{name}: must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise DrawError(f"{name}: {value} is outside {low}..{high}")


def _require_text(name: str, value: object, max_bytes: int) -> None:
    if not isinstance(value, str):
        raise DrawError(f"{name}: must be a string, got {type(value).__name__}")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DrawError(f"{name}: is not valid Unicode text") from exc
    if len(encoded) > max_bytes:
        raise DrawError(f"{name}: longer than {max_bytes} bytes")


def _require_beacon_url(name: str, value: object) -> None:
    _require_text(name, value, MAX_URL_BYTES)
    assert isinstance(value, str)
    if any(c.isspace() or not c.isprintable() for c in value):
        raise DrawError(f"{name}: {_short(value)} contains whitespace or control characters")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in BEACON_SCHEMES or not (parts.netloc or parts.scheme == "file"):
        raise DrawError(
            f"{name}: {_short(value)} is not a site root URL ({', '.join(sorted(BEACON_SCHEMES))})"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BeaconRef:
    """A further NIST-format beacon of a draw (manifest key ``also``): its site root and chain."""

    beacon: str
    chain: int

    def __post_init__(self) -> None:
        _require_beacon_url("manifest.also.beacon", self.beacon)
        _require_int("manifest.also.chain", self.chain, 1, MAX_CHAIN)


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """An announced draw. Constructing one validates every field.

    ``entrants`` is the SHA-512 digest of the entrant list bytes;
    ``pulse_time_ms`` is on a whole second and the target is the first pulse of
    ``chain`` at or after it; ``also`` lists further beacons whose pulses at the
    same target time are mixed in, in order.
    """

    beacon: str
    chain: int
    pulse_time_ms: int
    entrants: bytes
    entrant_count: int
    winners: int
    label: str
    also: tuple[BeaconRef, ...] = ()

    def __post_init__(self) -> None:
        _require_beacon_url("manifest.beacon", self.beacon)
        _require_int("manifest.chain", self.chain, 1, MAX_CHAIN)
        _require_int("manifest.pulseTime", self.pulse_time_ms, 0, _MAX_TIME_MS)
        if self.pulse_time_ms % 1000:
            raise DrawError(
                f"manifest.pulseTime: {format_timestamp(self.pulse_time_ms)} "
                "is not on a whole second"
            )
        if not isinstance(self.entrants, bytes) or len(self.entrants) != HASH_LEN:
            raise DrawError(f"manifest.entrants: must be a {HASH_LEN}-byte SHA-512 digest")
        _require_int("manifest.entrantCount", self.entrant_count, 1, MAX_ENTRANTS)
        _require_int("manifest.winners", self.winners, 1, self.entrant_count)
        _require_text("manifest.label", self.label, MAX_LABEL_BYTES)
        if not isinstance(self.also, tuple) or not all(
            isinstance(ref, BeaconRef) for ref in self.also
        ):
            raise DrawError("manifest.also: must be a tuple of BeaconRef")
        if len(self.also) > MAX_ALSO:
            raise DrawError(f"manifest.also: more than {MAX_ALSO} beacons")
        seen = {(self.beacon, self.chain)}
        for ref in self.also:
            if (ref.beacon, ref.chain) in seen:
                raise DrawError(f"manifest.also: beacon {ref.beacon} chain {ref.chain} twice")
            seen.add((ref.beacon, ref.chain))

    @property
    def pulse_time(self) -> str:
        """``pulseTime`` as written in the manifest (``YYYY-MM-DDTHH:MM:SS.mmmZ``)."""
        return format_timestamp(self.pulse_time_ms)

    def to_bytes(self) -> bytes:
        """The canonical manifest bytes: JSON, sorted keys, no whitespace, UTF-8.

        ``also`` is omitted when empty, so a plain manifest has exactly 8 keys.
        """
        obj: dict[str, Any] = {
            "version": MANIFEST_VERSION,
            "beacon": self.beacon,
            "chain": self.chain,
            "pulseTime": self.pulse_time,
            "entrants": self.entrants.hex(),
            "entrantCount": self.entrant_count,
            "winners": self.winners,
            "label": self.label,
        }
        if self.also:
            obj["also"] = [{"beacon": ref.beacon, "chain": ref.chain} for ref in self.also]
        return canonical_json(obj)


_MANIFEST_KEYS = frozenset(
    {"version", "beacon", "chain", "pulseTime", "entrants", "entrantCount", "winners", "label"}
)
_ALSO_KEYS = frozenset({"beacon", "chain"})


def _load(data: bytes, what: str, max_bytes: int) -> Any:
    """Strict JSON (``format.load_json``), its errors re-raised as ``DrawError`` naming ``what``."""
    try:
        return load_json(data, what=what, max_bytes=max_bytes)
    except PulseFormatError as exc:
        where = what if exc.field in (what, "json") else f"{what}.{exc.field}"
        raise DrawError(f"{where}: {exc.reason}") from None


def _keys(obj: object, path: str, required: frozenset[str], optional: frozenset[str]) -> None:
    if not isinstance(obj, dict):
        raise DrawError(f"{path}: must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - required - optional)
    if unknown:
        raise DrawError(f"{path}.{unknown[0]}: unknown key")
    missing = sorted(required - set(obj))
    if missing:
        raise DrawError(f"{path}.{missing[0]}: missing")


def _digest_hex(value: object, name: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * HASH_LEN or not _LOWER_HEX_RE.match(value):
        raise DrawError(f"{name}: must be {2 * HASH_LEN} lower-case hex digits")
    return bytes.fromhex(value)


def parse_manifest(data: bytes) -> Manifest:
    """Parse manifest bytes, strictly: the bytes must be exactly the canonical form.

    Unknown, missing or duplicate keys, wrong types, out-of-range values and
    non-canonical bytes (whitespace, key order, escapes, a trailing newline) are
    refused with a ``DrawError`` naming the field: the manifest's hash is what
    was published, so only one byte string may stand for a draw.
    """
    obj = _load(data, "manifest", MAX_MANIFEST_BYTES)
    _keys(obj, "manifest", _MANIFEST_KEYS, frozenset({"also"}))
    version = obj["version"]
    if type(version) is not int or version != MANIFEST_VERSION:
        raise DrawError(
            f"manifest.version: unsupported version {version!r} "
            f"(this verifier reads {MANIFEST_VERSION})"
        )
    try:
        pulse_time_ms = parse_timestamp(obj["pulseTime"])
    except PulseFormatError as exc:
        raise DrawError(f"manifest.pulseTime: {exc.reason}") from None
    also_raw = obj.get("also", [])
    if not isinstance(also_raw, list):
        raise DrawError(f"manifest.also: must be a list, got {type(also_raw).__name__}")
    if "also" in obj and not also_raw:
        raise DrawError("manifest.also: must be omitted when there are no further beacons")
    also = []
    for i, item in enumerate(also_raw):
        _keys(item, f"manifest.also[{i}]", _ALSO_KEYS, frozenset())
        also.append(BeaconRef(beacon=item["beacon"], chain=item["chain"]))
    manifest = Manifest(
        beacon=obj["beacon"],
        chain=obj["chain"],
        pulse_time_ms=pulse_time_ms,
        entrants=_digest_hex(obj["entrants"], "manifest.entrants"),
        entrant_count=obj["entrantCount"],
        winners=obj["winners"],
        label=obj["label"],
        also=tuple(also),
    )
    if manifest.to_bytes() != bytes(data):
        raise DrawError(
            "manifest: not in canonical form (sorted keys, no whitespace, UTF-8 without "
            "needless escapes, no trailing newline), so its hash is not the draw's"
        )
    return manifest


def manifest_hash(manifest_bytes: bytes) -> bytes:
    """SHA-512 of the manifest bytes: what the operator publishes when announcing a draw."""
    return hashlib.sha512(manifest_bytes).digest()


def check_entrants(manifest: Manifest, entrant_bytes: bytes) -> list[str]:
    """The entrants, once the entrant list bytes are shown to be the ones the manifest names."""
    digest = hashlib.sha512(entrant_bytes).digest()
    if digest != manifest.entrants:
        raise DrawError(
            "entrant list does not match the manifest: its SHA-512 is "
            f"{digest.hex()[:16]}…, the manifest's entrants is {manifest.entrants.hex()[:16]}…"
        )
    entrants = parse_entrant_bytes(entrant_bytes)
    if len(entrants) != manifest.entrant_count:
        raise DrawError(
            f"manifest.entrantCount: {manifest.entrant_count}, "
            f"but the entrant list has {len(entrants)} entrants"
        )
    return entrants


# --- the seed, the stream, the selection ------------------------------------------


def draw_seed(manifest_bytes: bytes, output_values: Sequence[bytes]) -> bytes:
    """seed = SHA-512("beacon-draw/v1" ‖ SHA-512(manifest bytes) ‖ outputValue₁ ‖ outputValue₂ …).

    ``output_values`` are the raw 64-byte outputValues of the target pulses: the
    manifest's beacon first, then those of ``also`` in their listed order.
    """
    if not output_values:
        raise DrawError("a draw needs the outputValue of at least one pulse")
    h = hashlib.sha512(DOMAIN)
    h.update(manifest_hash(manifest_bytes))
    for i, value in enumerate(output_values, 1):
        if not isinstance(value, bytes) or len(value) != HASH_LEN:
            raise DrawError(f"outputValue {i}: must be {HASH_LEN} bytes")
        h.update(value)
    return h.digest()


class U64Source(Protocol):
    """Anything that yields unsigned 64-bit integers (``DrawStream``, or a test's fixed list)."""

    def next_u64(self) -> int: ...


class DrawStream:
    """The draw's random stream: block_i = SHA-512(seed ‖ u64 big-endian i), i = 0, 1, 2, …

    The blocks are concatenated and read 8 bytes at a time as big-endian u64s;
    a 64-byte block holds exactly eight of them.
    """

    __slots__ = ("_block", "_counter", "_offset", "_seed")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != HASH_LEN:
            raise DrawError(f"seed: must be {HASH_LEN} bytes")
        self._seed = seed
        self._counter = 0
        self._block = b""
        self._offset = 0

    def next_u64(self) -> int:
        """The next u64 of the stream."""
        if self._offset == len(self._block):
            self._block = hashlib.sha512(self._seed + struct.pack(">Q", self._counter)).digest()
            self._counter += 1
            self._offset = 0
        value = int.from_bytes(self._block[self._offset : self._offset + 8], "big")
        self._offset += 8
        return value


def uniform(stream: U64Source, m: int) -> int:
    """A uniform integer in [0, m) without modulo bias.

    limit = 2^64 - (2^64 mod m); values x ≥ limit are discarded and the next one
    read, so every residue of x mod m is equally likely. Raises ``ValueError``
    when m is not in 1..2^64.
    """
    if type(m) is not int or not 1 <= m <= _TWO_64:
        raise ValueError(f"m must be an int in 1..2^64, got {m!r}")
    limit = _TWO_64 - _TWO_64 % m
    while True:
        x = stream.next_u64()
        if x < limit:
            return x % m


def select_winners(seed: bytes, entrants: Sequence[str], k: int) -> list[str]:
    """The k winners, in order: the first k steps of a Fisher-Yates shuffle driven by ``seed``.

    a = entrants; for i = 0 … k-1: j = i + uniform(n - i); swap a[i], a[j]; winner i+1 is a[i].
    """
    n = len(entrants)
    if type(k) is not int or not 1 <= k <= n:
        raise DrawError(f"winners: {k!r} is not between 1 and the number of entrants ({n})")
    stream = DrawStream(seed)
    a = list(entrants)
    for i in range(k):
        j = i + uniform(stream, n - i)
        a[i], a[j] = a[j], a[i]
    return a[:k]


def draw(manifest_bytes: bytes, entrant_bytes: bytes, output_values: Sequence[bytes]) -> list[str]:
    """The winners of a draw, in order, after checking everything the inputs must agree on.

    The manifest is parsed strictly; the entrant list bytes must hash to its
    ``entrants`` and hold ``entrantCount`` entrants; ``output_values`` must hold
    one outputValue per beacon the manifest names (its own, then ``also``).
    """
    manifest = parse_manifest(manifest_bytes)
    entrants = check_entrants(manifest, entrant_bytes)
    expected = 1 + len(manifest.also)
    if len(output_values) != expected:
        raise DrawError(
            f"the manifest names {expected} beacon(s), but {len(output_values)} "
            "outputValue(s) were given"
        )
    seed = draw_seed(manifest_bytes, output_values)
    return select_winners(seed, entrants, manifest.winners)


# --- results ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PulseRef:
    """The pulse a draw used from one beacon: where, which, when, and its outputValue."""

    beacon: str
    chain_index: int
    pulse_index: int
    time_stamp: str
    output_value: bytes

    def __post_init__(self) -> None:
        _require_text("beacon", self.beacon, MAX_URL_BYTES)
        _require_int("chainIndex", self.chain_index, 1, MAX_CHAIN)
        _require_int("pulseIndex", self.pulse_index, 1, MAX_CHAIN)
        try:
            parse_timestamp(self.time_stamp)
        except PulseFormatError as exc:
            raise DrawError(f"timeStamp: {exc.reason}") from None
        if not isinstance(self.output_value, bytes) or len(self.output_value) != HASH_LEN:
            raise DrawError(f"outputValue: must be {HASH_LEN} bytes")

    def to_object(self) -> dict[str, Any]:
        return {
            "beacon": self.beacon,
            "chainIndex": self.chain_index,
            "pulseIndex": self.pulse_index,
            "timeStamp": self.time_stamp,
            "outputValue": self.output_value.hex().upper(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DrawResult:
    """The outcome of a draw: its manifest's SHA-512, the pulses used (in seed order), winners."""

    manifest_hash: bytes
    pulses: tuple[PulseRef, ...]
    winners: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.manifest_hash, bytes) or len(self.manifest_hash) != HASH_LEN:
            raise DrawError(f"manifest: must be a {HASH_LEN}-byte SHA-512 digest")
        if not self.pulses or not all(isinstance(p, PulseRef) for p in self.pulses):
            raise DrawError("pulses: must be a non-empty tuple of PulseRef")
        if not self.winners:
            raise DrawError("winners: must not be empty")
        for i, winner in enumerate(self.winners, 1):
            _require_text(f"winners[{i}]", winner, MAX_RESULT_BYTES)

    def to_bytes(self) -> bytes:
        """The result file: JSON, indented, keys in a fixed order, with a final newline."""
        obj = {
            "version": RESULT_VERSION,
            "manifest": self.manifest_hash.hex(),
            "pulses": [p.to_object() for p in self.pulses],
            "winners": list(self.winners),
        }
        return json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


_RESULT_KEYS = frozenset({"version", "manifest", "pulses", "winners"})
_PULSE_REF_KEYS = frozenset({"beacon", "chainIndex", "pulseIndex", "timeStamp", "outputValue"})


def _pulse_ref(item: object, path: str) -> PulseRef:
    _keys(item, path, _PULSE_REF_KEYS, frozenset())
    assert isinstance(item, dict)
    value = item["outputValue"]
    if not isinstance(value, str) or len(value) != 2 * HASH_LEN or not _HEX_RE.match(value):
        raise DrawError(f"{path}.outputValue: must be {2 * HASH_LEN} hex digits")
    try:
        return PulseRef(
            beacon=item["beacon"],
            chain_index=item["chainIndex"],
            pulse_index=item["pulseIndex"],
            time_stamp=item["timeStamp"],
            output_value=bytes.fromhex(value),
        )
    except DrawError as exc:
        raise DrawError(f"{path}.{exc}") from None


def parse_result(data: bytes) -> DrawResult:
    """Parse a result file (what ``draw run --json`` prints). Whitespace is free; keys strict.

    Hex is read case-insensitively. Raises ``DrawError`` naming the field.
    """
    obj = _load(data, "result", MAX_RESULT_BYTES)
    _keys(obj, "result", _RESULT_KEYS, frozenset())
    version = obj["version"]
    if type(version) is not int or version != RESULT_VERSION:
        raise DrawError(
            f"result.version: unsupported version {version!r} (this verifier reads "
            f"{RESULT_VERSION})"
        )
    manifest, pulses, winners = obj["manifest"], obj["pulses"], obj["winners"]
    if (
        not isinstance(manifest, str)
        or len(manifest) != 2 * HASH_LEN
        or not _HEX_RE.match(manifest)
    ):
        raise DrawError(f"result.manifest: must be {2 * HASH_LEN} hex digits")
    if not isinstance(pulses, list):
        raise DrawError("result.pulses: must be a list")
    if not isinstance(winners, list):
        raise DrawError("result.winners: must be a list")
    try:
        return DrawResult(
            manifest_hash=bytes.fromhex(manifest),
            pulses=tuple(_pulse_ref(p, f"result.pulses[{i}]") for i, p in enumerate(pulses)),
            winners=tuple(winners),
        )
    except DrawError as exc:
        if str(exc).startswith("result."):
            raise
        raise DrawError(f"result.{exc}") from None


def compare_results(computed: DrawResult, claimed: DrawResult) -> list[str]:
    """Every difference between a result just computed and a claimed one, one line each."""
    out: list[str] = []
    if computed.manifest_hash != claimed.manifest_hash:
        out.append(
            f"manifest: the result file is for manifest {claimed.manifest_hash.hex()[:16]}…, "
            f"not {computed.manifest_hash.hex()[:16]}…"
        )
    if len(computed.pulses) != len(claimed.pulses):
        out.append(
            f"pulses: computed from {len(computed.pulses)}, the result file lists "
            f"{len(claimed.pulses)}"
        )
    for i, (mine, theirs) in enumerate(zip(computed.pulses, claimed.pulses, strict=False), 1):
        for key, value in mine.to_object().items():
            other = theirs.to_object()[key]
            if value != other:
                out.append(f"pulse {i} {key}: computed {value!r}, the result file says {other!r}")
    if len(computed.winners) != len(claimed.winners):
        out.append(
            f"winners: computed {len(computed.winners)}, the result file lists "
            f"{len(claimed.winners)}"
        )
    for i, (mine_w, theirs_w) in enumerate(zip(computed.winners, claimed.winners, strict=False), 1):
        if mine_w != theirs_w:
            out.append(
                f"winner {i}: computed {_short(mine_w)}, the result file says {_short(theirs_w)}"
            )
    return out
