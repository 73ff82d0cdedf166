"""Checks that run before a request body is read: the write token and the body size.

FastAPI parses a body before it resolves dependencies, so a token dependency alone would let an
unauthenticated client make the server read (and hold) a body of any size. This ASGI middleware
answers 401 to an unauthenticated write and 413 to a body over the limit, from the headers when
they say enough, else while the body streams in, before anything parses it.
"""

from __future__ import annotations

import hmac
import re
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
#: the one write that honours `Idempotency-Key` (stores its events once however often it is retried)
IDEMPOTENT_WRITE = re.compile(r"^/users/[^/]+/interactions/?$")


def token_ok(header: str | None, token: str) -> bool:
    """`Authorization: Bearer <token>`, scheme case-insensitive, compared in constant time."""
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


UNAUTHORIZED = "this endpoint needs the API token: send 'Authorization: Bearer <token>'"


def unauthorized() -> JSONResponse:
    return JSONResponse({"detail": UNAUTHORIZED}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


class RequestGuard:
    def __init__(self, app: ASGIApp, max_body: int, token: str | None) -> None:
        self.app, self.max_body, self.token = app, max_body, token

    def _too_large(self) -> JSONResponse:
        return JSONResponse({"detail": f"request body over {self.max_body:,} bytes"}, status_code=413)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.token and scope["method"] in WRITES and not token_ok(headers.get("authorization"), self.token):
            await unauthorized()(scope, receive, send)
            return
        if (
            "idempotency-key" in headers
            and scope["method"] in WRITES
            and not (scope["method"] == "POST" and IDEMPOTENT_WRITE.match(scope["path"]))
        ):  # a key the route ignored would promise a safe retry it cannot keep
            detail = "Idempotency-Key is honoured only by POST /users/{id}/interactions; send it there or drop it"
            await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            response = self._too_large() if length.isdigit() else JSONResponse({"detail": "bad Content-Length"}, 400)
            await response(scope, receive, send)
            return
        received = 0
        state = {"started": False, "refused": False}

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request" and not state["refused"]:
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # answer now and tell the app the client is gone; whatever it sends after is dropped
                    state["refused"] = True
                    if not state["started"]:
                        await self._too_large()(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Any) -> None:
            if state["refused"]:
                return
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, watched)
