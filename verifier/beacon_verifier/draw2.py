"""Fair draws, version 2: seeded by values nobody could steer (pure functions).

A v1 draw is seeded by outputValues, and a pulse's outputValue covers the
precommitmentValue its signer picks at signing time: the signer of the last
pulse can grind it. A v2 draw takes from each beacon's target pulse its
``localRandomValue`` (committed a period earlier, through the previous pulse's
``precommitmentValue``) and its ``external.value`` (this beacon: the drand round
of the pulse's time, which did not exist before it):

    seed = SHA-512("beacon-draw/v2" ‖ SHA-512(manifest bytes) ‖ lrv₁ ‖ ext₁ ‖ lrv₂ ‖ ext₂ ‖ …)

in manifest order (docs/draws.md, "Draws v2"). The manifest is the v1 manifest
with ``version`` 2 and ``announcedAt`` (when it was written). On this beacon the
target is the first pulse at or after ``pulseTime`` with a valid external; the
pulses skipped are listed in the result. The winners are then selected exactly
as in v1 (``draw.select_winners``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from beacon_verifier.draw import (
    MAX_MANIFEST_BYTES,
    MAX_RESULT_BYTES,
    Manifest,
    check_entrants,
    manifest_hash,
    parse_manifest,
    select_winners,
)
from beacon_verifier.errors import DrawError, PulseFormatError
from beacon_verifier.format import (
    HASH_LEN,
    canonical_json,
    format_timestamp,
    load_json,
    parse_timestamp,
)

DOMAIN_V2 = b"beacon-draw/v2"
VERSION = 2
#: A target pulse without a valid external moves the draw on, at most this many pulses.
MAX_SKIPPED = 64


@dataclass(frozen=True, slots=True)
class ManifestV2:
    """A v2 manifest: the v1 fields (validated by ``Manifest``) and ``announcedAt``."""

    base: Manifest
    announced_at_ms: int

    def __post_init__(self) -> None:
        if self.announced_at_ms >= self.base.pulse_time_ms:
            raise DrawError("manifest.announcedAt: must be before pulseTime")

    def to_bytes(self) -> bytes:
        obj = json.loads(self.base.to_bytes())
        obj["version"] = VERSION
        obj["announcedAt"] = format_timestamp(self.announced_at_ms)
        return canonical_json(obj)


def manifest_version(data: bytes) -> int:
    """The ``version`` of manifest bytes (1 or 2), before parsing them strictly."""
    try:
        obj = load_json(data, what="manifest", max_bytes=MAX_MANIFEST_BYTES)
    except PulseFormatError as exc:
        raise DrawError(f"manifest: {exc.reason}") from None
    version = obj.get("version") if isinstance(obj, dict) else None
    return version if type(version) is int else 1


def parse_manifest_v2(data: bytes) -> ManifestV2:
    """Parse v2 manifest bytes strictly (canonical form, every v1 rule, ``announcedAt``)."""
    try:
        obj = load_json(data, what="manifest", max_bytes=MAX_MANIFEST_BYTES)
    except PulseFormatError as exc:
        raise DrawError(f"manifest: {exc.reason}") from None
    if not isinstance(obj, dict) or obj.get("version") != VERSION:
        raise DrawError(f"manifest.version: not {VERSION}")
    if "announcedAt" not in obj:
        raise DrawError("manifest.announcedAt: missing")
    try:
        announced = parse_timestamp(obj.pop("announcedAt"))
    except PulseFormatError as exc:
        raise DrawError(f"manifest.announcedAt: {exc.reason}") from None
    obj["version"] = 1
    manifest = ManifestV2(parse_manifest(canonical_json(obj)), announced)
    if manifest.to_bytes() != bytes(data):
        raise DrawError("manifest: not in canonical form, so its hash is not the draw's")
    return manifest


def draw_seed_v2(manifest_bytes: bytes, contributions: Sequence[tuple[bytes, bytes]]) -> bytes:
    """seed = SHA-512("beacon-draw/v2" ‖ SHA-512(manifest) ‖ lrv₁ ‖ ext₁ ‖ …)."""
    if not contributions:
        raise DrawError("a draw needs at least one pulse")
    h = hashlib.sha512(DOMAIN_V2)
    h.update(manifest_hash(manifest_bytes))
    for i, (lrv, ext) in enumerate(contributions, 1):
        if len(lrv) != HASH_LEN or len(ext) != HASH_LEN:
            raise DrawError(f"pulse {i}: localRandomValue and external.value must be 64 bytes")
        h.update(lrv + ext)
    return h.digest()


def check_commitment(local_random_value: bytes, previous_precommitment: bytes, where: str) -> None:
    """A target's localRandomValue must open its predecessor's precommitmentValue."""
    if hashlib.sha512(local_random_value).digest() != previous_precommitment:
        raise DrawError(
            f"{where}: localRandomValue does not open the previous pulse's precommitmentValue, "
            "so it was not fixed a period ahead"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Contribution:
    """What one beacon's target pulse gives a v2 draw."""

    beacon: str
    chain_index: int
    pulse_index: int
    time_stamp: str
    local_random_value: bytes
    external_value: bytes

    def to_object(self) -> dict[str, Any]:
        return {
            "beacon": self.beacon,
            "chainIndex": self.chain_index,
            "pulseIndex": self.pulse_index,
            "timeStamp": self.time_stamp,
            "localRandomValue": self.local_random_value.hex().upper(),
            "externalValue": self.external_value.hex().upper(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Skipped:
    """A pulse at or after the target time passed over: no valid external."""

    pulse_index: int
    time_stamp: str
    reason: str

    def to_object(self) -> dict[str, Any]:
        return {"pulseIndex": self.pulse_index, "timeStamp": self.time_stamp, "reason": self.reason}


@dataclass(frozen=True, slots=True, kw_only=True)
class DrawResultV2:
    manifest_hash: bytes
    pulses: tuple[Contribution, ...]
    skipped: tuple[Skipped, ...]
    winners: tuple[str, ...]

    def to_object(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "manifest": self.manifest_hash.hex(),
            "pulses": [p.to_object() for p in self.pulses],
            "skipped": [s.to_object() for s in self.skipped],
            "winners": list(self.winners),
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_object(), indent=2, ensure_ascii=False).encode() + b"\n"


def draw_v2(
    manifest_bytes: bytes, entrant_bytes: bytes, contributions: Sequence[tuple[bytes, bytes]]
) -> list[str]:
    """The winners of a v2 draw (manifest parsed strictly, entrants checked)."""
    manifest = parse_manifest_v2(manifest_bytes)
    entrants = check_entrants(manifest.base, entrant_bytes)
    expected = 1 + len(manifest.base.also)
    if len(contributions) != expected:
        raise DrawError(f"the manifest names {expected} beacon(s), got {len(contributions)}")
    seed = draw_seed_v2(manifest_bytes, contributions)
    return select_winners(seed, entrants, manifest.base.winners)


def compare_v2(computed: DrawResultV2, claimed_bytes: bytes) -> list[str]:
    """Every difference between a computed v2 result and a claimed result file."""
    try:
        claimed = load_json(claimed_bytes, what="result", max_bytes=MAX_RESULT_BYTES)
    except PulseFormatError as exc:
        raise DrawError(f"result: {exc.reason}") from None
    mine = computed.to_object()
    if not isinstance(claimed, dict):
        raise DrawError("result: must be a JSON object")
    out = []
    for key, value in mine.items():
        other = claimed.get(key)
        if key == "pulses" and isinstance(other, list):
            other = [
                {k: (v.upper() if k.endswith("Value") else v) for k, v in p.items()}
                if isinstance(p, dict)
                else p
                for p in other
            ]
        if value != other:
            out.append(
                f"{key}: computed {json.dumps(value)[:200]}, the result file says "
                f"{json.dumps(other)[:200]}"
            )
    return out
