"""drand mixing end to end: a real `beacon run` against a drand-compatible relay on
127.0.0.1 (a test chain signing each round at its time with blst), `beacon-verify`
accepting the result, and npm's drand-client verifying the same relay's rounds."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.external import STATUS_NOT_RELEASED, STATUS_UNREACHABLE
from beacon_verifier.format import format_timestamp, parse_pulse

from tests.beacon_proc import beacon_running, run_beacon, run_verify
from tests.drand_relay import down_url, running_relay, signing_chain_for

pytestmark = pytest.mark.integration

PERIOD_S = 1


def _env(urls: list[str], chain_hash: str, public_key: str) -> dict[str, str]:
    return {
        "BEACON_ENTROPY_SOURCE": "os",
        "BEACON_KEY_BITS": "2048",
        "BEACON_EXTERNAL_SOURCE": "drand",
        "BEACON_DRAND_URLS": ",".join(urls),
        "BEACON_DRAND_CHAIN_HASH": chain_hash,
        "BEACON_DRAND_PUBLIC_KEY": public_key,
        "BEACON_EXTERNAL_WAIT_MS": "400",
    }


def _run(
    tmp_path: Path, urls: list[str], chain: object, count: int, *, defaults: bool = False
) -> Path:
    tmp_path.mkdir(exist_ok=True)
    env = _env(urls, chain.chain_hash.hex(), chain.public_key.hex())  # type: ignore[attr-defined]
    if defaults:  # the default entropy source (qiskit-aer jobs) and key size
        del env["BEACON_ENTROPY_SOURCE"], env["BEACON_KEY_BITS"]
    done = run_beacon(tmp_path, ["run", "--period", str(PERIOD_S), "--count", str(count)], env=env)
    assert done.returncode == 0, done.stderr
    return tmp_path / "public"


def _info_file(tmp_path: Path, chain: object) -> str:
    path = tmp_path / "drand-info.json"
    path.write_text(json.dumps(chain.info()))  # type: ignore[attr-defined]
    return str(path)


def _pulses(site: Path, n: int) -> list[dict[str, object]]:
    return [
        json.loads((site / layout.pulse_key(1, p)).read_bytes())["pulse"] for p in range(1, n + 1)
    ]


def _time_of(site: Path, index: int) -> int:
    """The timeStamp (ms) of pulse ``index`` of chain 1 on ``site``."""
    return parse_pulse((site / layout.pulse_key(1, index)).read_bytes()).time_ms


def test_beacon_mixes_the_relay_and_the_verifier_accepts(tmp_path: Path) -> None:
    tc = signing_chain_for(PERIOD_S)
    with running_relay(tc) as relay:
        # the first relay is down; otherwise the defaults
        site = _run(tmp_path, [down_url(), relay.url], tc.chain, 4, defaults=True)
    info = _info_file(tmp_path, tc.chain)
    for p in _pulses(site, 4):
        assert p["external"]["statusCode"] == 0  # type: ignore[index]
        assert p["external"]["value"] != "0" * 128  # type: ignore[index]
    record = json.loads((site / layout.external_key(1, _time_of(site, 2))).read_bytes())
    assert record["relay"] == relay.url and record["statusCode"] == 0
    ok = run_verify(["chain", str(site), "--require-external", "--drand-info", info, "--json"])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["externals"] == {"valid": 4}
    time_q = run_verify(
        [
            *("pulse", str(site / layout.pulse_key(1, 3)), "--source", str(site)),
            *("--drand-info", info, "--require-external", "--json"),
        ]
    )
    assert time_q.returncode == 0, time_q.stdout
    assert len(json.loads(time_q.stdout)["randomValue"]) == 128
    # A pulse file alone (no site to read its round from): not checked, never valid.
    alone = tmp_path / "pulse3.json"
    alone.write_bytes((site / layout.pulse_key(1, 3)).read_bytes())
    (cert,) = (site / "beacon" / "2.0" / "certificate").iterdir()
    alone_args = ["pulse", str(alone), "--cert", str(cert), "--drand-info", info]
    lone = run_verify([*alone_args, "--json"])
    assert lone.returncode == 0, lone.stdout
    assert json.loads(lone.stdout)["external"] == "not checked"
    assert json.loads(lone.stdout)["randomValue"] is None
    assert run_verify([*alone_args, "--require-external"]).returncode == 1
    # Against quicknet's key (the default) the same externals are not valid.
    assert run_verify(["chain", str(site), "--require-external"]).returncode == 1
    # One hex digit of a published signature changed: INVALID.
    key = site / layout.external_key(1, _time_of(site, 3))
    doc = json.loads(key.read_bytes())
    sig = doc["signature"]
    doc["signature"] = sig[:20] + ("a" if sig[20] != "a" else "b") + sig[21:]
    key.write_bytes(json.dumps(doc).encode())
    bad = run_verify(["chain", str(site), "--drand-info", info])
    assert bad.returncode == 1
    assert "pulse 3: external failed" in bad.stdout


def test_withheld_bad_and_down_relays_give_pulses_on_time(tmp_path: Path) -> None:
    tc = signing_chain_for(PERIOD_S)
    info = _info_file(tmp_path, tc.chain)
    with running_relay(tc, "withhold") as relay:
        relay.withheld = set(range(relay.current_round() + 1, relay.current_round() + 10**6))
        site = _run(tmp_path / "withheld", [relay.url], tc.chain, 2)
    for p in _pulses(site, 2):
        assert p["external"]["statusCode"] == STATUS_NOT_RELEASED  # type: ignore[index]
        assert p["external"]["value"] == "0" * 128  # type: ignore[index]
    status = json.loads((site / "status.json").read_bytes())
    assert status["externalMissing"] == 2
    assert [d["code"] for d in status["degraded"]] == ["external-missing"]
    # A chain without externals is valid, but not with --require-external.
    assert run_verify(["chain", str(site), "--drand-info", info]).returncode == 0
    required = run_verify(["chain", str(site), "--drand-info", info, "--require-external"])
    assert required.returncode == 1

    with running_relay(tc, "bad-signature") as relay:
        site = _run(tmp_path / "bad", [relay.url], tc.chain, 2)
    record = json.loads((site / layout.external_key(1, _time_of(site, 1))).read_bytes())
    assert record["statusCode"] == 3 and "bad BLS signature" in record["reason"]

    started = time.monotonic()
    site = _run(tmp_path / "down", [down_url()], tc.chain, 3)
    took = time.monotonic() - started
    for p in _pulses(site, 3):
        assert p["external"]["statusCode"] == STATUS_UNREACHABLE  # type: ignore[index]
    # A down relay costs no wait: three 1 s pulses, the process start, key generation.
    assert took < 20


def test_npm_drand_client_verifies_the_relay(tmp_path: Path) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Debian's nodejs and npm are needed (scripts/test installs them)"
    work = tmp_path / "js"
    work.mkdir()
    (work / "package.json").write_text('{"name": "drand-check", "private": true}')
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent", "drand-client@1"],
        cwd=work,
        check=True,
        timeout=300,
        capture_output=True,
    )
    script = work / "check.mjs"
    script.write_text(
        """
