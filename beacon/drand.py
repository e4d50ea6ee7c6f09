"""The drand external: fetch round T at boundary T, check it, keep its record, publish it.

At each boundary T the beacon asks its relays, in turn, for the round of the
pinned chain whose time is exactly T, and mixes it in (``external`` block, see
``beacon_verifier.external``). A relay is trusted for nothing: its ``/info``
must match the pinned chain hash and public key (the hash covers genesis and
period), and every round's BLS signature is checked before use. The fetch is
bounded: ``external_wait_ms`` after the boundary at most, 4 KiB per answer. A
missing round never delays a pulse beyond that and never stops the chain: the
pulse carries a non-zero statusCode and zeros instead (codes in
``beacon_verifier.external``, docs/external.md).

The round record of every pulse is kept in the state database (its own table,
written before the pulse is committed) and published as an immutable object
before the pulse: ``beacon/2.0/chain/{c}/external/{ms}``.
"""

from __future__ import annotations

import http.client
import json
import logging
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from beacon_verifier import external as ext
from beacon_verifier import layout
from beacon_verifier.format import External

from beacon.config import Settings
from beacon.publish import JSON, Publisher

log = logging.getLogger("beacon.drand")

MAX_ANSWER_BYTES = 4096
#: One request never waits longer than this, so a slow relay leaves time for the next.
REQUEST_TIMEOUT_S = 2.0
#: Pause between passes over the relays while round T is not out yet.
POLL_INTERVAL_S = 0.05

_SCHEMA = """
CREATE TABLE IF NOT EXISTS external (
    chain_index INTEGER NOT NULL, pulse_index INTEGER NOT NULL,
    status INTEGER NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (chain_index, pulse_index)
)
"""


class _Unreachable(Exception):
    """The relay did not answer (refused, timed out, not HTTP)."""


