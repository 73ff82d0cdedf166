"""REST API (FastAPI) and the web page: recommend, take feedback and adapt, add items, search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from metarec.errors import MetarecError
from metarec.serve.service import Conflict, NotFound, RecommenderService

MAX_BATCH = 1000
STATIC = Path(__file__).parent / "static"


class ItemIn(BaseModel):
    id: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=500)
    text: str | None = Field(default=None, max_length=20_000)
    fields: dict[str, str] | None = Field(default=None, description="more fields for the item template, e.g. genres")


class ItemsIn(BaseModel):
    items: list[ItemIn] = Field(min_length=1, max_length=MAX_BATCH)


class UserIn(BaseModel):
    id: str = Field(min_length=1, max_length=200)
    profile_text: str | None = Field(default=None, max_length=5_000)


class EventIn(BaseModel):
    item: str = Field(min_length=1, max_length=200)
    kind: Literal["click", "like", "dislike", "rating"] = "click"
    rating: float | None = Field(default=None, ge=0, le=10)


class EventsIn(BaseModel):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class ItemOut(BaseModel):
    id: str
    title: str
    score: float


class RecommendationOut(ItemOut):
    because_you_liked: list[str] = []
    matched_profile_words: list[str] = []


def create_app(artifact: str | Path, db_url: str, token: str | None = None, exact_below: int = 20_000) -> FastAPI:
    service = RecommenderService(artifact, db_url, exact_below=exact_below)
    app = FastAPI(title="metarec", description="LLM-understood, meta-learned recommendations", version="0.1.0")
    app.state.service = service

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        if token and authorization != f"Bearer {token}":
            raise HTTPException(401, "this endpoint writes: send 'Authorization: Bearer <token>'")

    def run(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except Conflict as exc:
            raise HTTPException(409, str(exc)) from None
        except MetarecError as exc:
            raise HTTPException(422, str(exc)) from None

    def item_out(i: int, score: float) -> dict:
        return {"id": service.item_ids[i], "title": service.titles[i], "score": score}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "items": service.index.size,
            "approximate_index": service.index.approximate,
            "model": service.model.algorithm,
            "database": service.store.engine.dialect.name,
        }

    @app.get("/items", response_model=list[ItemOut])
    def search_items(query: Annotated[str, Query(min_length=1, max_length=1000)],
                     k: Annotated[int, Query(ge=1, le=100)] = 10) -> list[dict]:  # fmt: skip
        return [item_out(i, s) for i, s in run(service.search, query, k)]

    @app.post("/items", status_code=201, dependencies=[Depends(require_token)])
    def add_items(body: ItemsIn) -> dict:
        added = run(service.add_items, [it.model_dump() for it in body.items])
        return {"added": added, "items": service.index.size}

    @app.post("/users", status_code=201, dependencies=[Depends(require_token)])
    def create_user(body: UserIn) -> dict:
        run(service.create_user, body.id, body.profile_text)
        return {"id": body.id}

    @app.get("/users/{user_id}")
    def get_user(user_id: str) -> dict:
        user, rows = run(service.history, user_id)
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

    @app.get("/users/{user_id}/recommendations", response_model=list[RecommendationOut])
    def recommendations(user_id: str, k: Annotated[int, Query(ge=1, le=100)] = 10, explain: bool = False) -> list[dict]:
        recs = run(service.recommend, user_id, k, explain)
        return [{**item_out(r.item, r.score), "because_you_liked": r.because, "matched_profile_words": r.matched_words}
                for r in recs]  # fmt: skip

    @app.post("/users/{user_id}/interactions", status_code=201, dependencies=[Depends(require_token)])
    def add_interactions(user_id: str, body: EventsIn) -> dict:
        stored = run(service.add_interactions, user_id, [e.model_dump() for e in body.events])
        return {"stored": stored}

    @app.get("/users/{user_id}/interactions")
    def interactions(user_id: str) -> list[dict]:
        return get_user(user_id)["history"]

    return app
