"""ML-DSA-65 co-signatures: keys vouched for by the RSA identity, pulses co-signed, NIST
bytes untouched, and every alteration detected."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from beacon_verifier.checks import TrustedCertificate
from beacon_verifier.errors import PulseFormatError, SignatureError
from beacon_verifier.format import signing_input
from beacon_verifier.pq import (
    PqKey,
    check_cosignature,
    encode_key_document,
    key_id,
    parse_cosignature,
    parse_key_document,
)
from cryptography.hazmat.primitives.asymmetric import mldsa

from beacon.errors import KeyFileError
from beacon.pulse.keys import PQ_KEY_FILE, Signer, init_identity, load_identity
from tests.unit.test_builder import MINUTE, build_chain, ms

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
Lookup = Callable[[bytes], TrustedCertificate | None]


def keys_of(*signers: Signer, certs: Lookup) -> Callable[[bytes], PqKey | None]:
    found = {}
    for s in signers:
        assert s.pq is not None
        key = parse_key_document(s.pq.key_document, certs)
        found[key.key_id] = key
    return found.get


def test_init_creates_a_private_pq_key_that_loads_back(tmp_path: Path) -> None:
    made = init_identity(tmp_path, name="t", now=NOW, key_bits=2048)
    assert (tmp_path / PQ_KEY_FILE).stat().st_mode & 0o777 == 0o600
    loaded = load_identity(tmp_path)
    assert made.pq is not None and loaded.pq is not None
    assert loaded.pq.key_id == made.pq.key_id
    assert "PRIVATE" not in repr(loaded) + repr(loaded.pq)
    (tmp_path / PQ_KEY_FILE).chmod(0o644)
    with pytest.raises(KeyFileError, match="accessible by group or others"):
        load_identity(tmp_path)


def test_identity_without_a_pq_key_still_signs(tmp_path: Path) -> None:
    init_identity(tmp_path, name="t", now=NOW, key_bits=2048)
    (tmp_path / PQ_KEY_FILE).unlink()
    assert load_identity(tmp_path).pq is None


def test_cosigned_chain_verifies_and_nist_bytes_are_unchanged(
    signer: Signer, cert_lookup: Lookup
) -> None:
    times = [ms("2026-02-01T10:00:00") + n * MINUTE for n in range(3)]
    cosigned = build_chain(times, signer)
    plain = build_chain(times, replace(signer, pq=None))
    keys = keys_of(signer, certs=cert_lookup)
    for with_pq, without in zip(cosigned, plain, strict=True):
        assert with_pq.data == without.data  # the pulse JSON is byte-identical
        assert without.cosignature is None and with_pq.cosignature is not None
        key = check_cosignature(with_pq.pulse, with_pq.cosignature, keys)
        assert signer.pq is not None and key.key_id == signer.pq.key_id
    # A co-signature belongs to its pulse only.
    with pytest.raises(SignatureError, match="not a valid ML-DSA-65 signature"):
        check_cosignature(cosigned[1].pulse, cosigned[0].cosignature or b"", keys)


def test_altered_cosignature_is_detected(signer: Signer, cert_lookup: Lookup) -> None:
    built = build_chain([ms("2026-02-01T10:00:00")], signer)[0]
    assert built.cosignature is not None
    doc = json.loads(built.cosignature)
    sig = bytearray(bytes.fromhex(doc["signature"]))
    sig[100] ^= 1
    doc["signature"] = sig.hex().upper()
    altered = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(SignatureError, match="pq signature"):
        check_cosignature(built.pulse, altered, keys_of(signer, certs=cert_lookup))
    with pytest.raises(PulseFormatError):
        parse_cosignature(built.cosignature[:-5])


def test_unknown_pq_key_is_reported(signer: Signer) -> None:
    built = build_chain([ms("2026-02-01T10:00:00")], signer)[0]
    with pytest.raises(SignatureError, match="is not available"):
        check_cosignature(built.pulse, built.cosignature or b"", lambda _: None)


def test_key_document_must_be_vouched_for_by_its_certificate(
    signer: Signer, other_signer: Signer, cert_lookup: Lookup
) -> None:
    raw = mldsa.MLDSA65PrivateKey.generate().public_key().public_bytes_raw()
    # Claims signer's certificate but is signed by other_signer's key.
    forged = encode_key_document(raw, bytes(signer.certificate_id), other_signer.sign)
    with pytest.raises(SignatureError, match="not vouched for"):
        parse_key_document(forged, cert_lookup)
    with pytest.raises(SignatureError, match="not available"):
        parse_key_document(signer.pq.key_document if signer.pq else b"", lambda _: None)


def test_key_of_another_identity_cannot_cosign(
    signer: Signer, other_signer: Signer, cert_lookup: Lookup
) -> None:
    assert other_signer.pq is not None
    # A pulse signed by signer but co-signed with other_signer's (validly vouched) PQ key.
    built = build_chain([ms("2026-02-01T10:00:00")], signer)[0]
    rsa_sig = built.pulse.signature_value
    cosig = other_signer.pq.cosign(signing_input(built.pulse), rsa_sig)
    keys = keys_of(signer, other_signer, certs=cert_lookup)
    with pytest.raises(SignatureError, match="another certificate"):
        check_cosignature(built.pulse, cosig, keys)


def test_rotated_pq_key_is_followed(signer: Signer, cert_lookup: Lookup) -> None:
    rotated = signer.with_pq(mldsa.MLDSA65PrivateKey.generate())
    assert rotated.pq is not None and signer.pq is not None
    assert rotated.pq.key_id != signer.pq.key_id
    first = build_chain([ms("2026-02-01T10:00:00")], signer)[0]
    second = build_chain([ms("2026-02-01T10:01:00")], rotated)[0]
    keys = keys_of(signer, rotated, certs=cert_lookup)
    assert check_cosignature(first.pulse, first.cosignature or b"", keys).key_id == key_id(
        signer.pq.private_key.public_key().public_bytes_raw()
    )
    assert check_cosignature(second.pulse, second.cosignature or b"", keys).key_id == (
        rotated.pq.key_id
    )
