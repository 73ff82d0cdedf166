"""Serving at scale: the same FastAPI app as `metarec serve`, as a Ray Serve deployment with N replicas (or
autoscaling between bounds) behind Ray Serve's HTTP proxy.

Replicas share one PostgreSQL database (SQLite is one file on one machine: refused beyond one replica). Each
replica builds its own app (model, indexes) from the artefact; the schema is migrated once, here, before they
start. A shared replica indexes items other replicas added before it reads or writes, and adapts users from
the database on every request (no per-replica user cache that another replica's events would make stale).

Two deployments: `gateway` (the HTTP ingress, no CPU of its own) forwards each request's ASGI scope and body
through a Ray Serve handle to a `metarec` replica, which runs the app on them in-process. Ray Serve's router
retries a request only while no replica has accepted it; the gateway also retries one whose replica died
under it, on another replica, when the retry is safe: a GET / HEAD / OPTIONS, or a POST that carries an
`Idempotency-Key` (the app stores that request's events once however often it arrives). Anything else
answers 503 and the client decides. A killed gateway replica still fails the requests it holds.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from metarec.errors import ConfigError
from metarec.utils import require

log = logging.getLogger("ray.serve")
#: methods a gateway re-sends after the replica holding them died (they change nothing, or change it once)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: re-sends of one request before the gateway gives up with a 503 (each goes to a live replica)
RETRIES = 3
#: requests one gateway replica holds at once (each only waits on a replica; the replicas' own limits queue them)
GATEWAY_MAX_ONGOING = 1000
UNSAFE_HINT = "it may or may not have been stored: a POST with an Idempotency-Key header is safe to send again"


def retry_safe(method: str, headers: dict[str, str]) -> bool:
    """May a request whose replica died be sent again? Yes when it reads, or carries an Idempotency-Key."""
    return method in SAFE_METHODS or (method == "POST" and "idempotency-key" in headers)


#: the parts of an incoming ASGI scope a replica gets unchanged (raw path, query and header bytes: nothing is
#: decoded and parsed again, so `/users/a%3Fb` stays user `a?b`)
SCOPE_KEYS = ("method", "path", "raw_path", "root_path", "query_string", "headers", "scheme", "server", "client",
              "http_version")  # fmt: skip
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class AppReplica:
    """A `metarec` replica: the service's FastAPI app, called in-process (ASGI) for each forwarded request."""

    def __init__(self, build: Any) -> None:
        self.app = build()

    async def handle(self, scope: dict[str, Any], body: bytes) -> Answer:
        """Run the app on the gateway's request: (status, raw headers, body)."""
        import asyncio

        scope = {**scope, "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "state": {}}
        done = asyncio.Event()
        sent = False
        status, headers, parts = 500, [], []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()  # the client "leaves" only once the answer is complete
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                parts.append(bytes(message.get("body", b"")))

        try:
            await self.app(scope, receive, send)
        except Exception:  # Starlette has sent its 500 already, and re-raised for the server's log
            log.exception("the app failed on %s %s", scope.get("method"), scope.get("path"))
            if not headers:
                return 500, [(b"content-type", b"text/plain; charset=utf-8")], b"Internal Server Error"
        finally:
            done.set()
        return status, headers, b"".join(parts)


class Gateway:
    """The HTTP ingress: refuses what the app's guard would refuse before the body (a write without the
    token, a declared body over the limit), reads the body (capped), forwards the request unchanged,
    re-sends a safe one whose replica died (`retry_safe`; the answer then says so in `X-Metarec-Resent`)
    and answers 503 for one it may not re-send."""

    def __init__(self, app: Any, max_body: int, token: str | None = None) -> None:
        self.app, self.max_body, self.token = app, max_body, token

    async def __call__(self, request: Any) -> Any:
        from ray.exceptions import RayActorError
        from starlette.responses import JSONResponse, Response

        from metarec.serve.guard import WRITES, token_ok, unauthorized

        if self.token and request.method in WRITES and not token_ok(request.headers.get("authorization"), self.token):
            return unauthorized()
        too_large = JSONResponse({"detail": f"request body over {self.max_body:,} bytes"}, status_code=413)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return too_large
        body = bytearray()
        async for chunk in request.stream():  # capped here too: the gateway holds the body while it retries
            body += chunk
            if len(body) > self.max_body:
                return too_large
        scope = {k: request.scope[k] for k in SCOPE_KEYS if k in request.scope}
        safe = retry_safe(request.method, {k.lower(): v for k, v in request.headers.items()})
        for attempt in range(RETRIES + 1):
            try:
                status, headers, content = await self.app.handle.remote(scope, bytes(body))
            except RayActorError as exc:  # the replica died (or became unreachable) holding the request
                then = "re-sending" if safe and attempt < RETRIES else "answering 503"
                log.warning("a replica stopped under %s %s (%s): %s", request.method, request.url.path,
                            type(exc).__name__, then)  # fmt: skip
                if not safe or attempt == RETRIES:
                    what = "try again shortly" if safe else UNSAFE_HINT
                    detail = f"the replica serving this request stopped; {what}"
                    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})
                continue
            response = Response(content=content, status_code=status)
            response.raw_headers = headers + ([(b"x-metarec-resent", str(attempt).encode())] if attempt else [])
            return response
        raise AssertionError("unreachable")


