"""Post-quantum co-signatures: ML-DSA-65 (FIPS 204) next to the pulse's RSA signature.

The pulse itself stays byte-identical to the NIST format. Two extra kinds of
immutable objects carry the post-quantum layer:

**Key document** at ``beacon/2.0/pq-key/{keyId}``, keyId = SHA-512 of the raw
ML-DSA-65 public key (1952 bytes), in lowercase hex. Its bytes are the canonical
JSON (``format.canonical_json``; all of it ASCII)::

    {"document":"<D>","rsaSignature":"<HEX>"}

where ``<D>`` is the exact text of the canonical JSON
``{"algorithm":"ML-DSA-65","certificateId":"<hex>","publicKey":"<HEX>","version":1}``
and ``rsaSignature`` is the RSA PKCS#1 v1.5 / SHA-512 signature of ``<D>``'s
bytes by the key of that certificate. The RSA identity thus vouches for the PQ
key, binding the two; a verifier that trusts the certificate trusts the key.

**Co-signature** of pulse ``p`` of chain ``c`` at ``beacon/2.0/chain/{c}/pq-signature/{p}``::

    {"keyId":"<hex>","signature":"<HEX>","version":1}

``signature`` is ML-DSA-65 over ``S ‖ signatureValue`` (the pulse's signed
serialization followed by its RSA signature bytes) with the FIPS 204 context
string ``CONTEXT``. Signing the RSA signature too means the pair cannot be
recombined. A new PQ key (rotation) is a new key document; each co-signature
names the key that made it, and the verifier follows it.

Hex in ``publicKey``, ``rsaSignature`` and ``signature`` is uppercase, like the
pulse's own fields. Pure: bytes in, verdicts out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mldsa, padding

from beacon_verifier.checks import TrustedCertificate
from beacon_verifier.errors import PulseFormatError, SignatureError
from beacon_verifier.format import Pulse, canonical_json, load_json, signing_input

__all__ = [
    "ALGORITHM",
    "CONTEXT",
    "PqKey",
    "check_cosignature",
    "cosign_input",
    "encode_cosignature",
    "encode_key_document",
    "key_id",
    "parse_cosignature",
    "parse_key_document",
]

ALGORITHM = "ML-DSA-65"
CONTEXT = b"NIST-beacon-2.0 pulse co-signature v1"
VERSION = 1
PUBLIC_KEY_BYTES = 1952
SIGNATURE_BYTES = 3309
MAX_KEY_DOCUMENT_BYTES = 16 * 1024
MAX_COSIGNATURE_BYTES = 16 * 1024


def key_id(public_key_raw: bytes) -> bytes:
    """keyId: SHA-512 of the raw ML-DSA-65 public key."""
    return hashlib.sha512(public_key_raw).digest()


def cosign_input(pulse_serialization: bytes, rsa_signature: bytes) -> bytes:
    """What the co-signature signs: S followed by the RSA signature bytes."""
    return pulse_serialization + rsa_signature


@dataclass(frozen=True, slots=True, kw_only=True)
class PqKey:
    """A post-quantum key the RSA identity ``certificate_id`` vouched for."""

    key_id: bytes
    certificate_id: bytes
    public_key: mldsa.MLDSA65PublicKey


def encode_key_document(
    public_key_raw: bytes, certificate_id: bytes, rsa_sign: Callable[[bytes], bytes]
) -> bytes:
    """The key document's bytes; ``rsa_sign`` signs with the certificate's key."""
    document = canonical_json(
        {
            "algorithm": ALGORITHM,
            "certificateId": certificate_id.hex(),
            "publicKey": public_key_raw.hex().upper(),
            "version": VERSION,
        }
    )
    return canonical_json(
        {"document": document.decode(), "rsaSignature": rsa_sign(document).hex().upper()}
    )


def _hex_field(obj: dict[str, Any], name: str, where: str, size: int | None = None) -> bytes:
    value = obj.get(name)
    try:
        if not isinstance(value, str):
            raise ValueError
        raw = bytes.fromhex(value)
    except ValueError:
        raise PulseFormatError(f"{where}.{name}", "missing or not hex") from None
    if size is not None and len(raw) != size:
        raise PulseFormatError(f"{where}.{name}", f"must be {size} bytes, got {len(raw)}")
    return raw


def _object(data: bytes, where: str, max_bytes: int, keys: set[str]) -> dict[str, Any]:
    obj = load_json(data, what=where, max_bytes=max_bytes)
    if not isinstance(obj, dict) or set(obj) != keys:
        raise PulseFormatError(where, f"must be an object with exactly {', '.join(sorted(keys))}")
    return obj


def parse_key_document(
    data: bytes, certificates: Callable[[bytes], TrustedCertificate | None]
) -> PqKey:
    """Check a key document against the RSA certificate it names; return the key.

    ``certificates`` finds a trusted certificate by certificateId. Raises
    ``PulseFormatError`` for a malformed document and ``SignatureError`` when
    the certificate is unknown or its signature does not hold.
    """
    outer = _object(data, "pq key document", MAX_KEY_DOCUMENT_BYTES, {"document", "rsaSignature"})
    if not isinstance(outer["document"], str):
        raise PulseFormatError("pq key document.document", "must be a string")
    document = outer["document"].encode()
    signature = _hex_field(outer, "rsaSignature", "pq key document")
    inner = _object(
        document,
        "pq key document.document",
        MAX_KEY_DOCUMENT_BYTES,
        {"algorithm", "certificateId", "publicKey", "version"},
    )
    if inner["algorithm"] != ALGORITHM or inner["version"] != VERSION:
        raise PulseFormatError("pq key document", f"not a version {VERSION} {ALGORITHM} key")
    certificate_id = _hex_field(inner, "certificateId", "pq key document", 64)
    public_raw = _hex_field(inner, "publicKey", "pq key document", PUBLIC_KEY_BYTES)
    certificate = certificates(certificate_id)
    if certificate is None:
        raise SignatureError(
            "pq key", detail=f"certificate {certificate_id.hex()[:16]}… is not available"
        )
    try:
        certificate.public_key.verify(signature, document, padding.PKCS1v15(), hashes.SHA512())
    except InvalidSignature:
        raise SignatureError(
            "pq key",
            detail=f"not vouched for by certificate {certificate_id.hex()[:16]}… (bad signature)",
        ) from None
    return PqKey(
        key_id=key_id(public_raw),
        certificate_id=certificate_id,
        public_key=mldsa.MLDSA65PublicKey.from_public_bytes(public_raw),
    )


def encode_cosignature(key_id_: bytes, signature: bytes) -> bytes:
    """The co-signature object's bytes."""
    return canonical_json(
        {"keyId": key_id_.hex(), "signature": signature.hex().upper(), "version": VERSION}
    )