import { HttpChainClient, HttpCachingChain, fetchBeacon } from 'drand-client'
const [url, hash, pk, round] = process.argv.slice(2)
const options = { disableBeaconVerification: false, noCache: true,
                  chainVerificationParams: { chainHash: hash, publicKey: pk } }
const chain = new HttpCachingChain(`${url}/${hash}`, options)
const client = new HttpChainClient(chain, options)
const beacon = await fetchBeacon(client, Number(round))
console.log(JSON.stringify(beacon))
"""
    )
    tc = signing_chain_for(PERIOD_S)
    with running_relay(tc) as relay:
        round_number = relay.current_round() - 1
        hash_hex, pk_hex = tc.chain.chain_hash.hex(), tc.chain.public_key.hex()
        out = subprocess.run(
            [node, str(script), relay.url, hash_hex, pk_hex, str(round_number)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["round"] == round_number
        with running_relay(tc, "bad-signature") as bad:
            refused = subprocess.run(
                [node, str(script), bad.url, hash_hex, pk_hex, str(round_number)],
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert refused.returncode != 0


def test_v2_draw_moves_past_a_withheld_round_and_says_so(tmp_path: Path) -> None:
    tc = signing_chain_for(PERIOD_S)
    info = _info_file(tmp_path, tc.chain)
    entrants = tmp_path / "entrants.txt"
    entrants.write_text("\n".join(f"entrant {i}" for i in range(20)))
    env = _env([], tc.chain.chain_hash.hex(), tc.chain.public_key.hex())
    site = tmp_path / "public"
    with running_relay(tc, "withhold") as relay:
        env["BEACON_DRAND_URLS"] = relay.url
        with beacon_running(tmp_path, ["run", "--period", str(PERIOD_S)], env=env) as proc:
            deadline = time.monotonic() + 30
            while not (site / layout.LAST_KEY).exists():
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
            # Less than two periods ahead is refused.
            now = int(time.time())
            manifest = tmp_path / "m.json"
            new = ["draw", "new", "--source", str(site)]  # v2 by default: a drand site
            new += ["--entrants", str(entrants), "--winners", "2", "--out", str(manifest)]
            too_soon = run_verify([*new, "--at", str((now + 2) * 1000)])
            assert too_soon.returncode == 1 and "2 periods" in too_soon.stderr
            target_ms = (int(time.time()) + 6) * 1000  # margin for a loaded machine
            relay.withheld = {tc.chain.round_at(target_ms)}  # type: ignore[set-item]
            made = run_verify([*new, "--at", str(target_ms)])
            assert made.returncode == 0, made.stderr
            while not any(
                json.loads((site / layout.LAST_KEY).read_bytes())["pulse"]["timeStamp"] > t
                for t in [format_timestamp(target_ms + 1000)]
            ):
                assert time.monotonic() < deadline + 30 and proc.poll() is None
                time.sleep(0.1)
    doc = json.loads(manifest.read_bytes())
    assert doc["version"] == 2 and "announcedAt" in doc
    run = ["draw", "run", str(manifest), "--entrants", str(entrants), "--drand-info", info]
    result = run_verify([*run, "--json"])
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert [s["timeStamp"] for s in out["skipped"]] == [format_timestamp(target_ms)]
    assert "external missing" in out["skipped"][0]["reason"]
    assert out["pulses"][0]["timeStamp"] == format_timestamp(target_ms + 1000)
    assert len(out["winners"]) == 2
    (tmp_path / "result.json").write_text(result.stdout)
    check = ["draw", "check", str(manifest), "--entrants", str(entrants), "--drand-info", info]
    assert run_verify([*check, "--result", str(tmp_path / "result.json")]).returncode == 0
    out["winners"].reverse()
    (tmp_path / "forged.json").write_text(json.dumps(out))
    assert run_verify([*check, "--result", str(tmp_path / "forged.json")]).returncode == 1
    text = run_verify(run)
    assert "skipped (external missing" in text.stdout


def test_info_must_match_the_pins_and_outages_are_logged_once(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from beacon_verifier.external import STATUS_INVALID_ROUND, STATUS_VALID

    from beacon.drand import DrandRelays, ExternalMixer
    from tests.drand_relay import SigningChain

    tc = signing_chain_for(PERIOD_S)
    impostor = SigningChain(genesis_time=tc.chain.genesis_time, period=PERIOD_S, seed=b"other")
    with running_relay(impostor) as relay:
        # Pinned: the impostor's hash path but the real chain's key.
        client = DrandRelays(
            [relay.url], chain_hash=impostor.chain.chain_hash, public_key=tc.chain.public_key
        )
        now = int(time.time()) * 1000
        record = client.fetch(now, 200)
        assert record.status_code == STATUS_INVALID_ROUND
        assert "disagrees with the pinned" in record.reason
    caplog.set_level("INFO", logger="beacon.drand")
    down = down_url()
    client = DrandRelays([down], chain_hash=tc.chain.chain_hash, public_key=tc.chain.public_key)
    for _ in range(3):
        assert client.fetch(int(time.time()) * 1000, 200).status_code == STATUS_UNREACHABLE
    with running_relay(tc) as relay:
        client.urls = [down, relay.url]
        now = int(time.time()) * 1000
        assert client.fetch(now, 500).status_code == STATUS_VALID
        assert client.fetch(now, 500).status_code == STATUS_VALID
    # A beacon on an outage: one line for it, none per pulse.
    mixer = ExternalMixer(
        DrandRelays([down], chain_hash=tc.chain.chain_hash, public_key=tc.chain.public_key),
        state_path=tmp_path / "state.sqlite",
        wait_ms=200,
    )
    for index in (1, 2, 3):
        mixer.external_for(1, index, int(time.time()) * 1000)
    messages = [r.getMessage() for r in caplog.records if r.name == "beacon.drand"]
    assert not any("external missing" in m for m in messages), messages
    assert sum("no relay reachable" in m for m in messages) == 2, messages  # client, mixer
    assert sum("reachable again" in m for m in messages) == 1, messages


@pytest.mark.parametrize(("period_ms", "warned"), [(1000, 1), (6000, 0)])
def test_a_period_that_misses_drand_rounds_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, period_ms: int, warned: int
) -> None:
    from beacon.drand import DrandRelays, ExternalMixer

    tc = signing_chain_for(3)
    caplog.set_level("INFO", logger="beacon.drand")
    with running_relay(tc) as relay:
        mixer = ExternalMixer(
            DrandRelays(
                [relay.url], chain_hash=tc.chain.chain_hash, public_key=tc.chain.public_key
            ),
            state_path=tmp_path / "state.sqlite",
            wait_ms=200,
            period_ms=period_ms,
        )
        now = int(time.time()) * 1000
        boundary = now - now % 6000 - 6000  # a time on a round, whose round is out
        for index in (1, 2, 3):
            mixer.external_for(1, index, boundary - (3 - index) * period_ms)
    messages = [r.getMessage() for r in caplog.records if r.name == "beacon.drand"]
    said = [m for m in messages if "is not a multiple of the drand chain's (3 s)" in m]
    assert len(said) == warned, messages
