"""Getting bytes from a site served over http(s): ``HttpClient``, ``HttpSource``, ``http_get``.

Built on urllib3 (the verifier's ``http`` extra: ``pip install 'beacon-verifier[http]'``),
for its pool of kept-alive connections: an audit over the network makes tens of
thousands of small GETs, and a new TCP (and TLS) connection for each costs more
round trips than the GET. Apart from ``fetch`` so that reading a local directory
or a bucket imports no HTTP stack; ``fetch.open_source`` imports this module for
an http(s) source.

Every object is bounded as before:

- a timeout per connect and per read, and a **deadline per object** that covers
  the status line and headers as well as the body: a watchdog thread shuts the
  socket of a request still unfinished at its deadline, so a server trickling
  its headers a byte at a time cannot hold a request open forever;
- a size cap, enforced while reading;
- no ``Content-Encoding`` other than identity (nothing is decoded);
- at most ``HTTP_MAX_REDIRECTS`` redirects, only to http(s).

Retries are for transient failures only (connection errors, timeouts,
408/425/429/5xx), at most ``HTTP_ATTEMPTS`` per object, with jittered
exponential backoff, and drawn from a retry budget shared by the whole audit
(``throttle.RetryBudget``). A 429 or 503 also lowers the number of requests in
flight (``throttle.Limiter``) and its ``Retry-After`` pauses every new request.
"""

from __future__ import annotations

import heapq
import http.client
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from beacon_verifier.errors import FetchError
from beacon_verifier.fetch import MAX_OBJECT_BYTES, TooLargeError, _check_key
from beacon_verifier.throttle import (
    DEFAULT_CONCURRENCY,
    Limiter,
    RetryBudget,
    backoff,
    retry_after,
)

try:
    import urllib3
    import urllib3.connection
    import urllib3.exceptions
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise FetchError("http(s) sources need urllib3: pip install 'beacon-verifier[http]'") from exc

__all__ = [
    "DEFAULT_CONCURRENCY",
    "HTTP_DEADLINE",
    "HTTP_TIMEOUT",
    "HttpClient",
    "HttpSource",
    "http_get",
]

HTTP_TIMEOUT = 15.0  # seconds, per connect or read
HTTP_DEADLINE = 120.0  # seconds for one object, headers included, however slowly it trickles in
HTTP_ATTEMPTS = 3
HTTP_MAX_REDIRECTS = 5
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
_CONGESTION = {429, 503}
_REDIRECTS = {301, 302, 303, 307, 308}
_USER_AGENT = "beacon-verify/0.1"
_CHUNK = 256 * 1024
#: What a request or the reading of its body may raise when the connection fails.
_NET_ERRORS: tuple[type[Exception], ...] = (
    urllib3.exceptions.HTTPError,
    OSError,
    http.client.HTTPException,
)


# --- the deadline watchdog ---------------------------------------------------------------


class _Guard:
    """One request's deadline, and the connection it runs on (once it has one)."""

    __slots__ = ("connection", "deadline", "done", "expired", "response")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.connection: Any = None
        self.response: Any = None  # once its headers are in
        self.expired = False
        self.done = False

    def __lt__(self, other: _Guard) -> bool:
        return self.deadline < other.deadline


class _Watchdog:
    """Shuts the socket of every request still running at its deadline.

    The request's thread is blocked in a read; with its socket shut it gets an
    error at once, and the client reports the deadline. The watchdog's thread
    runs only while requests do: idle, the process has no thread of ours (so
    ``replay`` may fork its workers, which it does only from a single thread)."""

    def __init__(self) -> None:
        self._heap: list[_Guard] = []  # by deadline; finished guards leave it lazily
        self._live = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._leaving: threading.Thread | None = None  # told to stop, not yet joined
        self._pid = 0
        self._local = threading.local()

    def start(self, within: float) -> _Guard:
        guard = _Guard(time.monotonic() + within)
        with self._cond:
            if self._pid != os.getpid():  # first use, or in a forked child
                self._pid, self._heap, self._live, self._thread = os.getpid(), [], 0, None
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http-deadlines")
                self._thread.daemon = True
                self._thread.start()
            if len(self._heap) > 64 and len(self._heap) > 4 * self._live:
                self._heap = [g for g in self._heap if not g.done]
                heapq.heapify(self._heap)
            earliest = not self._heap or guard.deadline < self._heap[0].deadline
            heapq.heappush(self._heap, guard)
            self._live += 1
            if earliest:  # else the watchdog wakes in time for the one before
                self._cond.notify()
        self._local.guard = guard
        return guard

    def attach(self, connection: Any) -> None:
        """Called by a connection as it starts a request on this thread."""
        guard = getattr(self._local, "guard", None)
        if guard is not None:
            guard.connection = connection
            if guard.expired:
                _shut(guard)

    def stop(self, guard: _Guard) -> None:
        idle = None
        with self._cond:
            if not guard.done:
                guard.done = True  # dropped from the heap when its deadline comes
                self._live -= 1
                if self._live == 0 and self._pid == os.getpid():
                    idle, self._thread, self._heap = self._thread, None, []
                    self._cond.notify_all()
        guard.connection = guard.response = None
        if getattr(self._local, "guard", None) is guard:
            self._local.guard = None
        if idle is not None and threading.current_thread() is threading.main_thread():
            idle.join(1.0)  # gone before the main thread may fork
        elif idle is not None:
            self._leaving = idle  # joined by ``settle``

    def settle(self) -> None:
        """Wait (1 s at most) for a watchdog thread that went idle to be gone, so that
        a process whose requests ran on other threads may fork."""
        leaving, self._leaving = self._leaving, None
        if leaving is not None and leaving is not threading.current_thread():
            leaving.join(1.0)

    def _run(self) -> None:
        me = threading.current_thread()
        with self._cond:
            while self._thread is me:
                now = time.monotonic()
                while self._heap and self._heap[0].deadline <= now:
                    guard = heapq.heappop(self._heap)
                    if not guard.done:
                        guard.expired = True
                        _shut(guard)
                wait = self._heap[0].deadline - now if self._heap else 60.0
                self._cond.wait(min(max(wait, 0.01), 60.0))


