"""Settings: embedded defaults, then a TOML file, then ``BEACON_*`` variables, then flags.

Everything is validated into one frozen ``Settings``; anything wrong raises
``ConfigError`` with one line naming the setting. Secrets never live here: S3
credentials come from the standard AWS chain, the IBM token from
``QISKIT_IBM_TOKEN`` or a saved account, the signing key from its own file.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from beacon.errors import ConfigError

DAY_MS = 86_400_000
DEFAULT_SERVE_PORT = 8080
#: The longest ``name`` (it goes into the certificate's common name, at most 64 characters).
MAX_NAME = 64
ENTROPY_SOURCES = ("local", "ibm", "os")
PUBLISHERS = ("local", "s3")
IBM_CHANNELS = ("ibm_quantum_platform", "local")
# The external source: League of Entropy quicknet and its public HTTP relays.
EXTERNAL_SOURCES = ("drand", "none")
DRAND_RELAYS = (
    "https://api.drand.sh",
    "https://api2.drand.sh",
    "https://api3.drand.sh",
    "https://drand.cloudflare.com",
)
QUICKNET_CHAIN_HASH = "52db9ba70e0cc0f6eaf7803dd07447a1f5477735fd3f661792ba94600c84e971"
QUICKNET_PUBLIC_KEY = (
    "83cf0f2896adee7eb8b5f01fcad3912212c437e0073e911fb90022d3e760183c8c4b450b6a0a6c3ac6"
    "a5776a2d1064510d1fec758c921cc22b0e17e63aaf4bcb5ed66304de9cf809bd274ca73bab4af5a6e9"
    "c76a4bc09e76eae8991ef5ece45a"
)
#: BEACON_* variables that are not settings.
RESERVED_ENV = frozenset({"BEACON_CONFIG", "BEACON_FAILPOINT"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every setting of the beacon, with a default that works on a laptop."""

    data_dir: Path = Path("beacon-data")  # signing key, certificate, state database
    out_dir: Path = Path("public")  # the local site (publisher "local")
    period: float = 60.0  # seconds between pulses
    base_url: str = ""  # signed into every pulse's uri; default: the gateway's address
    name: str = "Quantum randomness beacon"  # named in the certificate
    chain: int = 1  # index of the first chain
    key_bits: int = 4096
    entropy_source: str = "local"  # local (qiskit-aer), ibm (hardware), os
    local_backend: str = "aer"  # "aer" (noiseless) or a fake backend name, e.g. fake_sherbrooke
    local_qubits: int = 127
    local_shots: int = 2048  # 2048 x 127 bits: two health-test windows per qubit
    ibm_backend: str = ""  # empty: the least busy
    ibm_instance: str = ""
    ibm_channel: str = "ibm_quantum_platform"  # or "local": qiskit-ibm-runtime's local mode
    ibm_qubits: int = 0  # 0: every qubit of the backend
    ibm_shots: int = 20_000  # per harvest job
    pool_low_water_draws: int = 240  # start the next job when fewer draws are left
    pool_max_age_hours: float = 48.0  # discard unused bits older than this
    qpu_seconds_per_day: float = 20.0  # QPU budget per UTC day
    job_qpu_seconds_estimate: float = 10.0  # charged per job until IBM reports its usage
    harvest_failing_after: int = 3  # failed harvests in a row before status says degraded
    publisher: str = "local"
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_object_lock_days: int = 0  # 0: no Object Lock retention
    publish_retry_max: float = 30.0  # seconds, upper bound of the outbox backoff
    metrics_port: int = 0  # Prometheus endpoint; 0: off
    metrics_address: str = "127.0.0.1"  # where it listens; loopback unless opened on purpose
    # --- the external source (drand), docs/external.md ---
    external_source: str = "drand"  # "drand": mix round T into pulse T; "none": zeros
    drand_urls: tuple[str, ...] = DRAND_RELAYS  # relays tried in turn
    drand_chain_hash: str = QUICKNET_CHAIN_HASH  # pinned; the hash covers genesis and period
    drand_public_key: str = QUICKNET_PUBLIC_KEY  # pinned G2 key (96 bytes, hex)
    external_wait_ms: int = 5000  # wait for round T after the boundary (at most half a period)
    # The NIST REST gateway `beacon run` starts over the local site (`beacon serve`'s defaults).
    serve_port: int = 8080  # 0: `beacon run` serves nothing
    serve_address: str = "127.0.0.1"  # loopback unless opened on purpose
    # --- issue 21: state and store ---
    outbox_max: int = 10_000  # signed pulses kept unpublished at most; then signing pauses

    @property
    def period_ms(self) -> int:
        return round(self.period * 1000)

    @property
    def state_path(self) -> Path:
        return self.data_dir / "state.sqlite"

    @property
    def site_url(self) -> str:
        """``base_url``, else where ``beacon run`` serves the site: never a filesystem path."""
        if self.base_url:
            return self.base_url.rstrip("/")
        host = "127.0.0.1" if self.serve_address in ("0.0.0.0", "::") else self.serve_address  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.serve_port or DEFAULT_SERVE_PORT}"


