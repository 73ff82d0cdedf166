"""REST API (FastAPI) and the web page: recommend, take feedback and adapt, add items, search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from swagger_ui_bundle import swagger_ui_path

from metarec.errors import MetarecError
from metarec.serve.guard import UNAUTHORIZED, RequestGuard, token_ok
from metarec.serve.service import Conflict, NotFound, RecommenderService

MAX_BATCH = 1000
MAX_BODY = 1 << 20  # bytes; a full batch of 1,000 events is about 60 KB
STATIC = Path(__file__).parent / "static"


#: no NUL byte (PostgreSQL cannot store one) and at least one visible character
TEXT_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"
#: user ids travel in URL paths: no '/' either (rejected at creation rather than unreachable later)
ID_PATTERN = r"^[^\x00/]*[^\s\x00/][^\x00/]*$"
UserId = Annotated[str, PathParam(min_length=1, max_length=200, pattern=ID_PATTERN)]
NO_NUL = r"^[^\x00]*$"  # PostgreSQL cannot store a NUL byte in text
Key = Annotated[str, Field(max_length=100, pattern=NO_NUL)]


class _In(BaseModel):
    """Request bodies: unknown fields, non-finite numbers, coerced types and NUL bytes are all 422, and
    the schema says so (every text has a no-NUL pattern); a typo must not silently become a default (a
    misspelt `kind` once turned a dislike into a click)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ItemIn(_In):
    id: str = Field(min_length=1, max_length=200, pattern=TEXT_PATTERN)
    title: str = Field(min_length=1, max_length=500, pattern=TEXT_PATTERN)
    text: str | None = Field(default=None, max_length=20_000, pattern=NO_NUL)
    fields: dict[Key, Annotated[str, Field(max_length=5_000, pattern=NO_NUL)]] | None = Field(
        default=None, description="more fields for the item template, e.g. genres"
    )


class ItemsIn(_In):
    items: list[ItemIn] = Field(min_length=1, max_length=MAX_BATCH)


class UserIn(_In):
    id: str = Field(min_length=1, max_length=200, pattern=ID_PATTERN)
    profile_text: str | None = Field(default=None, max_length=5_000, pattern=NO_NUL)


class EventIn(_In):
    item: str = Field(min_length=1, max_length=200, pattern=TEXT_PATTERN)
    kind: Literal["click", "like", "dislike", "rating"]
    rating: float | None = Field(default=None, ge=0, le=10)


class EventsIn(_In):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class ItemOut(BaseModel):
    id: str
    title: str
    score: float
    domain: str | None = None  # the catalogue the item belongs to, where the data names one


class ErrorOut(BaseModel):
    detail: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route really gives (422 is FastAPI's own)."""
    what = {401: "the API token is missing or wrong", 404: "unknown user or item", 409: "the id exists already",
            413: "request body over the limit"}  # fmt: skip
    return {code: {"model": ErrorOut, "description": what[code]} for code in codes}


MAX_LLM_K = 20


class RecommendationOut(ItemOut):
    because_you_liked: list[str] = []
    matched_profile_words: list[str] = []
    explanation: str | None = None  # explain=llm: one sentence, checked against the user's items and the item's facts
    explanation_source: str | None = None  # "llm" (kept) or "template" (the LLM's sentence was refused)


def create_app(artifact: str | Path, db_url: str, token: str | None = None, exact_below: int = 20_000,
               max_body: int = MAX_BODY, max_cached_users: int = 100_000, llm: str | None = None,
               llm_threads: int = 1, shared: bool = False) -> FastAPI:  # fmt: skip
    """The API over one artefact and one database; write endpoints need `token` when it is set, and
    no request body may exceed `max_body` bytes (checked before the body is read)."""
    app = FastAPI(
        title="metarec",
        description="LLM-understood, meta-learned recommendations",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
    )  # /docs is served from installed assets, not a CDN
    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    app.add_middleware(RequestGuard, max_body=max_body, token=token)
    app.state.service = RecommenderService(artifact, db_url, exact_below=exact_below, max_cached_users=max_cached_users,
                                           llm=llm, llm_threads=llm_threads, shared=shared)  # fmt: skip
    app.state.token = token
    app.add_exception_handler(MetarecError, service_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    for router in (pages, items, users):
        app.include_router(router)
    return app


# ---------------------------------------------------------------------------- plumbing
# status for each service error, most specific first; any other MetarecError is the request's fault
ERROR_STATUS: tuple[tuple[type[MetarecError], int], ...] = ((NotFound, 404), (Conflict, 409), (MetarecError, 422))


async def service_error(request: Request, exc: Exception) -> JSONResponse:
    """NotFound -> 404, Conflict -> 409 (`{"detail": message}`); any other MetarecError is a request the
    service cannot take -> 422 in the same shape as a validation error, so one schema describes every 422."""
    status = next(code for kind, code in ERROR_STATUS if isinstance(exc, kind))
    if status == 422:
        return JSONResponse({"detail": [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]}, status_code=422)
    return JSONResponse({"detail": str(exc)}, status_code=status)


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field. The offending input is not echoed back: it may be huge, or a
    NaN / Infinity that JSON cannot carry (echoing it turned a 422 into a 500)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors]
    return JSONResponse({"detail": detail}, status_code=422)


async def get_service(request: Request) -> RecommenderService:
    return request.app.state.service


bearer = HTTPBearer(auto_error=False, description="the API token given to `metarec serve --token`")


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """Writes and reads of a user's data need the token when one is configured (RequestGuard has
    already refused unauthenticated writes before their body; this also declares the scheme in OpenAPI)."""
    token = request.app.state.token
    if token and (credentials is None or not token_ok(f"Bearer {credentials.credentials}", token)):
        raise HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


Service = Annotated[RecommenderService, Depends(get_service)]
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[ -~]+$")
]
WRITE = [Depends(require_token)]
PRIVATE = WRITE  # a user's profile, history and recommendations (which name what they liked)