def check_replicas(db_url: str, replicas: int, max_replicas: int | None, min_replicas: int | None = None) -> None:
    """Refuse what Ray Serve would only fail on later (or serve wrongly): bad bounds, SQLite shared by replicas."""
    if replicas < 1:
        raise ConfigError(f"--replicas must be >= 1, got {replicas}")
    if max_replicas is not None and min_replicas is not None and not 0 <= min_replicas <= max_replicas:
        raise ConfigError(f"autoscaling needs 0 <= --min-replicas <= --max-replicas, got {min_replicas} and "
                          f"{max_replicas}")  # fmt: skip
    if max_replicas is not None and max_replicas < 1:
        raise ConfigError(f"--max-replicas must be >= 1, got {max_replicas}")
    if max(replicas, max_replicas or 0) > 1 and db_url.startswith("sqlite"):
        raise ConfigError(
            "more than one replica needs a database every replica can reach (PostgreSQL): pass --db "
            "postgresql+psycopg://user:password@host/db (SQLite is one file on one machine)"
        )


def deployment(artifact: str | Path, db_url: str, replicas: int = 1, min_replicas: int | None = None,
               max_replicas: int | None = None, cpus_per_replica: float = 1.0,
               app_kwargs: dict[str, Any] | None = None) -> Any:  # fmt: skip
    """The bound Ray Serve application (pass to `serve.run`)."""
    serve = require("ray.serve", "ray", "ray")
    from metarec.serve.storage import migrate

    check_replicas(db_url, replicas, max_replicas, min_replicas)
    migrate(db_url)  # once: replicas starting together must not race on the schema
    artifact, kwargs = str(artifact), dict(app_kwargs or {})
    shared = max(replicas, max_replicas or 0) > 1

    def build() -> Any:  # runs in each replica
        from metarec.serve.app import create_app

        return create_app(artifact, db_url, shared=shared, **kwargs)

    from metarec.serve.app import MAX_BODY

    options: dict[str, Any] = {"name": "metarec", "ray_actor_options": {"num_cpus": cpus_per_replica}}
    if max_replicas:  # --replicas is where autoscaling starts, within the bounds
        low = 1 if min_replicas is None else min_replicas
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": max_replicas,
                                         "initial_replicas": min(max(replicas, low, 1), max_replicas)}  # fmt: skip
    else:
        options["num_replicas"] = replicas
    # the gateway only forwards and waits on replicas: no CPU reserved (the replicas hold them), two of it where
    # replicas are shared, and an in-flight limit that never caps the service (Ray Serve's default is 5)
    gateway = serve.deployment(Gateway, name="gateway", num_replicas=2 if shared else 1,
                               ray_actor_options={"num_cpus": 0}, max_ongoing_requests=GATEWAY_MAX_ONGOING)  # fmt: skip
    return gateway.bind(serve.deployment(AppReplica, **options).bind(build), kwargs.get("max_body", MAX_BODY),
                        kwargs.get("token"))  # fmt: skip


def run(app: Any, host: str, port: int, blocking: bool = True) -> None:
    serve = require("ray.serve", "ray", "ray")
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name="metarec", route_prefix="/", blocking=blocking)
