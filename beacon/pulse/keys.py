"""The beacon's signing identity: an RSA key and a self-signed certificate, plus an
ML-DSA-65 key for post-quantum co-signatures.

certificateId = SHA-512 of the certificate's DER, as NIST does. The ML-DSA-65 key
is vouched for by the RSA key in a key document (``beacon_verifier.pq``). The
private key files are created with mode 0600 and are never logged or published;
a key file readable by group or others is refused at load time. An identity
created before co-signatures existed has no ML-DSA key: its pulses carry no
co-signature until ``beacon init --force`` makes a new identity.
"""

from __future__ import annotations

import datetime
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from beacon_verifier.format import CertificateId, certificate_der, certificate_id
from beacon_verifier.pq import (
    CONTEXT,
    cosign_input,
    encode_cosignature,
    encode_key_document,
    key_id,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import mldsa, padding, rsa
from cryptography.x509.oid import NameOID

from beacon.errors import KeyFileError

KEY_FILE = "signing-key.pem"
PQ_KEY_FILE = "pq-signing-key.pem"
CERT_FILE = "certificate.pem"
DEFAULT_KEY_BITS = 4096
CERT_VALIDITY_DAYS = 3650


@dataclass(frozen=True, slots=True)
class PqSigner:
    """Co-signs pulses with ML-DSA-65; ``key_document`` is the RSA-vouched public key."""

    private_key: mldsa.MLDSA65PrivateKey
    key_id: bytes
    key_document: bytes

    def cosign(self, serialization_s: bytes, rsa_signature: bytes) -> bytes:
        """The co-signature object for a pulse with serialization S and that RSA signature."""
        signature = self.private_key.sign(cosign_input(serialization_s, rsa_signature), CONTEXT)
        return encode_cosignature(self.key_id, signature)

    def __repr__(self) -> str:
        return f"PqSigner(key_id={self.key_id.hex()[:16]}…)"


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs the serialization S with RSA PKCS#1 v1.5 / SHA-512 (cipherSuite 0)."""

    private_key: rsa.RSAPrivateKey
    certificate_pem: bytes
    certificate_id: CertificateId
    pq: PqSigner | None = None

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data, padding.PKCS1v15(), hashes.SHA512())

    def with_pq(self, pq_key: mldsa.MLDSA65PrivateKey) -> Signer:
        """This identity, co-signing with ``pq_key`` (vouched for by the RSA key)."""
        raw = pq_key.public_key().public_bytes_raw()
        document = encode_key_document(raw, bytes(self.certificate_id), self.sign)
        return replace(self, pq=PqSigner(pq_key, key_id(raw), document))

    def __repr__(self) -> str:  # never let a key reach a log through repr()
        return f"Signer(certificate_id={self.certificate_id.hex()[:16]}…)"


def make_certificate(
    private_key: rsa.RSAPrivateKey, name: str, now: datetime.datetime
) -> x509.Certificate:
    """A self-signed certificate naming the beacon, valid from ``now``."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Quantum randomness beacon"),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(private_key, hashes.SHA512())
    )


def _write_new(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the first byte (no umask window).

    Without ``replace`` the file must not exist (O_EXCL); with it, a temp file
    is written and renamed over, so a crash never leaves half a key.
    """
    target = path if not replace else path.with_name(path.name + ".new")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    if replace and target.exists():
        target.unlink()
    fd = os.open(target, flags, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if replace:
        os.replace(target, path)


def init_identity(
    directory: Path,
    *,
    name: str,
    now: datetime.datetime,
    force: bool = False,
    key_bits: int = DEFAULT_KEY_BITS,
) -> Signer:
    """Create a new RSA key and ML-DSA-65 key (both 0600) and a self-signed certificate.

    Raises ``KeyFileError`` if a key exists and ``force`` is not set.
    """
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    if key_path.exists() and not force:
        raise KeyFileError(
            f"{key_path} already exists; use --force to replace it (this starts a new certificate)"
        )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    cert = make_certificate(private_key, name, now)
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    pq_key = mldsa.MLDSA65PrivateKey.generate()
    pq_pem = pq_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The PQ key first: the RSA key file's existence marks a complete identity, so an
    # interrupted init leaves at most an orphan PQ key, replaced by the next init.
    _write_new(directory / PQ_KEY_FILE, pq_pem, 0o600, replace=True)
    _write_new(key_path, key_pem, 0o600, replace=force)
    _write_new(cert_path, cert_pem, 0o644, replace=True)
    return Signer(private_key, cert_pem, certificate_id(cert_pem)).with_pq(pq_key)


def _check_private(path: Path) -> bool:
    """Whether ``path`` exists; raises ``KeyFileError`` when group or others may access it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run: chmod 600 {path}"
        )
    return True


def load_identity(directory: Path) -> Signer:
    """Load the keys and certificate from ``directory``.

    Raises ``KeyFileError`` when a file is missing or unreadable, a key file is
    readable by group or others, or the certificate does not belong to the key.
    The ML-DSA key is optional (identities made before co-signatures lack it).
    """
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    if not _check_private(key_path):
        raise KeyFileError(f"no signing key at {key_path}; run 'beacon init'")
    pq_path = directory / PQ_KEY_FILE
    pq_key: mldsa.MLDSA65PrivateKey | None = None
    if _check_private(pq_path):
        try:
            loaded = serialization.load_pem_private_key(pq_path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"cannot load {pq_path}: {exc}") from None
        if not isinstance(loaded, mldsa.MLDSA65PrivateKey):
            raise KeyFileError(f"{pq_path} is not an ML-DSA-65 key")
        pq_key = loaded
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert_pem = cert_path.read_bytes()
        cert = x509.load_der_x509_certificate(certificate_der(cert_pem))
    except FileNotFoundError as exc:
        raise KeyFileError(f"missing {exc.filename}") from None
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot load the signing identity in {directory}: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(f"{key_path} is not an RSA key (cipherSuite 0 needs RSA)")
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey) or public.public_numbers() != (
        key.public_key().public_numbers()
    ):
        raise KeyFileError(f"{cert_path} does not belong to the key in {key_path}")
    signer = Signer(key, cert_pem, certificate_id(cert_pem))
    return signer if pq_key is None else signer.with_pq(pq_key)
