"""The beacon's health tests: the verifier's implementation, imported, not copied.

``beacon_verifier.health`` holds the SP 800-90B health tests and the estimates
a batch is credited with, so that ``beacon-verify entropy`` re-runs exactly the
code that credited the batch. The beacon code imports the names from here.
"""

from beacon_verifier.health import (
    APT,
    DEFAULT_CLAIMED_MIN_ENTROPY,
    MIN_ENTROPY,
    NON_IID,
    RCT,
    HealthConfig,
    HealthResult,
    apt_cutoff,
    check_bits,
    health_from_dict,
    mcv_min_entropy,
    rct_cutoff,
    run_health_tests,
)

__all__ = [
    "APT",
    "DEFAULT_CLAIMED_MIN_ENTROPY",
    "MIN_ENTROPY",
    "NON_IID",
    "RCT",
    "HealthConfig",
    "HealthResult",
    "apt_cutoff",
    "check_bits",
    "health_from_dict",
    "mcv_min_entropy",
    "rct_cutoff",
    "run_health_tests",
]
