"""Fixtures shared by unit and integration tests.

Test vectors live in tests/vectors (copied, unmodified, from public sources;
see tests/vectors/README.md). Nothing here reads outside the repository.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import pytest
from beacon_verifier.checks import TrustedCertificate
from beacon_verifier.format import Pulse, parse_pulse

from beacon.pulse.keys import Signer, init_identity

VECTORS = Path(__file__).parent / "vectors"
NIST = VECTORS / "nist"
INMETRO = VECTORS / "inmetro"


def _only(pattern: Path, glob: str) -> Path:
    (path,) = pattern.glob(glob)
    return path


@pytest.fixture(scope="session")
def nist_cert_bytes() -> bytes:
    return _only(NIST, "*.pem").read_bytes()


@pytest.fixture(scope="session")
def nist_cert(nist_cert_bytes: bytes) -> TrustedCertificate:
    return TrustedCertificate.from_bytes(nist_cert_bytes)


@pytest.fixture(scope="session")
def nist_pulses() -> dict[int, Pulse]:
    pulses = {}
    for path in NIST.glob("nist_c1_p*.json"):
        pulse = parse_pulse(path.read_bytes())
        pulses[pulse.pulse_index] = pulse
    return pulses


@pytest.fixture(scope="session")
def inmetro_pulse() -> Pulse:
    return parse_pulse(_only(INMETRO, "*.json").read_bytes())


@pytest.fixture(scope="session")
def inmetro_cert() -> TrustedCertificate:
    return TrustedCertificate.from_bytes(_only(INMETRO, "*.pem").read_bytes())


@pytest.fixture(scope="session")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    """A fresh RSA-4096 identity made by ``beacon init``'s code, shared by the session."""
    return init_identity(
        tmp_path_factory.mktemp("identity"),
        name="test beacon",
        now=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    )


@pytest.fixture(scope="session")
def other_signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    """A second identity, for certificate changes (2048 bits to keep the suite quick)."""
    return init_identity(
        tmp_path_factory.mktemp("identity2"),
        name="test beacon 2",
        now=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        key_bits=2048,
    )


@pytest.fixture(scope="session")
def cert_lookup(
    signer: Signer, other_signer: Signer
) -> Callable[[bytes], TrustedCertificate | None]:
    certs = {
        s.certificate_id: TrustedCertificate.from_bytes(s.certificate_pem)
        for s in (signer, other_signer)
    }
    return certs.get