def parse_cosignature(data: bytes) -> tuple[bytes, bytes]:
    """``(keyId, signature)`` of a co-signature object. Raises ``PulseFormatError``."""
    obj = _object(data, "pq signature", MAX_COSIGNATURE_BYTES, {"keyId", "signature", "version"})
    if obj["version"] != VERSION:
        raise PulseFormatError("pq signature.version", f"must be {VERSION}")
    return (
        _hex_field(obj, "keyId", "pq signature", 64),
        _hex_field(obj, "signature", "pq signature", SIGNATURE_BYTES),
    )


def check_cosignature(pulse: Pulse, data: bytes, keys: Callable[[bytes], PqKey | None]) -> PqKey:
    """Check a pulse's co-signature; returns the key that made it.

    ``keys`` finds a vouched-for key by keyId (None when unavailable). Raises
    ``PulseFormatError`` for a malformed object, ``SignatureError`` (check
    ``pq signature``) when the key is unknown, was vouched for by another
    certificate than the pulse's, or the signature does not hold.
    """
    kid, signature = parse_cosignature(data)
    key = keys(kid)
    if key is None:
        raise SignatureError(
            "pq signature",
            pulse_index=pulse.pulse_index,
            detail=f"pq key {kid.hex()[:16]}… is not available",
        )
    if key.certificate_id != pulse.certificate_id:
        raise SignatureError(
            "pq signature",
            pulse_index=pulse.pulse_index,
            detail="the pq key was vouched for by another certificate than the pulse's",
        )
    try:
        key.public_key.verify(
            signature, cosign_input(signing_input(pulse), pulse.signature_value), CONTEXT
        )
    except InvalidSignature:
        raise SignatureError(
            "pq signature",
            pulse_index=pulse.pulse_index,
            detail=f"not a valid ML-DSA-65 signature by pq key {kid.hex()[:16]}…",
        ) from None
    return key
