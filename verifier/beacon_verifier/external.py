"""The drand external of a pulse: pure checks of round, value, source and BLS signature.

A pulse at boundary T mixes the drand round whose time is exactly T (League of
Entropy ``quicknet`` by default: scheme ``bls-unchained-g1-rfc9380``, signature
on G1, 48 bytes; public key on G2, 96 bytes; message SHA-256(round as 8 bytes
big-endian)). Its ``external`` block says

    sourceId   = SHA-512(UTF-8 "drand:" + chain hash in lower-case hex)
    value      = SHA-512(the round's 48-byte signature)   (zeros when missing)
    statusCode = 0 (valid round) or one of MISSING_CODES

and the round itself (number, signature, relay) is published beside the pulse
as ``beacon/2.0/chain/{c}/external/{ms}`` (see docs/external.md). The value to
use is ``randomValue = SHA-512(localRandomValue || external.value)``.

Nothing here reads the network or a clock. BLS verification needs the optional
``drand`` extra (pyblst, the Python binding of blst); without it an external is
reported NOT_CHECKED, never valid.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

from beacon_verifier.format import ZERO_HASH, External, Pulse, load_json

SCHEME = "bls-unchained-g1-rfc9380"
DST = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_NUL_"
SIGNATURE_BYTES = 48
PUBLIC_KEY_BYTES = 96
MAX_RECORD_BYTES = 4096
RECORD_VERSION = 1

#: external.statusCode values. 0 is a valid drand round mixed in.
STATUS_VALID = 0
STATUS_UNREACHABLE = 1  # no relay answered (connection refused, timeout, bad /info)
STATUS_NOT_RELEASED = 2  # relays answered, round T was not there within external_wait_ms
STATUS_INVALID_ROUND = 3  # a relay served round T with a bad signature or the wrong round
MISSING_CODES = {
    STATUS_UNREACHABLE: "no relay could be reached",
    STATUS_NOT_RELEASED: "the round was not released in time",
    STATUS_INVALID_ROUND: "the relays served an invalid round",
}

#: Verdicts of ``check_external``.
VALID = "valid"
MISSING = "missing"  # a declared missing external (non-zero statusCode, zero value)
NONE = "none"  # no external source at all (sourceId zero)
NOT_CHECKED = "not checked"  # everything but the BLS signature holds; no BLS binding here
INVALID = "invalid"
NO_RECORD = "the round record is not published"

# The compressed G2 generator (ZCash serialization), for e(sig, g2) == e(H(m), pk).
_G2_GENERATOR = bytes.fromhex(
    "93e02b6052719f607dacd3a088274f65596bd0d09920b61ab5da61bbdc7f5049334cf11213945d57e5ac"
    "7d055d042b7e024aa2b2f08f0a91260805272dc51051c6e47ad4fa403b02b4510b647ae3d1770bac0326"
    "a805bbefd48056c8c121bdb8"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DrandChain:
    """A drand chain: its hash, public key, genesis (Unix s), period (s), group hash, id.

    The chain hash covers the others (``computed_hash``), so pinning the hash
    and the key pins genesis and period too: a relay cannot shift round times.
    """

    chain_hash: bytes
    public_key: bytes
    genesis_time: int
    period: int
    group_hash: bytes = b""
    beacon_id: str = ""

    def __post_init__(self) -> None:
        if len(self.chain_hash) != 32:
            raise ValueError("a drand chain hash is 32 bytes (64 hex digits)")
        if len(self.public_key) != PUBLIC_KEY_BYTES:
            raise ValueError(f"a {SCHEME} public key is {PUBLIC_KEY_BYTES} bytes (G2)")
        if self.genesis_time < 0 or self.period < 1:
            raise ValueError("drand genesis_time must be >= 0 and period >= 1 s")

    @property
    def source_id(self) -> bytes:
        return source_id(self.chain_hash)

    def computed_hash(self) -> bytes:
        """drand's chain hash: SHA-256(u32 period || i64 genesis || key || group hash || id),
        the id left out when it is "default" (as drand's ``chain.Info.Hash``)."""
        h = hashlib.sha256(struct.pack(">Iq", self.period, self.genesis_time))
        h.update(self.public_key + self.group_hash)
        if self.beacon_id not in ("", "default"):
            h.update(self.beacon_id.encode())
        return h.digest()

    def round_at(self, time_ms: int) -> int | None:
        """The round whose time is exactly ``time_ms``; None when no round lands there."""
        offset = time_ms - self.genesis_time * 1000
        if offset < 0 or offset % (self.period * 1000):
            return None
        return offset // (self.period * 1000) + 1

    def time_of(self, round_number: int) -> int:
        """Unix ms at which round ``round_number`` is due."""
        return (self.genesis_time + (round_number - 1) * self.period) * 1000

    @classmethod
    def from_info(cls, info: object) -> DrandChain:
        """From a drand ``/info`` document whose hash covers its fields.

        Raises ``ValueError`` naming what is wrong (a field, the scheme, the hash).
        """
        if not isinstance(info, dict):
            raise ValueError("drand info: not a JSON object")
        try:
            scheme = info.get("schemeID", SCHEME)
            if scheme != SCHEME:
                raise ValueError(f"drand info: schemeID is {scheme!r}, not {SCHEME}")
            metadata = info.get("metadata") or {}
            beacon_id = metadata.get("beaconID", "") if isinstance(metadata, dict) else ""
            chain = cls(
                chain_hash=_unhex(info["hash"], "hash"),
                public_key=_unhex(info["public_key"], "public_key"),
                genesis_time=_int(info["genesis_time"], "genesis_time"),
                period=_int(info["period"], "period"),
                group_hash=_unhex(info["groupHash"], "groupHash"),
                beacon_id=beacon_id if isinstance(beacon_id, str) else "",
            )
        except KeyError as exc:
            raise ValueError(f"drand info: {exc.args[0]} missing") from None
        if chain.computed_hash() != chain.chain_hash:
            raise ValueError("drand info: hash does not match its period, genesis and key")
        return chain

    def info(self) -> dict[str, Any]:
        """This chain as a drand ``/info`` document."""
        return {
            "public_key": self.public_key.hex(),
            "period": self.period,
            "genesis_time": self.genesis_time,
            "hash": self.chain_hash.hex(),
            "groupHash": self.group_hash.hex(),
            "schemeID": SCHEME,
            "metadata": {"beaconID": self.beacon_id or "default"},
        }


#: League of Entropy quicknet, as served at https://api.drand.sh/{hash}/info.
QUICKNET = DrandChain(
    chain_hash=bytes.fromhex("52db9ba70e0cc0f6eaf7803dd07447a1f5477735fd3f661792ba94600c84e971"),
    public_key=bytes.fromhex(
        "83cf0f2896adee7eb8b5f01fcad3912212c437e0073e911fb90022d3e760183c8c4b450b6a0a6c3ac6"
        "a5776a2d1064510d1fec758c921cc22b0e17e63aaf4bcb5ed66304de9cf809bd274ca73bab4af5a6e9"
        "c76a4bc09e76eae8991ef5ece45a"
    ),
    genesis_time=1692803367,
    period=3,
    group_hash=bytes.fromhex("f477d5c89f21a17c863a7f937c6a6d15859414d2be09cd448d4279af331c5d3e"),
    beacon_id="quicknet",
)


def source_id(chain_hash: bytes) -> bytes:
    """external.sourceId of a drand chain: SHA-512 of ``drand:<chain hash hex>``."""
    return hashlib.sha512(b"drand:" + chain_hash.hex().encode()).digest()


def external_value(signature: bytes) -> bytes:
    """external.value of a round: SHA-512 of its 48-byte signature."""
    return hashlib.sha512(signature).digest()


def random_value(local_random_value: bytes, external: bytes) -> bytes:
    """The value to use: SHA-512(localRandomValue || external.value), 128 bytes in."""
    return hashlib.sha512(local_random_value + external).digest()


def round_message(round_number: int) -> bytes:
    """What drand signs for an unchained round: SHA-256 of the round, 8 bytes big-endian."""
    return hashlib.sha256(round_number.to_bytes(8, "big")).digest()


def bls_available() -> bool:
    """True when the ``drand`` extra (pyblst) is installed."""
    try:
        import pyblst  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


def verify_round(chain: DrandChain, round_number: int, signature: bytes) -> bool:
    """BLS check of a round's signature against the pinned key. Needs pyblst.

    False for any signature that does not decode to a G1 point or does not verify.
    """
    import pyblst

    if len(signature) != SIGNATURE_BYTES or not 0 < round_number < 2**64:
        return False
    try:
        key, g2 = _g2_points(chain.public_key)
        sig = pyblst.BlstP1Element().uncompress(signature)
        h = pyblst.BlstP1Element().hash_to_group(round_message(round_number), DST)
        return bool(pyblst.final_verify(pyblst.miller_loop(sig, g2), pyblst.miller_loop(h, key)))
    except Exception:  # pyblst raises a bare Exception for a point it cannot decode
        return False


@functools.lru_cache(maxsize=8)
def _g2_points(public_key: bytes) -> tuple[Any, Any]:
    """The decompressed public key and G2 generator (decompressing G2 costs ~0.5 ms)."""
    import pyblst

    g2 = pyblst.BlstP2Element()
    return g2.uncompress(public_key), pyblst.BlstP2Element().uncompress(_G2_GENERATOR)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundRecord:
    """The published object beside a pulse: which round was mixed, or why none was."""

    chain_hash: bytes
    round: int
    status_code: int
    signature: bytes | None = None  # None when missing
    relay: str = ""
    reason: str = ""

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "version": RECORD_VERSION,
            "source": "drand",
            "scheme": SCHEME,
            "chainHash": self.chain_hash.hex(),
            "round": self.round,
            "statusCode": self.status_code,
            "signature": None if self.signature is None else self.signature.hex(),
            "relay": self.relay,
            "reason": self.reason,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RoundRecord:
        """Parse a published record; ``ValueError`` naming the field at fault."""
        doc = load_json(data, what="external record", max_bytes=MAX_RECORD_BYTES)
        if not isinstance(doc, dict):
            raise ValueError("external record: not a JSON object")
        if doc.get("source") != "drand" or doc.get("scheme") != SCHEME:
            raise ValueError(f"external record: not a {SCHEME} drand round")
        sig = doc.get("signature")
        for name in ("relay", "reason"):
            if not isinstance(doc.get(name, ""), str):
                raise ValueError(f"external record.{name}: not a string")
        return cls(
            chain_hash=_unhex(doc.get("chainHash"), "chainHash"),
            round=_int(doc.get("round"), "round"),
            status_code=_int(doc.get("statusCode"), "statusCode"),
            signature=None if sig is None else _unhex(sig, "signature"),
            relay=doc.get("relay", ""),
            reason=doc.get("reason", ""),
        )


def external_of(chain: DrandChain, record: RoundRecord) -> External:
    """The external block a pulse carries for ``record``."""
    if record.status_code == STATUS_VALID and record.signature is not None:
        value = external_value(record.signature)
    else:
        value = ZERO_HASH
    return External(source_id=chain.source_id, status_code=record.status_code, value=value)


@dataclass(frozen=True, slots=True)
class ExternalVerdict:
    """``check_external``'s answer: VALID, MISSING, NONE, NOT_CHECKED or INVALID, and why."""

    verdict: str
    detail: str = ""
    round: int | None = None

    @property
    def usable(self) -> bool:
        """True when randomValue may be called the value to use."""
        return self.verdict == VALID


def check_external(
    pulse: Pulse,
    record: bytes | None,
    chain: DrandChain = QUICKNET,
    *,
    verify_bls: bool | None = None,
) -> ExternalVerdict:
    """Check a pulse's external against its published round record and the pinned chain.

    ``record`` is the bytes of ``beacon/2.0/chain/{c}/external/{ms}`` (None when the
    site has none). ``verify_bls`` None: verify when pyblst is installed. Checks:
    sourceId names the pinned chain; a non-zero statusCode has a zero value (MISSING);
    the record is for the pinned chain, for the round whose time is the pulse's
    timeStamp; external.value is SHA-512 of its signature; the signature verifies.
    """
    ext = pulse.external
    if ext.source_id == ZERO_HASH and ext.value == ZERO_HASH and ext.status_code == 0:
        return ExternalVerdict(NONE, "no external source")
    if ext.source_id != chain.source_id:
        return ExternalVerdict(INVALID, "external.sourceId does not name the pinned drand chain")
    expected_round = chain.round_at(pulse.time_ms)
    if ext.status_code != STATUS_VALID:  # declared missing (also where no round lands)
        if ext.value != ZERO_HASH:
            return ExternalVerdict(INVALID, "a missing external must have a zero external.value")
        why = MISSING_CODES.get(ext.status_code, f"unknown statusCode {ext.status_code}")
        return ExternalVerdict(MISSING, why, expected_round)
    if expected_round is None:
        return ExternalVerdict(INVALID, "no drand round of the pinned chain lands on timeStamp")
    if record is None:
        return ExternalVerdict(INVALID, NO_RECORD, expected_round)
    try:
        rec = RoundRecord.from_json(record)
    except ValueError as exc:
        return ExternalVerdict(INVALID, str(exc), expected_round)
    if rec.chain_hash != chain.chain_hash:
        return ExternalVerdict(INVALID, "the round record names another drand chain")
    if rec.round != expected_round:
        return ExternalVerdict(
            INVALID, f"round {rec.round} is not round {expected_round} of timeStamp", rec.round
        )
    if rec.status_code != STATUS_VALID or rec.signature is None:
        return ExternalVerdict(INVALID, "the round record has no signature", rec.round)
    if external_value(rec.signature) != ext.value:
        return ExternalVerdict(INVALID, "external.value is not SHA-512 of the signature", rec.round)
    if verify_bls is None:
        verify_bls = bls_available()
    if not verify_bls:
        return ExternalVerdict(NOT_CHECKED, "BLS not checked: install beacon-verifier[drand]")
    if not verify_round(chain, rec.round, rec.signature):
        return ExternalVerdict(INVALID, "the drand BLS signature does not verify", rec.round)
    return ExternalVerdict(VALID, "", rec.round)


def _unhex(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{name}: not a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{name}: not hex") from None


def _int(value: object, name: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{name}: not a non-negative integer")
    return value