class DrandRelays:
    """Fetches and checks rounds of one pinned drand chain from relays tried in turn."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        chain_hash: bytes,
        public_key: bytes,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.chain_hash = chain_hash
        self.public_key = public_key
        self.chain: ext.DrandChain | None = None  # from the first /info that matches the pins
        self._now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self._reachable: bool | None = None

    def _get(self, url: str, timeout: float) -> tuple[int, bytes]:
        """(HTTP status, body up to MAX_ANSWER_BYTES); _Unreachable if no HTTP answer."""
        # http(s) only: config.validate checks drand_urls.
        request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=max(0.05, timeout)) as response:  # noqa: S310
                body = response.read(MAX_ANSWER_BYTES + 1)
                return response.status, body
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _Unreachable(f"{url}: {exc}") from None

    def _info(self, base: str, timeout: float) -> ext.DrandChain:
        status, body = self._get(f"{base}/{self.chain_hash.hex()}/info", timeout)
        if status != 200 or len(body) > MAX_ANSWER_BYTES:
            raise ValueError(f"/info answered HTTP {status}")
        chain = ext.DrandChain.from_info(json.loads(body))
        if chain.chain_hash != self.chain_hash or chain.public_key != self.public_key:
            raise ValueError("/info disagrees with the pinned chain hash or public key")
        return chain

    def fetch(self, boundary_ms: int, wait_ms: int) -> ext.RoundRecord:
        """The checked round of time ``boundary_ms``, or a record saying why there is none.

        Returns within ``wait_ms`` of ``boundary_ms`` (plus one request's connect
        time at most); at once when no relay can be reached.
        """
        deadline = boundary_ms + wait_ms
        round_number = 0 if self.chain is None else self.chain.round_at(boundary_ms) or 0
        answered = invalid = False
        problems: list[str] = []
        while True:
            reached_any = False
            for base in self.urls:
                remaining = (deadline - self._now_ms()) / 1000
                if remaining <= 0 and reached_any:
                    break
                timeout = min(REQUEST_TIMEOUT_S, max(remaining, 0.05))
                try:
                    if self.chain is None:
                        self.chain = self._info(base, timeout)
                    round_number = self.chain.round_at(boundary_ms) or 0
                    if not round_number:
                        return self.missing(
                            ext.STATUS_INVALID_ROUND, 0, "no round of the chain lands on this time"
                        )
                    status, body = self._get(
                        f"{base}/{self.chain_hash.hex()}/public/{round_number}", timeout
                    )
                except _Unreachable as exc:
                    problems.append(str(exc))
                    continue
                except ValueError as exc:
                    reached_any = answered = invalid = True
                    problems.append(f"{base}: {exc}")
                    continue
                reached_any = answered = True
                if status != 200:
                    problems.append(f"{base}: round {round_number}: HTTP {status}")
                    continue
                signature, why = self._checked(body, round_number)
                if signature is None:
                    invalid = True
                    problems.append(f"{base}: round {round_number}: {why}")
                    continue
                self._set_reachable(True, "")
                return ext.RoundRecord(
                    chain_hash=self.chain_hash,
                    round=round_number,
                    status_code=ext.STATUS_VALID,
                    signature=signature,
                    relay=base,
                )
            if not reached_any and not answered:
                break  # nobody answers: emit on time rather than wait
            if self._now_ms() >= deadline:
                break
            time.sleep(min(POLL_INTERVAL_S, max(0.0, (deadline - self._now_ms()) / 1000)))
        reason = "; ".join(dict.fromkeys(problems))[:500] or "no relay configured"
        if invalid:
            code = ext.STATUS_INVALID_ROUND
        elif answered:
            code = ext.STATUS_NOT_RELEASED
        else:
            code = ext.STATUS_UNREACHABLE
        self._set_reachable(answered, reason)
        return self.missing(code, round_number, reason)

    def missing(self, code: int, round_number: int, reason: str) -> ext.RoundRecord:
        return ext.RoundRecord(
            chain_hash=self.chain_hash, round=round_number, status_code=code, reason=reason
        )

    def _checked(self, body: bytes, round_number: int) -> tuple[bytes | None, str]:
        if len(body) > MAX_ANSWER_BYTES:
            return None, "answer too large"
        try:
            doc = json.loads(body)
            got = doc["round"]
            signature = bytes.fromhex(doc["signature"])
        except (ValueError, KeyError, TypeError):
            return None, "not a drand round"
        if got != round_number:
            return None, f"answered round {got!r}"
        assert self.chain is not None
        if not ext.verify_round(self.chain, round_number, signature):
            return None, "bad BLS signature"
        return signature, ""

    def _set_reachable(self, reachable: bool, reason: str) -> None:
        """Log once when the relays become unreachable, and once when they are back."""
        if reachable == self._reachable:
            return
        if not reachable:
            log.warning("drand: no relay reachable, pulses carry no external: %s", reason)
        elif self._reachable is False:
            log.info("drand: relays reachable again")
        self._reachable = reachable


class ExternalMixer:
    """What the beacon calls: an external block per pulse, its record kept and published."""

    def __init__(
        self, relays: DrandRelays, *, state_path: Path, wait_ms: int, period_ms: int | None = None
    ) -> None:
        self.relays = relays
        self.wait_ms = wait_ms
        self._period_ms = period_ms  # the beacon's, to say once if rounds cannot land on it
        self._state_path = state_path
        self._local = threading.local()
        # fetch runs here so that its wait is a hard bound, name resolution included
        # (getaddrinfo ignores socket timeouts); a hung fetch is left behind, not queued on.
        self._fetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drand")
        self._running: Future[ext.RoundRecord] | None = None

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._state_path, isolation_level=None, timeout=10)
            db.execute(_SCHEMA)
            self._local.db = db
        return db

    def external_for(
        self, chain_index: int, pulse_index: int, boundary_ms: int
    ) -> tuple[External, bytes]:
        """Fetch round T, keep its record for pulse (chain, pulse); return the external
        block and the record as it will be published.

        Called by the tick before the pulse is committed (an orphan record of a
        pulse never committed is replaced when its slot is ticked again).
        """
        record = self._fetch(boundary_ms)
        self._check_period()
        data = record.to_json()
        self._keep(chain_index, pulse_index, record.status_code, data)
        if record.status_code != ext.STATUS_VALID:
            # An outage is logged once by the relays (and once when they come back), not
            # on every pulse; a withheld or invalid round is news each time.
            log.log(
                logging.DEBUG if record.status_code == ext.STATUS_UNREACHABLE else logging.INFO,
                "pulse %d/%d: external missing (code %d): %s",
                chain_index,
                pulse_index,
                record.status_code,
                record.reason,
            )
        return ext.external_of(self._chain_or_pinned(), record), data

    def _check_period(self) -> None:
        """Once the chain is known: warn if the beacon's period misses its rounds."""
        chain, period = self.relays.chain, self._period_ms
        if chain is None or period is None:
            return
        self._period_ms = None  # said once
        if period % (chain.period * 1000):
            log.warning(
                "the period (%g s) is not a multiple of the drand chain's (%d s): pulses "
                "at times where no round lands carry no external (statusCode %d)",
                period / 1000,
                chain.period,
                ext.STATUS_INVALID_ROUND,
            )

    def record_for(self, chain_index: int, pulse_index: int) -> bytes | None:
        """The round record kept for pulse (chain, pulse), as published."""
        row = (
            self._db()
            .execute(
                "SELECT record FROM external WHERE chain_index=? AND pulse_index=?",
                (chain_index, pulse_index),
            )
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    def remember(self, chain_index: int, pulse_index: int, data: bytes) -> None:
        """Keep the round record of a pulse planned elsewhere (``beacon.plan``) to publish it."""
        self._keep(chain_index, pulse_index, ext.RoundRecord.from_json(data).status_code, data)

    def _keep(self, chain_index: int, pulse_index: int, status: int, data: bytes) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO external VALUES (?, ?, ?, ?)",
            (chain_index, pulse_index, status, data),
        )

    def forget(self, chain_index: int, pulse_index: int) -> None:
        """Pulse (chain, pulse) mixes no round (planned elsewhere): publish none for it."""
        self._db().execute(
            "DELETE FROM external WHERE chain_index=? AND pulse_index=?",
            (chain_index, pulse_index),
        )

    def _fetch(self, boundary_ms: int) -> ext.RoundRecord:
        if self._running is not None and not self._running.done():
            return self.relays.missing(
                ext.STATUS_UNREACHABLE, 0, "the previous fetch is still hanging"
            )
        self._running = self._fetcher.submit(self.relays.fetch, boundary_ms, self.wait_ms)
        # The fetch's own deadline is boundary + wait; allow one request's timeout more.
        timeout = max(0.0, (boundary_ms + self.wait_ms) / 1000 - time.time()) + REQUEST_TIMEOUT_S
        try:
            return self._running.result(timeout=timeout)
        except FutureTimeout:
            return self.relays.missing(ext.STATUS_UNREACHABLE, 0, "the relays did not answer")

    def _chain_or_pinned(self) -> ext.DrandChain:
        if self.relays.chain is not None:
            return self.relays.chain
        # No /info yet: sourceId only needs the pinned hash.
        return ext.DrandChain(
            chain_hash=self.relays.chain_hash,
            public_key=self.relays.public_key,
            genesis_time=0,
            period=1,
        )

    def publish(
        self, publisher: Publisher, chain_index: int, pulse_index: int, time_ms: int
    ) -> None:
        """Publish the round record of the pulse at ``time_ms`` (before the pulse itself,
        as immutable; keyed by its time, so that no orphan record of a dead instance
        can block it)."""
        data = self.record_for(chain_index, pulse_index)
        if data is not None:
            publisher.put_immutable(
                layout.external_key(chain_index, time_ms), data, content_type=JSON
            )

    def status(self) -> dict[str, Any]:
        """status.json keys: ``externalMissing`` and, while the last external is
        missing, a ``degraded`` entry with code ``external-missing``."""
        db = self._db()
        (missing,) = db.execute("SELECT count(*) FROM external WHERE status != 0").fetchone()
        last = db.execute(
            "SELECT status, record FROM external ORDER BY chain_index DESC, pulse_index DESC "
            "LIMIT 1"
        ).fetchone()
        degraded = []
        if last is not None and last[0] != ext.STATUS_VALID:
            reason = json.loads(bytes(last[1])).get("reason", "")
            degraded.append(
                {
                    "code": "external-missing",
                    "message": f"the last pulse has no drand external "
                    f"(statusCode {last[0]}): {reason}"[:300],
                }
            )
        return {"externalMissing": int(missing), "degraded": degraded}


def merge_status(status: dict[str, Any], mixer: ExternalMixer | None) -> None:
    """Add the external's keys to a status.json document (``degraded`` is extended)."""
    if mixer is None:  # no external source: nothing missing, nothing degraded by it
        status["externalMissing"] = 0
        status.setdefault("degraded", [])
        return
    mine = mixer.status()
    status["externalMissing"] = mine["externalMissing"]
    status["degraded"] = [*status.get("degraded", []), *mine["degraded"]]


def make_mixer(settings: Settings, now_ms: Callable[[], int] | None = None) -> ExternalMixer | None:
    """The external of ``settings``: None for ``external_source = "none"``."""
    if settings.external_source == "none":
        return None
    relays = DrandRelays(
        settings.drand_urls,
        chain_hash=bytes.fromhex(settings.drand_chain_hash),
        public_key=bytes.fromhex(settings.drand_public_key),
        now_ms=now_ms,
    )
    # Never wait past half a period: a late round must not push a pulse to the next boundary.
    wait_ms = min(settings.external_wait_ms, settings.period_ms // 2)
    return ExternalMixer(
        relays, state_path=settings.state_path, wait_ms=wait_ms, period_ms=settings.period_ms
    )
