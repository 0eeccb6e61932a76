"""Request limits that protect the event loop: a body-size cap and terse validation errors."""

from __future__ import annotations

import json

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


class BodySizeLimit:
    """ASGI middleware: a body over `max_bytes` gets 413 — at once when Content-Length says
    so, else as soon as the streamed bytes pass the cap — before anything parses it."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._too_large(send)
        seen, exceeded, answered = 0, False, False

        async def counted():
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                exceeded = True
                raise _TooLarge  # stops the read; FastAPI may turn it into its own 400 ...
            return message

        async def guarded_send(message):
            nonlocal answered
            if not exceeded:
                return await send(message)
            if message["type"] == "http.response.start" and not answered:
                answered = True  # ... which is replaced by the 413 here
                await self._too_large(send)

        try:
            await self.app(scope, counted, guarded_send)
        except _TooLarge:
            if not answered:
                await self._too_large(send)

    async def _too_large(self, send):
        body = json.dumps({"detail": f"request body over {self.max_bytes} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


async def terse_validation_error(request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field, without echoing the (possibly huge) input back."""
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()[:20]
    ]
    return JSONResponse(status_code=422, content={"detail": errors})
