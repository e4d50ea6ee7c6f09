"""The beacon service's one exception tree.

No botocore, qiskit, sqlite3 or OS exception escapes a port: adapters wrap
them with ``raise ... from`` into one of these, so the CLI can print one line.
"""

from __future__ import annotations


class BeaconError(Exception):
    """Root of every error the beacon raises on purpose."""


class ConfigError(BeaconError):
    """The configuration (file, environment or flags) is invalid."""


class KeyFileError(BeaconError):
    """The signing key or certificate is missing, unreadable or unsafe."""


class StateError(BeaconError):
    """The durable state is unusable (locked by another process, corrupt, inconsistent)."""


class EntropyError(BeaconError):
    """An entropy source could not deliver usable bits."""


class HealthTestError(EntropyError):
    """A batch of quantum bits failed its SP 800-90B health tests.

    Its own type so the service can count health-test failures apart from
    other reasons a draw fails (a job lost, a backend offline).
    """


class PublishError(BeaconError):
    """The store refused or failed a write or read."""


class AlreadyPublishedError(PublishError):
    """A create-only write found different bytes already stored under the key."""


class TransientPublishError(PublishError):
    """The store failed in a way that may pass: retrying later may succeed.

    Connection refused or reset, timeouts, throttling, HTTP 5xx, or a conflicting
    concurrent request (409).
    """


class ConditionFailedError(PublishError):
    """A conditional write found the object in another version than the one expected.

    Not a store failure: someone else wrote the object (for the lease: another
    instance took it). Retrying the same write cannot succeed.
    """


class LeaseLostError(BeaconError):
    """Another instance holds the publishing lease: this one must not publish."""
