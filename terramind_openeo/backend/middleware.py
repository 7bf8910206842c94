"""ASGI middleware: path normalisation (``//`` merged, trailing ``/`` dropped) and CORS for every response."""

from __future__ import annotations

import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SLASHES = re.compile(r"/{2,}")
EXPOSED = "Location, OpenEO-Identifier, OpenEO-Costs, Link, Content-Disposition"
ALLOWED_HEADERS = "Authorization, Content-Type, Accept, Range, OpenEO-Identifier"
METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD"


class NormalizePathMiddleware:
    """``/openeo/1.2//jobs/x/`` -> ``/openeo/1.2/jobs/x`` (clients and the conformance suite send both)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = _SLASHES.sub("/", scope["path"])
            if len(path) > 1 and path.endswith("/"):
                path = path.rstrip("/") or "/"
            if path != scope["path"]:
                scope = dict(scope, path=path, raw_path=path.encode())
        await self.app(scope, receive, send)


class CorsMiddleware:
    """openEO CORS: the caller's origin allowed with credentials; ``OPTIONS`` answered 204 everywhere."""

    def __init__(self, app: ASGIApp):
        self.app = app

    @staticmethod
    def _headers(origin: str | None) -> list[tuple[bytes, bytes]]:
        return [
            (b"access-control-allow-origin", (origin or "*").encode()),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-expose-headers", EXPOSED.encode()),
            (b"vary", b"Origin"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = Headers(scope=scope).get("origin")
        if scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 204, "headers": self._headers(origin) + [
                (b"access-control-allow-methods", METHODS.encode()),
                (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
                (b"access-control-max-age", b"600"),
                (b"content-length", b"0"),
            ]})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [h for h in self._headers(origin) if h[0] not in names]
                message = dict(message, headers=list(message.get("headers", [])) + extra)
            await send(message)

        await self.app(scope, receive, send_with_cors)