_FIELDS = {f.name: f for f in fields(Settings)}


def _coerce(name: str, value: Any, origin: str) -> Any:
    default = getattr(Settings(), name)
    kind: type[Any] = Path if isinstance(default, Path) else type(default)
    try:
        if kind is Path:
            if not isinstance(value, str) or not value:
                raise TypeError
            return Path(value).expanduser()
        if kind is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if kind is int:
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if kind is tuple:  # a TOML list of strings, or comma-separated text
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
                raise TypeError
            return tuple(i.strip() for i in items if i.strip())
        if kind is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if not isinstance(value, str):
            raise TypeError
        return value
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: {name} must be a {kind.__name__}, got {value!r}") from None


def validate(s: Settings) -> Settings:
    """Check cross-field rules; return ``s`` or raise ``ConfigError``."""
    if not math.isfinite(s.period):
        raise ConfigError(f"period must be a finite number of seconds, got {s.period}")
    period_ms = s.period_ms
    if abs(s.period * 1000 - period_ms) > 1e-6:
        raise ConfigError(f"period must be a whole number of milliseconds, got {s.period}")
    if period_ms < 1000:
        raise ConfigError(f"period must be at least 1 second, got {s.period}")
    if DAY_MS % period_ms:
        raise ConfigError(
            f"period must divide a day evenly (so days start on a pulse), got {s.period} s"
        )
    if s.chain < 1:
        raise ConfigError(f"chain must be at least 1, got {s.chain}")
    if s.key_bits not in (2048, 3072, 4096):
        raise ConfigError(f"key_bits must be 2048, 3072 or 4096, got {s.key_bits}")
    if s.entropy_source not in ENTROPY_SOURCES:
        raise ConfigError(
            f"entropy_source must be one of {', '.join(ENTROPY_SOURCES)}, got {s.entropy_source!r}"
        )
    if s.publisher not in PUBLISHERS:
        raise ConfigError(f"publisher must be one of {', '.join(PUBLISHERS)}, got {s.publisher!r}")
    if s.publisher == "s3" and not s.s3_bucket:
        raise ConfigError("publisher 's3' needs s3_bucket")
    if s.publisher == "s3" and not s.base_url:
        raise ConfigError(
            "publisher 's3' needs base_url, the public URL of the site: it is signed into "
            'every pulse\'s uri (e.g. base_url = "https://beacon.example.org")'
        )
    if s.local_qubits < 1 or s.local_shots < 2:
        raise ConfigError("local_qubits must be at least 1 and local_shots at least 2")
    if s.ibm_channel not in IBM_CHANNELS:
        raise ConfigError(
            f"ibm_channel must be one of {', '.join(IBM_CHANNELS)}, got {s.ibm_channel!r}"
        )
    if s.ibm_qubits < 0 or s.ibm_shots < 2:
        raise ConfigError("ibm_qubits must be 0 or more and ibm_shots at least 2")
    if (
        s.pool_low_water_draws < 0
        or s.pool_max_age_hours <= 0
        or s.qpu_seconds_per_day < 0
        or s.job_qpu_seconds_estimate <= 0
    ):
        raise ConfigError(
            "pool_low_water_draws and qpu_seconds_per_day must be 0 or more, "
            "pool_max_age_hours and job_qpu_seconds_estimate positive"
        )
    if s.harvest_failing_after < 1:
        raise ConfigError(
            f"harvest_failing_after must be at least 1, got {s.harvest_failing_after}"
        )
    if s.s3_object_lock_days < 0:
        raise ConfigError("s3_object_lock_days must be 0 or more")
    if s.base_url and not s.base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"base_url must be an http(s):// URL (it is signed into every pulse): {s.base_url!r}"
        )
    if s.outbox_max < 1:
        raise ConfigError(f"outbox_max must be at least 1, got {s.outbox_max}")
    if not s.name.strip() or len(s.name) > MAX_NAME:
        raise ConfigError(f"name must be 1 to {MAX_NAME} characters, got {len(s.name)}")
    segments = s.s3_prefix.strip("/").split("/") if s.s3_prefix.strip("/") else []
    if any(not part or part.startswith(".") or "\\" in part for part in segments):
        raise ConfigError(
            f"s3_prefix must be plain path segments (no '..', '.x' or '//'), got {s.s3_prefix!r}"
        )
    if not 0 <= s.metrics_port <= 65535:
        raise ConfigError(f"metrics_port must be 0 (off) or 1 to 65535, got {s.metrics_port}")
    try:
        ipaddress.ip_address(s.metrics_address)
    except ValueError:
        raise ConfigError(
            f"metrics_address must be an IP address, got {s.metrics_address!r}"
        ) from None
    _validate_external(s)
    if not 0 <= s.serve_port <= 65535:
        raise ConfigError(f"serve_port must be 0 (off) or 1 to 65535, got {s.serve_port}")
    try:
        ipaddress.ip_address(s.serve_address)
    except ValueError:
        raise ConfigError(f"serve_address must be an IP address, got {s.serve_address!r}") from None
    return s


