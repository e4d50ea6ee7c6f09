"""Getting bytes from a beacon site served over http(s): ``HttpSource`` and ``http_get``.

Apart from ``fetch`` so that reading a local directory or a bucket does not import
the HTTP stack (``urllib.request``, ``http.client``, ``ssl``: about 12 ms at each
start of the command line); ``fetch.open_source`` imports this module for an
http(s) source.

Every read is bounded: a timeout per socket operation and a deadline per
object that includes the status line and headers (a server trickling its
headers a byte at a time is cut off at the deadline), retries of transient
failures only (connection errors, timeouts, 408/425/429/5xx) with backoff, at
most a few redirects and only to http(s), and no content it would have to decode
(``Content-Encoding``).
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import IO, Any

from beacon_verifier.errors import FetchError
from beacon_verifier.fetch import MAX_OBJECT_BYTES, _check_key, _chunks, _read_capped

__all__ = ["HTTP_DEADLINE", "HTTP_TIMEOUT", "HttpSource", "http_get"]

HTTP_TIMEOUT = 15.0  # seconds, per connect or read
HTTP_DEADLINE = 120.0  # seconds for one object, however slowly it trickles in
HTTP_RETRIES = 3
HTTP_MAX_REDIRECTS = 5
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
_USER_AGENT = "beacon-verify/0.1"
#: What reading an answer's body may raise when the connection fails mid-way.
_READ_ERRORS: tuple[type[Exception], ...] = (OSError, http.client.HTTPException)


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow at most ``HTTP_MAX_REDIRECTS`` redirects, and only to http(s)."""

    max_redirections = HTTP_MAX_REDIRECTS

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise FetchError(f"{req.full_url}: redirected to a non-http(s) URL {newurl[:80]!r}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Deadline:
    """The deadline of one GET (``time.monotonic``), shared by its redirects and headers."""

    local = threading.local()

    @classmethod
    def remaining(cls) -> float:
        deadline: float | None = getattr(cls.local, "at", None)
        return HTTP_DEADLINE if deadline is None else deadline - time.monotonic()


class _HeadersCut(FetchError):
    """The status line and headers did not arrive before the object's deadline."""


def _bounded(base: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
    """``base`` whose ``getresponse`` (status line and headers) ends at the deadline:
    a timer shuts the socket down, which ends any read waiting on it."""

    class Bounded(base):  # type: ignore[valid-type,misc]
        def getresponse(self) -> http.client.HTTPResponse:
            remaining = _Deadline.remaining()
            cut = threading.Event()

            def expire() -> None:
                cut.set()
                sock = self.sock
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

            timer = threading.Timer(max(remaining, 0.0), expire)
            timer.daemon = True
            timer.start()
            try:
                return super().getresponse()  # type: ignore[no-any-return]
            except (OSError, http.client.HTTPException):
                if cut.is_set():
                    raise _HeadersCut(
                        f"{self.host}: no complete headers within {HTTP_DEADLINE:.0f} s"
                    ) from None
                raise
            finally:
                timer.cancel()
                timer.join()  # gone before any fork (``replay._worker_context``)

    return Bounded


_BoundedHTTP = _bounded(http.client.HTTPConnection)
_BoundedHTTPS = _bounded(http.client.HTTPSConnection)


class _BoundedHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_BoundedHTTP, req)


class _BoundedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_BoundedHTTPS, req)


_OPENER = urllib.request.build_opener(_SafeRedirects, _BoundedHandler, _BoundedHTTPSHandler)


def _http_open(url: str) -> Any | None:
    """The response to GET ``url``; None on 404/410. Retries transient failures with backoff.

    Each attempt's status line and headers must arrive within ``HTTP_DEADLINE``;
    the caller reads the body within what is left of it (``_Deadline.remaining``).
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise FetchError(f"{url}: not an http(s) URL")
    delay = 0.5
    for attempt in range(HTTP_RETRIES):
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})  # noqa: S310
        _Deadline.local.at = time.monotonic() + HTTP_DEADLINE
        try:
            response = _OPENER.open(request, timeout=HTTP_TIMEOUT)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in (404, 410):
                return None
            if exc.code not in _TRANSIENT_HTTP or attempt == HTTP_RETRIES - 1:
                raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            if attempt == HTTP_RETRIES - 1:
                reason = getattr(exc, "reason", exc)
                raise FetchError(f"{url}: {reason}") from None
        except ValueError as exc:  # e.g. a malformed URL or port
            raise FetchError(f"{url}: {exc}") from None
        else:
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                response.close()
                raise FetchError(f"{url}: served with Content-Encoding {encoding[:20]!r}")
            return response
        time.sleep(delay)
        delay *= 2
    raise FetchError(f"{url}: no answer")  # pragma: no cover - the loop returns or raises


def http_get(url: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None:
    """GET ``url``; None on 404/410. Bounded in size and time; retries transient failures."""
    response = _http_open(url)
    if response is None:
        return None
    try:
        return _read_capped(response, max_bytes, url, max(_Deadline.remaining(), 0.0))
    except _READ_ERRORS as exc:  # reset, timed out or cut short mid-body
        raise FetchError(f"{url}: {getattr(exc, 'strerror', None) or exc!r}") from None
    finally:
        response.close()


class HttpSource:
    """A site served over http(s)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def describe(self) -> str:
        return self.base_url

    def __reduce__(self) -> tuple[type[HttpSource], tuple[str]]:
        return (HttpSource, (self.base_url,))

    def get(self, key: str, *, max_bytes: int = MAX_OBJECT_BYTES) -> bytes | None:
        return http_get(f"{self.base_url}/{_check_key(key)}", max_bytes=max_bytes)

    def stream(self, key: str, *, max_bytes: int) -> Iterator[bytes] | None:
        url = f"{self.base_url}/{_check_key(key)}"
        response = _http_open(url)
        if response is None:
            return None
        return _chunks(response, max_bytes, url, max(_Deadline.remaining(), 0.0), _READ_ERRORS)
