"""A drand-compatible HTTP relay on 127.0.0.1 for tests and the bench.

It serves one test chain (scheme bls-unchained-g1-rfc9380, its own genesis and
period, a test key) as drand's HTTP API does: ``/{hash}/info``,
``/{hash}/public/{round}`` and ``/{hash}/public/latest``, and also the same
paths without the hash (the default chain). A round is signed with blst and
released only at its time: asking early gets 425 Too Early, as drand's relays.
Modes: "honest", "withhold" (never releases the rounds in ``withheld``),
"bad-signature" (serves a signature of another round).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyblst  # type: ignore[import-untyped]
from beacon_verifier import external as ext

G2_GENERATOR = ext._G2_GENERATOR


class SigningChain:
    """A drand chain with a known secret key, for signing rounds in tests."""

    def __init__(self, *, genesis_time: int, period: int, seed: bytes = b"test chain") -> None:
        secret = int.from_bytes(hashlib.sha512(seed).digest(), "big") % (
            0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
        )
        self._secret = secret
        public_key = pyblst.BlstP2Element().uncompress(G2_GENERATOR).scalar_mul(self._secret)
        chain = ext.DrandChain(
            chain_hash=b"\0" * 32,
            public_key=public_key.compress(),
            genesis_time=genesis_time,
            period=period,
            group_hash=hashlib.sha256(b"test group" + seed).digest(),
            beacon_id="beacontest",
        )
        import dataclasses

        self.chain = dataclasses.replace(chain, chain_hash=chain.computed_hash())

    def sign(self, round_number: int) -> bytes:
        h = pyblst.BlstP1Element().hash_to_group(ext.round_message(round_number), ext.DST)
        return bytes(h.scalar_mul(self._secret).compress())

    def beacon(self, round_number: int, signature: bytes | None = None) -> dict[str, object]:
        sig = self.sign(round_number) if signature is None else signature
        return {
            "round": round_number,
            "randomness": hashlib.sha256(sig).hexdigest(),
            "signature": sig.hex(),
        }


class Relay:
    """The running relay: ``url``, its ``chain``, ``served`` (rounds asked for, in order)."""

    def __init__(self, test_chain: SigningChain, mode: str = "honest") -> None:
        self.test_chain = test_chain
        self.chain = test_chain.chain
        self.mode = mode
        self.release_delay_ms = 0  # serve a round this long after its time (drand: ~300-850)
        self.withheld: set[int] = set()
        self.served: list[int] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                relay._answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def current_round(self) -> int:
        """The latest round released: due, and ``release_delay_ms`` old."""
        now = time.time() - self.release_delay_ms / 1000
        return int((now - self.chain.genesis_time) // self.chain.period) + 1

    def _answer(self, req: BaseHTTPRequestHandler) -> None:
        parts = [p for p in req.path.split("?")[0].split("/") if p]
        if parts and parts[0] == self.chain.chain_hash.hex():
            parts = parts[1:]
        if parts == ["info"]:
            return self._send(req, 200, self.chain.info())
        if parts == ["chains"]:
            return self._send(req, 200, [self.chain.chain_hash.hex()])
        if len(parts) == 2 and parts[0] == "public":
            latest = self.current_round()
            if parts[1] == "latest":
                number = latest
            elif parts[1].isdigit():
                number = int(parts[1])
            else:
                return self._send(req, 400, {"error": "bad round"})
            self.served.append(number)
            if number > latest or number < 1:
                return self._send(req, 425, {"error": "too early"})
            if self.mode == "withhold" and number in self.withheld:
                return self._send(req, 404, {"error": "not found"})
            if self.mode == "bad-signature":
                return self._send(
                    req, 200, self.test_chain.beacon(number, self.test_chain.sign(number + 1))
                )
            return self._send(req, 200, self.test_chain.beacon(number))
        return self._send(req, 404, {"error": "not found"})

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, doc: object) -> None:
        body = json.dumps(doc).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Access-Control-Allow-Origin", "*")
        req.end_headers()
        req.wfile.write(body)

    def start(self) -> Relay:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def signing_chain_for(period_s: int) -> SigningChain:
    """A test chain whose genesis is a multiple of ``period_s`` a little in the past."""
    now = int(time.time())
    return SigningChain(genesis_time=now - now % period_s - 600 * period_s, period=period_s)


@contextmanager
def running_relay(test_chain: SigningChain, mode: str = "honest") -> Iterator[Relay]:
    relay = Relay(test_chain, mode).start()
    try:
        yield relay
    finally:
        relay.close()


def down_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