def _validate_external(s: Settings) -> None:
    if s.external_source not in EXTERNAL_SOURCES:
        raise ConfigError(
            f"external_source must be one of {', '.join(EXTERNAL_SOURCES)}, "
            f"got {s.external_source!r}"
        )
    if s.external_source == "none":
        return
    if not s.drand_urls:
        raise ConfigError("drand_urls must name at least one relay")
    for url in s.drand_urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"drand_urls: {url!r} is not an http(s):// URL")
    for name, size in (("drand_chain_hash", 32), ("drand_public_key", 96)):
        text = getattr(s, name)
        try:
            ok = len(bytes.fromhex(text)) == size
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(f"{name} must be {2 * size} hex digits, got {text[:20]!r}")
    if s.external_wait_ms < 0:
        raise ConfigError(f"external_wait_ms must be 0 or more, got {s.external_wait_ms}")


def load_settings(
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build ``Settings`` from defaults, a TOML file, ``BEACON_*`` variables and overrides.

    The file is ``config_file``, else ``$BEACON_CONFIG``, else ``./beacon.toml``
    if it exists. Raises ``ConfigError`` on an unreadable file, an unknown key,
    a value of the wrong type, or a rule broken.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or (Path(env["BEACON_CONFIG"]) if env.get("BEACON_CONFIG") else None)
    if path is None and Path("beacon.toml").is_file():
        path = Path("beacon.toml")
    if path is not None:
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        for key, value in doc.items():
            if key not in _FIELDS:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[key] = _coerce(key, value, str(path))
    for key, value in env.items():
        if not key.startswith("BEACON_") or key in RESERVED_ENV:
            continue
        name = key[len("BEACON_") :].lower()
        if name not in _FIELDS:
            raise ConfigError(f"environment: unknown setting {key}")
        values[name] = _coerce(name, value, f"environment {key}")
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(key, value, "command line")
    return validate(replace(Settings(), **values))