def _shut(guard: _Guard) -> None:
    """Shut the socket under ``guard``'s request: the connection's while the headers
    are read, the response's (urllib3 >= 2.3) once the connection has handed it over."""
    sock = getattr(guard.connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    if guard.response is not None:
        try:
            guard.response.shutdown()
        except OSError:
            pass


_WATCHDOG = _Watchdog()


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    """A connection the watchdog guards from connect to the end of each request
    (placed before HTTPSConnection in the MRO, it guards that one too)."""

    def connect(self) -> None:
        _WATCHDOG.attach(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _WATCHDOG.attach(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _Transient(FetchError):
    """A request that failed in a way worth retrying (no answer, reset, timed out)."""


# --- the client ----------------------------------------------------------------------------


class HttpClient:
    """A pool of kept-alive connections, at most ``concurrency`` requests in flight.

    Thread-safe: the threads of one audit share one client, its retry budget and
    its limiter."""

    def __init__(
        self,
        concurrency: int = DEFAULT_CONCURRENCY,
        *,
        timeout: float = HTTP_TIMEOUT,
        deadline: float | None = None,
        attempts: int = HTTP_ATTEMPTS,
        budget: RetryBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limiter = Limiter(concurrency)
        self.budget = RetryBudget() if budget is None else budget
        self._deadline = deadline
        self.attempts = attempts
        self._sleep = sleep
        self._timeout = urllib3.Timeout(connect=timeout, read=timeout)
        self._pools = urllib3.PoolManager(num_pools=4, maxsize=concurrency, block=True)
        self._pools.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    @property
    def deadline(self) -> float:
        """Seconds for one object, headers included (default ``HTTP_DEADLINE``)."""
        return HTTP_DEADLINE if self._deadline is None else self._deadline

    def close(self) -> None:
        self._pools.clear()

    def get(self, url: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None:
        """GET ``url``; None on 404/410. Bounded in size and time; retries transient failures."""
        opened = self._open(url)
        if opened is None:
            return None
        response, guard, where = opened
        try:
            return b"".join(self._body(response, guard, where, max_bytes))
        finally:
            self._done(response, guard)

    def stream(self, url: str, *, max_bytes: int) -> Iterator[bytes] | None:
        """``url``'s body in pieces (at most ``max_bytes``), or None on 404/410.

        The request's deadline covers the whole stream: consume it promptly."""
        opened = self._open(url)
        if opened is None:
            return None
        response, guard, where = opened
        return self._pieces(response, guard, where, max_bytes)

    def _pieces(self, response: Any, guard: _Guard, where: str, max_bytes: int) -> Iterator[bytes]:
        try:
            yield from self._body(response, guard, where, max_bytes)
        finally:
            self._done(response, guard)

    def _done(self, response: Any, guard: _Guard) -> None:
        _WATCHDOG.stop(guard)
        response.release_conn()
        self.limiter.release()

    def _body(self, response: Any, guard: _Guard, where: str, max_bytes: int) -> Iterator[bytes]:
        total = 0
        try:
            while part := response.read1(_CHUNK, decode_content=False):
                total += len(part)
                if total > max_bytes:
                    response.close()  # not back to the pool with a body half read
                    raise TooLargeError(f"{where}: larger than {max_bytes} bytes")
                yield part
        except _NET_ERRORS as exc:
            response.close()
            if guard.expired:
                raise FetchError(self._late(where)) from None
            raise FetchError(f"{where}: {_reason(exc)}") from None
        if guard.expired:
            raise FetchError(self._late(where))
        self.budget.earn()

    def _open(self, url: str) -> tuple[Any, _Guard, str] | None:
        """The 200 answer to GET ``url`` (holding a place in the limiter and a running
        deadline), or None on 404/410. Follows redirects; retries transient failures."""
        attempt = 0
        while True:
            attempt += 1
            self.limiter.acquire()
            guard = _WATCHDOG.start(self.deadline)
            try:
                response, where = self._request(url, guard)
            except FetchError as exc:
                self.limiter.release()
                _WATCHDOG.stop(guard)
                if isinstance(exc, _Transient) and self._may_retry(attempt):
                    self._sleep(backoff(attempt))
                    continue
                raise
            status = response.status
            if status == 200:
                encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    response.close()
                    self._done(response, guard)
                    raise FetchError(f"{where}: served with Content-Encoding {encoding[:20]!r}")
                self.limiter.answered()
                return response, guard, where
            pause = retry_after(response.headers.get("Retry-After"))
            response.close()
            self._done(response, guard)
            if status in _CONGESTION:
                self.limiter.congested(pause)
            else:
                self.limiter.answered()
            if status in (404, 410):
                return None
            if status not in _TRANSIENT_HTTP or not self._may_retry(attempt):
                raise FetchError(f"{where}: HTTP {status} {_reason_phrase(status)}")
            self._sleep(backoff(attempt))  # a Retry-After pause is waited in acquire()

    def _late(self, where: str) -> str:
        return f"{where}: no complete answer within {self.deadline:g} s"

    def _may_retry(self, attempt: int) -> bool:
        return attempt < self.attempts and self.budget.spend()

    def _request(self, url: str, guard: _Guard) -> tuple[Any, str]:
        """Send GET ``url``, following at most ``HTTP_MAX_REDIRECTS`` redirects to http(s)."""
        where = url
        for _ in range(HTTP_MAX_REDIRECTS + 1):
            if urllib.parse.urlsplit(where).scheme not in ("http", "https"):
                raise FetchError(f"{where}: not an http(s) URL")
            try:
                response = self._pools.request(
                    "GET",
                    where,
                    headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"},
                    preload_content=False,
                    decode_content=False,
                    redirect=False,
                    retries=False,
                    timeout=self._timeout,
                )
            except urllib3.exceptions.LocationValueError as exc:
                raise FetchError(f"{where}: {exc}") from None
            except _NET_ERRORS as exc:
                if guard.expired:
                    raise _Transient(self._late(where)) from None
                raise _Transient(f"{where}: {_reason(exc)}") from None
            except ValueError as exc:  # e.g. a malformed port
                raise FetchError(f"{where}: {exc}") from None
            guard.response = response
            if guard.expired:
                _shut(guard)  # the watchdog may have come between
            if response.status not in _REDIRECTS:
                return response, where
            location = response.headers.get("Location", "")
            response.close()
            target = urllib.parse.urljoin(where, location)
            if urllib.parse.urlsplit(target).scheme not in ("http", "https"):
                raise FetchError(f"{where}: redirected to a non-http(s) URL {target[:80]!r}")
            where = target
        raise FetchError(f"{url}: more than {HTTP_MAX_REDIRECTS} redirects")


def _reason(exc: BaseException) -> str:
    for cause in (exc, *exc.args):
        if isinstance(cause, urllib3.exceptions.IncompleteRead | http.client.IncompleteRead):
            missing = cause.expected if isinstance(cause.expected, int) else "some"
            return f"the answer was cut short ({missing} bytes missing)"
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
    text = str(reason)
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _reason_phrase(status: int) -> str:
    return http.client.responses.get(status, "")


_DEFAULT: HttpClient | None = None
_DEFAULT_LOCK = threading.Lock()


def http_get(url: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None:
    """GET ``url`` with a small shared client; None on 404/410."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = HttpClient(4)
        client = _DEFAULT
    return client.get(url, max_bytes=max_bytes)


class HttpSource:
    """A site served over http(s), through a pool of ``concurrency`` connections."""

    def __init__(self, base_url: str, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self.client = HttpClient(concurrency)

    def describe(self) -> str:
        return self.base_url

    def __reduce__(self) -> tuple[type[HttpSource], tuple[str, int]]:
        return (HttpSource, (self.base_url, self.concurrency))

    def get(self, key: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None:
        return self.client.get(f"{self.base_url}/{_check_key(key)}", max_bytes=max_bytes)

    def stream(self, key: str, *, max_bytes: int) -> Iterator[bytes] | None:
        return self.client.stream(f"{self.base_url}/{_check_key(key)}", max_bytes=max_bytes)

    def settle(self) -> None:
        """No thread of ours left running once requests are done (see ``_Watchdog``)."""
        _WATCHDOG.settle()
