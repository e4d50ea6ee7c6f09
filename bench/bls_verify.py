"""BLS12-381 bindings for drand's bls-unchained-g1-rfc9380: µs per verification.

Verifies quicknet round 1000 (tests/vectors/drand/quicknet.json, a real round)
with each binding that installs here: pyblst (blst, what drand uses),
py-arkworks-bls12381 (arkworks) and py-ecc (pure Python). Also times the
verifier's whole external check of a pulse (beacon_verifier.external, with
pyblst) beside an RSA-4096 PKCS#1 v1.5 verification (the per-pulse floor of a
chain replay), to show what --require-external costs a replay.

    python bench/bls_verify.py [--runs 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "verifier"), str(ROOT)]

from beacon_verifier import external as ext  # noqa: E402

DOC = json.loads((ROOT / "tests" / "vectors" / "drand" / "quicknet.json").read_text())
PK = bytes.fromhex(DOC["info"]["public_key"])
ROUND = DOC["rounds"][0]["round"]
SIG = bytes.fromhex(DOC["rounds"][0]["signature"])
MSG = ext.round_message(ROUND)


def _blst() -> Callable[[], bool]:
    return lambda: ext.verify_round(ext.QUICKNET, ROUND, SIG)


def _arkworks() -> Callable[[], bool]:
    import py_arkworks_bls12381 as ark  # type: ignore[import-not-found]

    def verify() -> bool:
        s = ark.G1Point.from_compressed_bytes(SIG)
        k = ark.G2Point.from_compressed_bytes(PK)
        h = ark.G1Point.hash_to_curve(MSG, ext.DST)
        return bool(ark.GT.pairing(s, ark.G2Point()) == ark.GT.pairing(h, k))

    return verify


def _py_ecc() -> Callable[[], bool]:
    from py_ecc.bls.hash_to_curve import hash_to_G1  # type: ignore[import-not-found]
    from py_ecc.bls.point_compression import (  # type: ignore[import-not-found]
        decompress_G1,
        decompress_G2,
    )
    from py_ecc.optimized_bls12_381 import (  # type: ignore[import-not-found]
        FQ12,
        G2,
        final_exponentiate,
        neg,
        pairing,
    )

    def verify() -> bool:
        s = decompress_G1(int.from_bytes(SIG, "big"))
        k = decompress_G2((int.from_bytes(PK[:48], "big"), int.from_bytes(PK[48:], "big")))
        h = hash_to_G1(MSG, ext.DST, hashlib.sha256)
        f = pairing(G2, s, final_exponentiate=False) * pairing(neg(k), h, final_exponentiate=False)
        return bool(final_exponentiate(f) == FQ12.one())

    return verify


def timed(fn: Callable[[], object], runs: int, per_run: int) -> float:
    """Median over ``runs`` of µs per call (``per_run`` calls each)."""
    assert fn(), "verification failed"
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(per_run):
            fn()
        samples.append((time.perf_counter() - t) / per_run * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    figures: dict[str, float] = {}
    for name, make, per_run in (
        ("pyblst (blst)", _blst, 200),
        ("py-arkworks-bls12381", _arkworks, 50),
        ("py-ecc (pure Python)", _py_ecc, 1),
    ):
        try:
            fn = make()
        except ImportError:
            print(f"{name:24s} not installed")
            continue
        figures[name] = timed(fn, args.runs, per_run)
        print(f"{name:24s} {figures[name]:12.0f} µs per verification", flush=True)
    best = min(figures.values())
    for name, us in figures.items():
        print(f"{name:24s} {us / best:8.1f}x the fastest")

    # The verifier's whole check of one pulse's external, beside an RSA-4096 verification.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    data = b"S" * 1200
    rsa_sig = key.sign(data, padding.PKCS1v15(), hashes.SHA512())
    pub = key.public_key()

    def rsa_verify() -> bool:
        pub.verify(rsa_sig, data, padding.PKCS1v15(), hashes.SHA512())
        return True

    chain = ext.QUICKNET
    nist = (ROOT / "tests" / "vectors" / "nist" / "nist_c1_p1.json").read_bytes()
    from beacon_verifier.format import format_timestamp, parse_pulse

    record = ext.RoundRecord(chain_hash=chain.chain_hash, round=ROUND, status_code=0, signature=SIG)
    pulse = dataclasses.replace(
        parse_pulse(nist),
        period=3000,
        time_stamp=format_timestamp(chain.time_of(ROUND)),
        external=ext.external_of(chain, record),
    )
    body = record.to_json()
    rsa_us = timed(rsa_verify, args.runs, 200)
    ext_us = timed(lambda: ext.check_external(pulse, body, chain).usable, args.runs, 200)
    print(f"RSA-4096 verification    {rsa_us:12.0f} µs per pulse (the replay floor)")
    print(f"external check (pyblst)  {ext_us:12.0f} µs per pulse ({ext_us / rsa_us:.1f}x RSA)")
    print(
        f"one core: {1e6 / rsa_us:,.0f} pulses/s RSA only, "
        f"{1e6 / (rsa_us + ext_us):,.0f} pulses/s with externals checked"
    )


if __name__ == "__main__":
    main()