def item_out(service: RecommenderService, i: int, score: float) -> dict[str, Any]:
    return {"id": service.item_ids[i], "title": service.titles[i], "score": score, "domain": service.domains[i]}


def user_out(service: RecommenderService, user_id: str, limit: int, offset: int) -> dict[str, Any]:
    user, rows = service.history(user_id, limit, offset)
    return {
        "id": user.external_id,
        "profile_text": user.profile_text,
        "history": [
            {
                "item": service.item_ids[r.item_id],
                "title": service.titles[r.item_id],
                "kind": r.kind,
                "rating": r.rating,
                "at": r.created_at.isoformat(),
            }
            for r in rows
        ],
    }


# ---------------------------------------------------------------------------- routes
pages = APIRouter()
items = APIRouter()
users = APIRouter()


@pages.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@pages.get("/docs", include_in_schema=False)
def docs(request: Request) -> HTMLResponse:
    """Swagger UI from the `swagger-ui-bundle` package: works on a machine with no internet."""
    return get_swagger_ui_html(openapi_url=request.app.openapi_url or "/openapi.json", title="metarec API",
                               swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                               swagger_css_url="/docs-assets/swagger-ui.css", swagger_favicon_url="")  # fmt: skip


@pages.get("/health")
def health(service: Service) -> dict:
    return {
        "status": "ok",
        "items": service.index.size,
        "approximate_index": service.index.approximate,
        "model": service.algorithm,
        "database": service.store.engine.dialect.name,
        "llm": service.explainer.lm.name if service.explainer is not None else None,
    }


@items.get("/items", response_model=list[ItemOut])
def search_items(service: Service, query: Annotated[str, Query(min_length=1, max_length=1000, pattern=TEXT_PATTERN)],
                 k: Annotated[int, Query(ge=1, le=100)] = 10) -> list[dict]:  # fmt: skip
    return [item_out(service, i, s) for i, s in service.search(query, k)]


@items.post("/items", status_code=201, dependencies=WRITE, responses=_errors(401, 409, 413))
def add_items(service: Service, body: ItemsIn) -> dict:
    added = service.add_items([it.model_dump() for it in body.items])
    return {"added": added, "items": service.index.size}


@users.post("/users", status_code=201, dependencies=WRITE, responses=_errors(401, 409, 413))
def create_user(service: Service, body: UserIn) -> dict:
    service.create_user(body.id, body.profile_text)
    return {"id": body.id}


@users.delete("/users/{user_id}", dependencies=WRITE, responses=_errors(401, 404))
def delete_user(service: Service, user_id: UserId) -> dict:
    """Forget a user on request: events, profile and adapted state go in one transaction; the deletion log
    records when (and a keyed hash of the id, so `metarec train --forget-from` leaves them out next time)."""
    return {"deleted": user_id, "events": service.delete_user(user_id)}


Limit = Annotated[int, Query(ge=1, le=1000, description="interactions per page, oldest first")]
Offset = Annotated[int, Query(ge=0, description="interactions to skip")]


@users.get("/users/{user_id}", dependencies=PRIVATE, responses=_errors(401, 404))
def get_user(service: Service, user_id: UserId, limit: Limit = 100, offset: Offset = 0) -> dict:
    return user_out(service, user_id, limit, offset)


@users.get(
    "/users/{user_id}/recommendations",
    response_model=list[RecommendationOut],
    dependencies=PRIVATE,
    responses=_errors(401, 404),
)
def recommendations(
    service: Service,
    user_id: UserId,
    k: Annotated[int, Query(ge=1, le=100)] = 10,
    explain: Annotated[
        str,
        Query(
            pattern="(?i)^(true|false|1|0|yes|no|on|off|llm)$",
            description="true: nearest own items; llm: + one checked sentence (k at most 20)",
        ),
    ] = "false",
    domain: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="only items of this domain (the user adapts from all)"),
    ] = None,
) -> list[dict]:
    how: bool | str = "llm" if explain.lower() == "llm" else explain.lower() in ("true", "1", "yes", "on")
    if how == "llm" and k > MAX_LLM_K:  # one generation per item, in the request
        raise MetarecError(f"explain=llm writes one sentence per item: ask for k <= {MAX_LLM_K}")
    recs = service.recommend(user_id, k, how, domain)
    return [
        {**item_out(service, r.item, r.score), "because_you_liked": r.because, "matched_profile_words": r.matched_words,
         "explanation": r.sentence, "explanation_source": r.sentence_source}
        for r in recs
    ]  # fmt: skip


@users.post("/users/{user_id}/interactions", status_code=201, dependencies=WRITE, responses=_errors(401, 404, 413))
def add_interactions(service: Service, user_id: UserId, body: EventsIn, idempotency_key: IdempotencyKey = None
                     ) -> dict:  # fmt: skip
    """With an `Idempotency-Key` header a retried request (same key) stores its events once."""
    stored = service.add_interactions(user_id, [e.model_dump() for e in body.events], key=idempotency_key)
    return {"stored": stored}


@users.get("/users/{user_id}/interactions", dependencies=PRIVATE, responses=_errors(401, 404))
def interactions(service: Service, user_id: UserId, limit: Limit = 100, offset: Offset = 0) -> list[dict]:
    return user_out(service, user_id, limit, offset)["history"]
