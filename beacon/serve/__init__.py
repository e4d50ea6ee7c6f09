"""``beacon serve``: a read-only NIST Beacon 2.0 REST gateway over a static site.

The site (a local directory, ``s3://`` or ``http(s)://``) stays the single
source of truth and the beacon its single writer: the gateway holds no state
and writes nothing, so any number of replicas can run behind a CDN.

- ``serve_forever(source, host, port)``: ``beacon serve`` (blocks until SIGINT/SIGTERM);
- ``GatewayThread``: the same server on a thread of its own, which ``beacon run``
  starts next to the beacon so that the first run is a website, and stops cleanly.

The HTTP stack is aiohttp (``docs/gateway.md`` says why).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable

from aiohttp import web
from beacon_verifier.fetch import Source

from beacon.errors import BeaconError
from beacon.serve.app import make_app
from beacon.serve.upstream import Upstream

__all__ = ["GatewayThread", "serve_forever", "url_of"]

#: Idle keep-alive connections are closed after this (aiohttp's own default is an hour).
KEEPALIVE_SECONDS = 75.0


def url_of(host: str, port: int) -> str:
    """``http://host:port/`` as a client would type it (IPv6 in brackets)."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host  # noqa: S104
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


async def _start(source: Source, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(
        make_app(Upstream(source)),
        access_log=None,
        handle_signals=False,
        keepalive_timeout=KEEPALIVE_SECONDS,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise BeaconError(
            f"cannot serve on {host}:{port}: {exc.strerror or exc} "
            "(choose another port with --port or serve_port; serve_port = 0 serves nothing)"
        ) from None
    server = site._server  # the bound socket tells the port when 0 was asked for
    bound = port
    if isinstance(server, asyncio.base_events.Server) and server.sockets:
        bound = server.sockets[0].getsockname()[1]
    return runner, bound


def serve_forever(
    source: Source, host: str, port: int, *, ready: Callable[[str], None] = print
) -> None:
    """Serve ``source`` on ``host:port`` until SIGINT or SIGTERM; ``ready(url)`` once bound.

    Raises ``BeaconError`` (one line) when the address cannot be bound.
    """

    async def main() -> None:
        runner, bound = await _start(source, host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        ready(url_of(host, bound))
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


class GatewayThread:
    """The gateway on a daemon thread with its own event loop.

    ``start()`` returns once the socket is bound (or raises ``BeaconError``);
    ``close()`` stops accepting, lets requests in flight finish (briefly), and
    joins the thread.
    """

    def __init__(self, source: Source, host: str, port: int) -> None:
        self.source, self.host, self.port = source, host, port
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="beacon-serve", daemon=True)

    def start(self) -> str:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self.url

    def _run(self) -> None:
        async def main() -> None:
            try:
                runner, bound = await _start(self.source, self.host, self.port)
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                return
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.url = url_of(self.host, bound)
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await runner.cleanup()

        asyncio.run(main())

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread.is_alive():
            self._thread.join(timeout=10)
