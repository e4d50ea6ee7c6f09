"""The gateway's HTTP side: an aiohttp application over one site.

One catch-all route: a path that is one of NIST's dynamic paths gets the API's
answer (``api``); any other path is the object stored under that key (the HTML
site, indexes, entropy records, daily archives, ...), ``/`` and ``dir/`` being
``index.html``. Every answer carries CORS (``Access-Control-Allow-Origin: *``),
``X-Content-Type-Options: nosniff`` and a ``Cache-Control`` (a year and
``immutable`` for objects that never change, until the next pulse for the rest).
Unknown paths get a 404 JSON error; only GET, HEAD and OPTIONS are allowed.

Keys are taken from the decoded path and must be plain names made of
``[A-Za-z0-9._~-]`` separated by single slashes, with no ``.`` or ``..`` part,
so a request cannot name anything outside the site root.
"""

from __future__ import annotations

import mimetypes
import re

from aiohttp import web
from beacon_verifier import layout
from beacon_verifier.archive import MAX_ARCHIVE_BYTES
from beacon_verifier.fetch import MAX_OBJECT_BYTES

from beacon.serve.answers import Answer, error_answer
from beacon.serve.api import Api
from beacon.serve.upstream import Upstream, UpstreamError

__all__ = ["make_app"]

_KEY = re.compile(r"[A-Za-z0-9._~-]+(?:/[A-Za-z0-9._~-]+)*")
_R = re.escape(layout.ROOT)
_IMMUTABLE = re.compile(
    rf"{_R}/(?:chain/[0-9]+/(?:pulse|entropy|pq-signature)/[0-9]+|pulse/time/[0-9]+"
    rf"|certificate/.+|pq-key/.+|batch/.+|archive/day/.+)"
    r"|html/chain/[0-9]+/pulse/[0-9]+\.html|html/day/[0-9-]+\.html"
)
_JSON_OBJECTS = re.compile(rf"{_R}/(?:chain/[0-9]+/(?:entropy|pq-signature)/[0-9]+|pq-key/.+)")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".gz": "application/gzip",
    ".txt": "text/plain; charset=utf-8",
}
_COMMON = {
    "Access-Control-Allow-Origin": "*",
    "X-Content-Type-Options": "nosniff",
}
_PREFLIGHT = {
    **_COMMON,
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Max-Age": "86400",
    "Cache-Control": "public, max-age=86400",
}


def content_type(key: str) -> str:
    """The content type of the stored object under ``key`` (pulses and indexes: JSON)."""
    name = key.rpartition("/")[2]
    dot = name.rfind(".")
    if dot > 0:
        ext = name[dot:].lower()
        return _TYPES.get(ext) or mimetypes.types_map.get(ext, "application/octet-stream")
    if key.startswith(f"{layout.ROOT}/certificate/"):
        return "text/plain"
    if key.startswith(f"{layout.ROOT}/batch/"):
        return "application/octet-stream"
    if _JSON_OBJECTS.fullmatch(key) or key.startswith(f"{layout.ROOT}/"):
        return "application/json"
    return "application/octet-stream"


def _respond(answer: Answer) -> web.Response:
    content, _, charset = answer.content_type.partition("; charset=")
    return web.Response(
        status=answer.status,
        body=answer.body,
        content_type=content,
        charset=charset or None,
        headers={**_COMMON, "Cache-Control": answer.cache_control},
    )


class Gateway:
    """The request handler: API answers, then stored objects, then 404."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.api = Api(upstream)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=_PREFLIGHT)
        if request.method not in ("GET", "HEAD"):
            refused = error_answer(405, f"{request.method} is not allowed: the API is read-only")
            response = _respond(refused)
            response.headers["Allow"] = "GET, HEAD, OPTIONS"
            return response
        path = request.path
        key = path[1:]
        if not key or key.endswith("/"):
            key += "index.html"
        if not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
            return _respond(error_answer(404, "no such path"))
        answer = await self.api.answer(key)
        if answer is not None:
            return _respond(answer)
        if key.startswith(f"{layout.ROOT}/archive/"):
            return await self._stream(request, key)
        try:
            data = await self.upstream.get(
                key, max_bytes=MAX_OBJECT_BYTES, immutable=bool(_IMMUTABLE.fullmatch(key))
            )
        except UpstreamError as exc:
            return _respond(error_answer(502, f"the site could not be read: {exc}"))
        if data is None:
            return _respond(error_answer(404, f"nothing at /{key}", self.api.latest.max_age()))
        immutable = bool(_IMMUTABLE.fullmatch(key))
        return _respond(
            Answer(200, data, content_type(key), None if immutable else self.api.latest.max_age())
        )

    async def _stream(self, request: web.Request, key: str) -> web.StreamResponse:
        """A daily archive, in pieces (never whole in memory)."""
        try:
            pieces = await self.upstream.stream(key, max_bytes=MAX_ARCHIVE_BYTES)
        except UpstreamError as exc:
            return _respond(error_answer(502, f"the site could not be read: {exc}"))
        if pieces is None:
            return _respond(error_answer(404, f"nothing at /{key}", self.api.latest.max_age()))
        response = web.StreamResponse(
            headers={
                **_COMMON,
                "Cache-Control": Answer(200, b"", max_age=None).cache_control,
                "Content-Type": content_type(key),
            }
        )
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        while True:
            try:
                piece = await self.upstream.next_chunk(pieces)
            except UpstreamError:
                # The headers are sent: drop the connection, so that the client sees
                # a cut answer (no final chunk) and never a short archive as whole.
                if request.transport is not None:
                    request.transport.close()
                return response
            if piece is None:
                break
            await response.write(piece)
        await response.write_eof()
        return response


def make_app(upstream: Upstream) -> web.Application:
    """The aiohttp application serving ``upstream``'s site."""
    gateway = Gateway(upstream)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", gateway.handle)

    async def close(_app: web.Application) -> None:
        upstream.close()

    app.on_cleanup.append(close)
    return app
