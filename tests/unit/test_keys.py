"""The signing identity: created 0600, never overwritten silently, refused when exposed."""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

import pytest
from beacon_verifier.format import certificate_der, certificate_id
from cryptography import x509

from beacon.errors import KeyFileError
from beacon.pulse.keys import CERT_FILE, KEY_FILE, init_identity, load_identity

NOW = datetime.datetime(2026, 11, 21, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def identity_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys") / "data"
    init_identity(directory, name="unit beacon", now=NOW, key_bits=2048)
    return directory


def test_key_file_is_0600_and_certificate_names_the_beacon(identity_dir: Path) -> None:
    assert stat.S_IMODE((identity_dir / KEY_FILE).stat().st_mode) == 0o600
    cert = x509.load_der_x509_certificate(certificate_der((identity_dir / CERT_FILE).read_bytes()))
    assert "unit beacon" in cert.subject.rfc4514_string()
    assert cert.issuer == cert.subject


def test_certificate_id_is_sha512_of_der(identity_dir: Path) -> None:
    signer = load_identity(identity_dir)
    assert signer.certificate_id == certificate_id((identity_dir / CERT_FILE).read_bytes())
    assert "PRIVATE" not in repr(signer)


def test_init_refuses_to_overwrite(identity_dir: Path) -> None:
    before = (identity_dir / KEY_FILE).read_bytes()
    with pytest.raises(KeyFileError, match="--force"):
        init_identity(identity_dir, name="again", now=NOW, key_bits=2048)
    assert (identity_dir / KEY_FILE).read_bytes() == before


def test_force_replaces_key_and_certificate(tmp_path: Path) -> None:
    first = init_identity(tmp_path, name="a", now=NOW, key_bits=2048)
    second = init_identity(tmp_path, name="a", now=NOW, key_bits=2048, force=True)
    assert first.certificate_id != second.certificate_id
    assert load_identity(tmp_path).certificate_id == second.certificate_id
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_exposed_key_file_is_refused(tmp_path: Path, mode: int) -> None:
    init_identity(tmp_path, name="a", now=NOW, key_bits=2048)
    os.chmod(tmp_path / KEY_FILE, mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_identity(tmp_path)


def test_missing_key_says_run_init(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="beacon init"):
        load_identity(tmp_path)


def test_certificate_of_another_key_is_refused(tmp_path: Path) -> None:
    init_identity(tmp_path / "a", name="a", now=NOW, key_bits=2048)
    init_identity(tmp_path / "b", name="b", now=NOW, key_bits=2048)
    (tmp_path / "a" / CERT_FILE).write_bytes((tmp_path / "b" / CERT_FILE).read_bytes())
    with pytest.raises(KeyFileError, match="does not belong"):
        load_identity(tmp_path / "a")
