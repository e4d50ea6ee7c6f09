"""Secrets never leave their place: a real beacon run with recognisable secrets, then a
scan of everything it printed, published and stored (#8: signing key, IBM token, S3
credentials)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.beacon_proc import run_beacon
from tests.integration.s3server import SeaweedS3Server

pytestmark = pytest.mark.integration

IBM_TOKEN = "FAKE-IBM-TOKEN-c0ffee-7f3a9b2e4d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a"


def needles(key_file: Path, server: SeaweedS3Server) -> dict[str, bytes]:
    """Byte strings that must appear nowhere: each secret, and slices of the private key."""
    pem = key_file.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    d = key.private_numbers().d
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    found = {
        "S3 secret key": server.secret_key.encode(),
        "IBM token": IBM_TOKEN.encode(),
        "IBM token (tail)": IBM_TOKEN[-24:].encode(),
        "private key DER": der[-64:],
        "private exponent": d.to_bytes(256, "big")[:32],
        "private exponent hex": format(d, "x")[:40].encode(),
    }
    body = [line for line in pem.splitlines() if line and not line.startswith(b"-----")]
    for n, line in enumerate(body[1:-1:7]):  # a sample of base64 lines from the middle
        found[f"key PEM line {n}"] = line
    found["key base64 (unwrapped)"] = base64.b64encode(der)[100:160]
    return found


def written_files(root: Path, skip: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and path != skip:
            yield str(path.relative_to(root)), path.read_bytes()


def bucket_objects(server: SeaweedS3Server, prefix: str) -> Iterator[tuple[str, bytes]]:
    client = server.client()
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=server.bucket, Prefix=prefix + "/"
    ):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=server.bucket, Key=obj["Key"])["Body"].read()
            yield f"s3://{obj['Key']}", obj["Key"].encode() + b"\n" + body


def test_no_secret_in_logs_objects_status_or_state(
    tmp_path: Path, s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    env = s3_running.beacon_env(key_prefix) | {
        "BEACON_ENTROPY_SOURCE": "ibm",  # fails (no such account): a disclosed fallback
        "QISKIT_IBM_TOKEN": IBM_TOKEN,
    }
    run = run_beacon(tmp_path, ["run", "--period", "1", "--count", "4"], env=env, timeout=180)
    assert run.returncode == 0, run.stderr
    status = run_beacon(tmp_path, ["status", "--json"], env=env)
    assert status.returncode == 0, status.stderr
    key_file = tmp_path / "beacon-data" / "signing-key.pem"
    secrets = needles(key_file, s3_running)

    haystacks = [
        ("beacon run output", (run.stdout + run.stderr).encode()),
        ("beacon status output", (status.stdout + status.stderr).encode()),
        *written_files(tmp_path, skip=key_file),
        *bucket_objects(s3_running, key_prefix),
    ]
    assert any(name.startswith("s3://") for name, _ in haystacks)
    assert any(name.endswith("state.sqlite") for name, _ in haystacks)
    leaks = [
        f"{what} in {name}"
        for name, data in haystacks
        for what, needle in secrets.items()
        if needle in data
    ]
    assert leaks == []
    # The scan can fail: the same needles are found where the secrets really are.
    key_text = key_file.read_bytes()
    assert all(needle in key_text for what, needle in secrets.items() if what.startswith("key PEM"))
    objects = dict(haystacks)
    record = objects[f"s3://{key_prefix}/beacon/2.0/chain/1/entropy/1"]
    assert b'"source":"os-fallback"' in record and b"InvalidAccountError" in record


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    env = {"BEACON_ENTROPY_SOURCE": "os", "BEACON_KEY_BITS": "2048"}
    created = run_beacon(tmp_path, ["init"], env=env)
    assert created.returncode == 0, created.stderr
    key_file = tmp_path / "beacon-data" / "signing-key.pem"
    key_file.chmod(0o640)
    refused = run_beacon(tmp_path, ["run", "--period", "1", "--count", "1"], env=env)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "signing-key.pem" in lines[0], refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "public").exists()  # nothing was published
