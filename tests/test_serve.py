"""The service against real databases: SQLite always, PostgreSQL when METAREC_TEST_PG_URL is set
(.ci/run installs and starts a server and sets it). One artefact trained once per session."""

from __future__ import annotations

import datetime
import os
import threading
import time
import uuid

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from metarec.serve.app import create_app
from metarec.serve.background import running

PG = os.environ.get("METAREC_TEST_PG_URL")
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _admin(sql: str) -> None:
    admin = create_engine(PG, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(sql))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'svc.db'}"
        return
    if not PG:
        pytest.skip("METAREC_TEST_PG_URL not set (.ci/run starts PostgreSQL and sets it)")
    name = f"metarec_{uuid.uuid4().hex[:10]}"  # a new empty database per test: no test sees another's rows
    _admin(f"CREATE DATABASE {name}")
    yield PG.rsplit("/", 1)[0] + "/" + name
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def client(artifact, db_url):
    app = create_app(artifact, db_url, token=TOKEN)
    with TestClient(app) as c:
        yield c


def _count(client, table: str) -> int:
    with client.app.state.service.store.engine.connect() as c:
        return c.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar()


def test_health_docs_and_page(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["items"] == 200 and h["database"] in ("sqlite", "postgresql")
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "cdn." not in docs.text  # works offline: the assets come from an installed package
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
    assert "/users/{user_id}/recommendations" in client.get("/openapi.json").json()["paths"]
    assert "metarec" in client.get("/").text


def test_recommend_feedback_adapts_and_history(client, synth):
    assert client.post("/users", json={"id": "alice"}, headers=AUTH).status_code == 201
    before = [r["id"] for r in client.get("/users/alice/recommendations?k=10", headers=AUTH).json()]
    topics = synth.items["topic"].to_numpy()
    space = [f"i{i}" for i in range(200) if topics[i] == 0][:6]
    r = client.post(
        "/users/alice/interactions", json={"events": [{"item": i, "kind": "like"} for i in space]}, headers=AUTH
    )
    assert r.status_code == 201 and r.json() == {"stored": 6}
    recs = client.get("/users/alice/recommendations?k=10&explain=true", headers=AUTH).json()
    after = [x["id"] for x in recs]
    assert after != before and not set(after) & set(space)  # adapted, and liked items are not re-sent
    assert sum(topics[int(i[1:])] == 0 for i in after) >= 5  # the list moved toward what she liked
    assert all(x["because_you_liked"] for x in recs)
    hist = client.get("/users/alice", headers=AUTH).json()["history"]
    assert [h["item"] for h in hist] == space and hist[0]["kind"] == "like"


def test_text_only_user_gets_profile_matches(client, synth):
    client.post("/users", json={"id": "bob", "profile_text": "I enjoy space and rocket stories"}, headers=AUTH)
    recs = client.get("/users/bob/recommendations?k=10&explain=true", headers=AUTH).json()
    topics = synth.items["topic"].to_numpy()
    assert sum(topics[int(r["id"][1:])] == 0 for r in recs) >= 6
    assert any({"space", "rocket"} & set(r["matched_profile_words"]) for r in recs)


def test_new_items_are_searchable_and_recommendable_at_once(client):
    body = {"items": [{"id": "new-1", "title": "Rocket Galaxy Orbit", "text": "A tale of space, alien and planet."}]}
    r = client.post("/items", json=body, headers=AUTH)
    assert r.status_code == 201 and r.json()["items"] == 201
    hits = client.get("/items", params={"query": "rocket galaxy orbit", "k": 3}).json()
    assert hits[0]["id"] == "new-1"
    client.post("/users", json={"id": "carol", "profile_text": "space rocket galaxy orbit alien planet"}, headers=AUTH)
    ids = [x["id"] for x in client.get("/users/carol/recommendations?k=50", headers=AUTH).json()]
    assert "new-1" in ids
    assert client.post("/items", json=body, headers=AUTH).status_code == 409


def test_bad_input_is_rejected_and_stores_nothing(client):
    client.post("/users", json={"id": "dave"}, headers=AUTH)
    n = _count(client, "interactions")
    r = client.get("/users/nobody/recommendations", headers=AUTH)
    assert r.status_code == 404 and "nobody" in r.json()["detail"]
    r = client.post(
        "/users/dave/interactions",
        json={"events": [{"item": "i1", "kind": "click"}, {"item": "ghost", "kind": "click"}]},
        headers=AUTH,
    )
    assert r.status_code == 404 and "ghost" in r.json()["detail"]
    r = client.post(
        "/users/dave/interactions", json={"events": [{"item": "i1", "kind": "rating", "rating": "five"}]}, headers=AUTH
    )
    assert r.status_code == 422 and "rating" in str(r.json()["detail"])
    r = client.post("/users/dave/interactions", json={"events": [{"item": "i1", "kind": "click"}] * 1001}, headers=AUTH)
    assert r.status_code == 422 and "events" in str(r.json()["detail"])
    r = client.get("/users/dave/recommendations?k=0", headers=AUTH)
    assert r.status_code == 422 and "k" in str(r.json()["detail"])
    for private in ("/users/dave", "/users/dave/interactions", "/users/dave/recommendations"):
        r = client.get(private)  # a user's data is private when a token is configured
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert (
        client.post("/users/dave/interactions", json={"events": [{"item": "i1", "kind": "click"}]}).status_code == 401
    )
    assert client.post("/users", json={"id": "dave"}, headers=AUTH).status_code == 409
    assert _count(client, "interactions") == n


def test_crash_mid_request_leaves_database_unchanged(client):
    client.post("/users", json={"id": "erin"}, headers=AUTH)
    service = client.app.state.service
    n = _count(client, "interactions")
    with pytest.raises(RuntimeError, match="injected"):
        service.add_interactions(
            "erin", [{"item": "i1", "kind": "like"}, {"item": "i2", "kind": "click"}], fail_after_insert=True
        )
    assert _count(client, "interactions") == n
    boom = service._adapt

    def failing(*a, **k):
        raise RuntimeError("adaptation crashed")

    service._adapt = failing
    with pytest.raises(RuntimeError):
        service.add_interactions("erin", [{"item": "i3", "kind": "like"}])
    service._adapt = boom
    assert _count(client, "interactions") == n


def test_concurrent_writers_lose_no_event(artifact, db_url):
    app = create_app(artifact, db_url)
    with running(app) as base:
        _concurrent_writes(app, base)


def _concurrent_writes(app, base: str) -> None:
    n_clients, per_client = 8, 10
    for c in range(n_clients):
        httpx.post(f"{base}/users", json={"id": f"w{c}"}).raise_for_status()
    errors = []

    def writer(c: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as h:
            for j in range(per_client):
                r = h.post(
                    f"/users/w{c}/interactions", json={"events": [{"item": f"i{(c * 7 + j) % 200}", "kind": "click"}]}
                )
                if r.status_code != 201:
                    errors.append(r.text)

    threads = [threading.Thread(target=writer, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with app.state.service.store.engine.connect() as c:
        rows = c.execute(
            text(
                "SELECT u.external_id, COUNT(*) FROM interactions i JOIN users u ON u.id = i.user_id "
                "GROUP BY u.external_id"
            )
        ).all()
    assert dict(rows) == {f"w{c}": per_client for c in range(n_clients)}


def test_restart_keeps_added_items_and_users(artifact, tmp_path):
    url = f"sqlite:///{tmp_path / 'persist.db'}"
    with TestClient(create_app(artifact, url)) as c:
        c.post("/items", json={"items": [{"id": "kept", "title": "Ghost Haunted Night"}]})
        c.post("/users", json={"id": "zed"})
        c.post("/users/zed/interactions", json={"events": [{"item": "kept", "kind": "like"}]})
    with TestClient(create_app(artifact, url)) as c:
        assert c.get("/health").json()["items"] == 201
        assert c.get("/users/zed").json()["history"][0]["item"] == "kept"
        assert c.get("/items", params={"query": "ghost haunted night", "k": 1}).json()[0]["id"] == "kept"


def test_added_items_keep_every_feature_source_after_restart(synth, tmp_path):
    """A model whose items are text + structured fields: an item added over the API is placed the same
    way after a restart, because its raw fields are stored with it (not only its rendered text)."""
    from metarec.models import build_model
    from metarec.models.io import save_model

    features = {"text": {"template": "{title}"}, "fields": {"columns": ["genres"]}, "id": {}}
    model = build_model("meta", {"epochs": 2, "dim": 8, "item_features": features}).fit(synth)
    art = save_model(model, tmp_path / "fields-model", synth)
    url = f"sqlite:///{tmp_path / 'fields.db'}"
    item = {"id": "new", "title": "Ghost Night", "fields": {"genres": "space"}}
    with TestClient(create_app(art, url)) as c:
        assert c.post("/items", json={"items": [item]}).status_code == 201
        before = c.app.state.service.index.vectors[-1].copy()
    with TestClient(create_app(art, url)) as c:
        after = c.app.state.service.index.vectors[-1]
    assert np.allclose(before, after, atol=1e-6)
    # the genre field moved the item: without it the vector differs
    alone = model.new_item_vectors(pd.DataFrame({"title": ["Ghost Night"]}))[0][0]
    assert not np.allclose(before[: len(alone)], alone, atol=1e-4)


def test_database_of_another_catalogue_is_refused(artifact, tmp_path):
    """Regression (issue 10): a DB built for another artefact mapped item ids by position."""
    from metarec.data.schema import Dataset
    from metarec.errors import MetarecError
    from metarec.models import build_model
    from metarec.models.io import save_model

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with TestClient(create_app(artifact, url)) as c:
        assert c.get("/health").status_code == 200
    inter = pd.DataFrame({"user_id": np.repeat([f"u{u}" for u in range(40)], 6),
                          "item_id": [f"x{(3 * u + j) % 30}" for u in range(40) for j in range(6)]})  # fmt: skip
    items = pd.DataFrame({"item_id": [f"x{i}" for i in range(30)], "title": [f"thing number {i}" for i in range(30)]})
    ds = Dataset.from_frames("other", inter, items)
    art2 = save_model(build_model("meta", {"epochs": 1, "dim": 8}).fit(ds), tmp_path / "other", ds)
    with pytest.raises(MetarecError, match=r"another catalogue.*item #0 is 'i0' in the database, 'x0'.*--db"):
        create_app(art2, url)
    with TestClient(create_app(artifact, url)) as c:  # the right artefact still starts on it
        assert c.get("/health").json()["items"] == 200
        with c.app.state.service.store.engine.begin() as con:  # a database from before fingerprints
            con.execute(text("DELETE FROM service_meta"))
    with TestClient(create_app(artifact, url)) as c:  # same catalogue: adopted, fingerprint written
        assert c.get("/health").status_code == 200 and _count(c, "service_meta") == 1
    with pytest.raises(MetarecError, match="another catalogue"):
        create_app(art2, url)


def test_serve_never_prints_the_database_password(monkeypatch, artifact):
    from typer.testing import CliRunner

    import metarec.serve.app
    from metarec.cli import app
    from metarec.serve.storage import display_url

    assert display_url("postgresql+psycopg://bob:hunter2@db:5432/x") == "postgresql+psycopg://bob:***@db:5432/x"
    monkeypatch.setattr(metarec.serve.app, "create_app", lambda *a, **k: object())  # no real server
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: None)
    url = "postgresql+psycopg://bob:hunter2@db.example:5432/recs"
    res = CliRunner().invoke(app, ["serve", "--artifact", str(artifact), "--db", url])
    assert res.exit_code == 0, res.output
    assert "bob:***@db.example" in res.output and "hunter2" not in res.output


@pytest.mark.parametrize(
    ("method", "path", "body", "needle"),
    [
        ("post", "/users/dave/interactions", '{"events": [{"item": "i1", "kind": "rating", "rating": NaN}]}', "rating"),
        (
            "post",
            "/users/dave/interactions",
            '{"events": [{"item": "i1", "kind": "rating", "rating": Infinity}]}',
            "rating",
        ),
        (
            "post",
            "/users/dave/interactions",
            '{"events": [{"item": "i1", "kind": "rating", "rating": 1e999}]}',
            "rating",
        ),
        (
            "post",
            "/users/dave/interactions",
            '{"events": [{"item": "i1", "kind": "rating", "rating": true}]}',
            "rating",
        ),
        ("post", "/users/dave/interactions", '{"events": [{"item": "i1", "kind": "rating", "rating": "5"}]}', "rating"),
        ("post", "/users/dave/interactions", '{"events": [{"item": "i1", "knd": "dislike"}]}', "kind"),
        ("post", "/users/dave/interactions", '{"events": [{"item": "i1\\u0000", "kind": "like"}]}', "item"),
        ("post", "/users", '{"id": "a\\u0000b"}', "id"),
        ("post", "/users", '{"id": "a/b"}', "id"),
        ("post", "/users", '{"id": "   "}', "id"),
        ("post", "/users", '{"id": "new", "profile": "typo of profile_text"}', "profile"),
        ("post", "/items", '{"items": [{"id": "n1", "title": "t", "fields": {"genres": "a\\u0000"}}]}', "genres"),
        ("get", "/users/a%00b", None, "user_id"),
        ("get", "/items?query=%20%20", None, "query"),
        ("get", "/items?query=a%00b", None, "query"),
    ],
)
def test_malformed_requests_are_422_and_store_nothing(client, method, path, body, needle):
    """Regression (issue 10, items 5 and 7): each of these was a 500, or silently accepted."""
    client.post("/users", json={"id": "dave"}, headers=AUTH)
    before = (_count(client, "interactions"), _count(client, "users"), _count(client, "items"))
    headers = {**AUTH, "Content-Type": "application/json"}
    r = client.request(method.upper(), path, content=body, headers=headers)
    assert r.status_code == 422, (r.status_code, r.text)
    assert needle in r.text
    assert (_count(client, "interactions"), _count(client, "users"), _count(client, "items")) == before


def test_token_and_body_size_are_checked_before_the_body_is_read(artifact, tmp_path):
    """Regression (issue 10, items 6 and 9): a 100 MB body was read (and held) even unauthenticated."""
    app = create_app(artifact, f"sqlite:///{tmp_path / 'g.db'}", token=TOKEN, max_body=10_000)
    with TestClient(app) as c:
        big = b'{"id": "' + b"x" * 50_000 + b'"}'
        r = c.post("/users", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"  # before the size
        r = c.post("/users", content=big, headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 413 and "10,000 bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: counted while it streams
            for _ in range(10):
                yield b" " * 2_000

        r = c.post("/users", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        assert c.post("/users", json={"id": "ok"}, headers={"Authorization": f"bearer {TOKEN}"}).status_code == 201
        assert c.post("/users", json={"id": "no"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert _count(c, "users") == 1


def test_liking_an_item_added_after_training_moves_the_user(client, synth):
    """Regression (issue 10, item 3): a new item joined no support set until a retrain."""
    body = {"items": [{"id": "fresh", "title": "Space Rocket Galaxy Orbit", "text": "an alien planet in orbit"}]}
    assert client.post("/items", json=body, headers=AUTH).status_code == 201
    for uid in ("nina", "empty"):
        client.post("/users", json={"id": uid}, headers=AUTH)
    r = client.post("/users/nina/interactions", json={"events": [{"item": "fresh", "kind": "like"}]}, headers=AUTH)
    assert r.status_code == 201
    service = client.app.state.service
    nina, empty = service._state("nina")[1], service._state("empty")[1]
    assert not np.allclose(nina, empty)  # the like reached the inner loop
    topic = dict(zip(synth.items["item_id"], synth.items["topic"], strict=True))
    space = topic["i" + str(int(np.flatnonzero(synth.items["title"].str.contains("Space|Rocket|Galaxy"))[0]))]

    def share(uid: str) -> float:
        recs = client.get(f"/users/{uid}/recommendations?k=20", headers=AUTH).json()
        return float(np.mean([topic.get(x["id"]) == space for x in recs]))

    assert share("nina") > share("empty")
    assert "fresh" not in [x["id"] for x in client.get("/users/nina/recommendations?k=50", headers=AUTH).json()]


def test_cached_state_always_matches_the_stored_history(artifact, db_url):
    """Regression (issue 10, item 4): concurrent batches for one user, and readers in between; at the
    end the cached state is the one a fresh adaptation on the stored history gives."""
    app = create_app(artifact, db_url)
    with TestClient(app) as c:
        c.post("/users", json={"id": "busy"})
        service = c.app.state.service

        def write(t: int) -> None:
            for j in range(4):
                service.add_interactions("busy", [{"item": f"i{(t * 13 + j * 5) % 200}", "kind": "like"}])
                service.recommend("busy", 5)

        threads = [threading.Thread(target=write, args=(t,)) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        cached_state, cached_query = service._state("busy")
        with service.store.session_scope() as s:
            fresh_state, fresh_query = service._adapt(s, service._user(s, "busy"))
        assert cached_state.payload["version"] == fresh_state.payload["version"]
        assert sorted(cached_state.payload["positives"]) == sorted(fresh_state.payload["positives"])
        assert np.allclose(cached_query, fresh_query, atol=1e-5)
        assert len(service.history("busy")[1]) == 24


def test_new_items_are_found_by_every_field_they_came_with(client):
    """Regression (issue 10, item 8): search read only what the item template renders ({title})."""
    body = {"items": [{"id": "vx", "title": "Blue Thing", "text": "lava flows down the mountain",
                       "fields": {"genres": "volcano eruption documentary"}}]}  # fmt: skip
    assert client.post("/items", json=body, headers=AUTH).status_code == 201
    hits = client.get("/items", params={"query": "volcano eruption lava documentary", "k": 3}).json()
    assert hits[0]["id"] == "vx"
    service = client.app.state.service  # explanations match profile words against every field too
    [(_, words)] = service._explain(
        [service.item_ids.index("vx")], {"positives": [], "profile": "I love volcano films"}
    )
    assert words == ["volcano"]


def test_history_is_paginated(client):
    client.post("/users", json={"id": "pat"}, headers=AUTH)
    events = [{"item": f"i{j}", "kind": "click"} for j in range(5)]
    client.post("/users/pat/interactions", json={"events": events}, headers=AUTH)
    page = client.get("/users/pat/interactions?limit=2&offset=1", headers=AUTH).json()
    assert [h["item"] for h in page] == ["i1", "i2"]
    assert len(client.get("/users/pat", headers=AUTH).json()["history"]) == 5
    assert client.get("/users/pat/interactions?limit=0", headers=AUTH).status_code == 422


def test_fuzzed_requests_never_5xx_and_match_the_schema(artifact, db_url):
    """Schemathesis against the app's own OpenAPI schema (bounded, fixed seed): no 5xx, every status
    code documented, every response body in its documented shape, on SQLite and PostgreSQL."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    app = create_app(artifact, db_url, token=TOKEN)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checks = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7

    def fuzz(op) -> None:
        @given(case=op.as_strategy())
        @settings(max_examples=25, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def run(case):
            try:
                case.call_and_validate(headers=AUTH, checks=checks)
            except BaseException as exc:  # collected, so one run reports every operation's failures
                failures.append(f"{op.label}: {str(exc)[:300]}")

        run()

    for op in operations:
        fuzz(op)
    assert not failures, failures[:5]


def test_new_items_and_feedback_together_never_deadlock(artifact, db_url):
    """Regression: add_items took the service lock then the store's write lock, feedback the other way
    round (found by the soak benchmark: the server hung under a mixed load). No app around the service,
    so a deadlock fails the test instead of hanging its teardown."""
    from metarec.serve.service import RecommenderService

    service = RecommenderService(artifact, db_url)
    service.create_user("mix", None)

    def items(t: int) -> None:
        for j in range(6):
            service.add_items([{"id": f"dl-{t}-{j}", "title": f"Space Rocket {t} {j}"}])

    def feedback(t: int) -> None:
        for j in range(6):
            service.add_interactions("mix", [{"item": f"i{(t * 7 + j) % 200}", "kind": "like"}])

    threads = [threading.Thread(target=f, args=(t,), daemon=True) for t in range(3) for f in (items, feedback)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "deadlock: threads still waiting after 60 s"
    assert service.index.size == 200 + 18 and len(service.history("mix")[1]) == 18
    service.store.engine.dispose()


def test_a_write_extends_the_cached_state_without_rereading_the_history(client):
    """Regression (issue 10, item 11): each feedback re-read the user's whole history."""
    from sqlalchemy import event

    service = client.app.state.service
    client.post("/users", json={"id": "inc"}, headers=AUTH)
    for j in range(3):
        events = [{"item": f"i{j * 7 + d}", "kind": "like"} for d in range(3)]
        assert client.post("/users/inc/interactions", json={"events": events}, headers=AUTH).status_code == 201
    seen: list[str] = []

    def log(conn, cursor, statement, *args):
        seen.append(" ".join(statement.split()).lower())

    event.listen(service.store.engine, "before_cursor_execute", log)
    try:
        body = {"events": [{"item": "i150", "kind": "rating", "rating": 5}, {"item": "i151", "kind": "dislike"}]}
        assert client.post("/users/inc/interactions", json=body, headers=AUTH).status_code == 201
    finally:
        event.remove(service.store.engine, "before_cursor_execute", log)
    reads = [q for q in seen if q.startswith("select") and "from interactions" in q]
    assert reads and all("max(interactions.id)" in q for q in reads), reads  # only the cheap version check
    cached_state, cached_query = service._state("inc")
    with service.store.session_scope() as s:
        fresh_state, fresh_query = service._adapt(s, service._user(s, "inc"))
    assert cached_state.payload["version"] == fresh_state.payload["version"]
    assert sorted(cached_state.payload["positives"]) == sorted(fresh_state.payload["positives"])
    assert (
        cached_state.payload["seen"] == fresh_state.payload["seen"]
        and service.item_ids.index("i151") in fresh_state.payload["seen"]
    )
    assert np.allclose(cached_query, fresh_query, atol=1e-5)


def test_row_buffer_appends_without_copying_the_matrix_each_time():
    from metarec.serve.index import RowBuffer

    buf = RowBuffer(np.arange(6, dtype=np.float32).reshape(3, 2))
    before = buf.view
    grown = 0
    for j in range(1000):
        base = buf._buf
        buf.append(np.full((1, 2), j, np.float32))
        grown += buf._buf is not base
    assert len(buf) == 1003 and buf.view[-1, 0] == 999 and buf.view[2, 1] == 5
    assert grown <= 12  # a quarter more each time: logarithmically many copies, not one per row
    assert before.tolist() == [[0, 1], [2, 3], [4, 5]]  # a reader's earlier view is untouched


def test_adapted_states_in_memory_are_bounded(artifact, tmp_path):
    """At most max_cached_users states stay in memory; a user pushed out is re-adapted from the database."""
    from metarec.serve.service import RecommenderService

    service = RecommenderService(artifact, f"sqlite:///{tmp_path / 'lru.db'}", max_cached_users=2)
    for u in ("a", "b", "c"):
        service.create_user(u, None)
        service.add_interactions(u, [{"item": f"i{3 * len(u) + ord(u) % 7}", "kind": "like"}])
    assert len(service.states) == 2 and service.user_index["a"] not in service.states  # the oldest left
    before = [r.item for r in service.recommend("b", 5)]  # b is now the most recent: c would leave next
    service.recommend("a", 5)  # re-adapted from its stored history
    assert set(service.states) == {service.user_index["b"], service.user_index["a"]}
    assert [r.item for r in service.recommend("b", 5)] == before
    with service.store.session_scope() as s:
        _, fresh = service._adapt(s, service._user(s, "a"))
    assert np.allclose(service._state("a")[1], fresh, atol=1e-6)
    service.store.engine.dispose()


def test_items_added_at_serve_time_warm_up_from_their_first_users(synth, tmp_path):
    """With a warm-up model, likes on a new item move its index row toward its adopters' taste: the
    item's score rises for users like them more than for the others, and a restart rebuilds it."""
    from metarec.models import build_model
    from metarec.models.io import save_model
    from metarec.serve.service import RecommenderService

    features = {"text": {"template": "{title}. {description}"}, "id": {}}
    params = {"epochs": 6, "dim": 16, "item_features": features, "item_warmup": 0.2, "warmup_epochs": 20}
    art = save_model(build_model("meta", params).fit(synth), tmp_path / "m", synth)
    url = f"sqlite:///{tmp_path / 'warm.db'}"
    service = RecommenderService(art, url)
    service.add_items([{"id": "new1", "title": "Untitled", "text": "A film."}])  # no topic words
    item = len(service.item_ids) - 1
    fav, ids = synth.users["favourite_topic"].to_numpy(), synth.users["user_id"].to_numpy()
    fans, others = ids[fav == 0], ids[fav != 0]
    adopters, alike, unlike = fans[:8], fans[8:20], others[:20]
    for u in [*adopters, *alike, *unlike]:
        service.create_user(u, None)

    def mean_score(users) -> float:
        return float(np.mean([service.index.vectors[item] @ service._state(u)[1] for u in users]))

    before = mean_score(alike), mean_score(unlike)
    for u in adopters:
        service.add_interactions(u, [{"item": "new1", "kind": "like"}])
    after = mean_score(alike), mean_score(unlike)
    assert after[0] > before[0] and after[0] - before[0] > after[1] - before[1], (before, after)
    again = RecommenderService(art, url)
    assert np.allclose(again.index.vectors[item], service.index.vectors[item], atol=1e-5)


@pytest.mark.parametrize("exact_below", [10_000, 100])
def test_index_update_replaces_a_row_exactly_and_in_hnsw(exact_below):
    from metarec.serve.index import ItemIndex

    rng = np.random.default_rng(0)
    index = ItemIndex(rng.normal(size=(300, 8)).astype(np.float32), exact_below=exact_below)
    assert index.approximate == (exact_below == 100)
    q = rng.normal(size=8).astype(np.float32)
    index.update(np.array([5]), 10 * q)
    ids, scores = index.search(q, 3)
    assert ids[0] == 5 and np.isclose(scores[0], 10 * q @ q, rtol=1e-4)
    with pytest.raises(IndexError):
        index.update(np.array([300]), q)


def test_a_sequence_aware_model_explains_with_what_it_attended_to(synth, tmp_path):
    """With support_order, the service adapts on the user's events in order and cites the items the
    set encoder weighed most (the model's attention), not merely the nearest in text space."""
    from metarec.models import build_model
    from metarec.models.io import save_model

    features = {"text": {"template": "{title}. {description}"}, "id": {}}
    model = build_model("meta", {"epochs": 4, "dim": 16, "item_features": features, "set_encoder": True,
                                 "support_order": True}).fit(synth)  # fmt: skip
    path = save_model(model, tmp_path / "seq", synth)
    with TestClient(create_app(path, f"sqlite:///{tmp_path / 's.db'}", token=TOKEN)) as c:
        c.post("/users", json={"id": "carol"}, headers=AUTH)
        liked = [f"i{i}" for i in range(8)]
        c.post("/users/carol/interactions", json={"events": [{"item": i, "kind": "like"} for i in liked]}, headers=AUTH)
        service = c.app.state.service
        state, _ = service._state("carol")
        attended = state.payload["attended"]
        assert sorted(attended) == list(range(8))  # every liked item, heaviest first
        weights = dict(model.attention(state.history)[0])
        assert abs(sum(weights.values()) - 1) < 1e-5 and attended[0] == max(weights, key=weights.get)
        recs = c.get("/users/carol/recommendations?k=5&explain=true", headers=AUTH).json()
        cited = {x for r in recs for x in r["because_you_liked"]}
        assert cited and cited <= {service.titles[i] for i in attended[:3]}  # titles of the 3 most attended


def _rows_mentioning(client, needles: list[str]) -> list[tuple[str, str]]:
    """(table, cell) of every cell in every table of the service database that contains a needle."""
    from sqlalchemy import inspect

    engine = client.app.state.service.store.engine
    found = []
    with engine.connect() as c:
        for table in inspect(engine).get_table_names():
            for row in c.execute(text(f"SELECT * FROM {table}")):
                found += [(table, str(v)) for v in row if any(n in str(v) for n in needles)]
    return found


def test_delete_user_leaves_no_row_that_mentions_them(client):
    """DELETE /users/{id}: events, profile and user row go in one transaction; the log keeps only when and a
    keyed hash; the user is unknown afterwards and a new user with that id starts empty."""
    from metarec.data.pseudonym import keyed_hash

    for uid, profile in (("zoe-7f3", "I live in Paris and love ghost stories"), ("keep-me", "")):
        assert client.post("/users", json={"id": uid, "profile_text": profile}, headers=AUTH).status_code == 201
        events = {"events": [{"item": f"i{i}", "kind": "like"} for i in range(5)]}
        assert client.post(f"/users/{uid}/interactions", json=events, headers=AUTH).status_code == 201
    assert client.get("/users/zoe-7f3/recommendations", headers=AUTH).status_code == 200  # a cached state
    uid_row = client.app.state.service.user_index["zoe-7f3"]
    assert client.delete("/users/zoe-7f3").status_code == 401
    r = client.delete("/users/zoe-7f3", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"deleted": "zoe-7f3", "events": 5}
    assert _rows_mentioning(client, ["zoe-7f3", "Paris"]) == []
    with client.app.state.service.store.engine.connect() as c:
        assert c.execute(text("SELECT COUNT(*) FROM interactions WHERE user_id = :u"), {"u": uid_row}).scalar() == 0
        subjects = [row[0] for row in c.execute(text("SELECT subject FROM deletions"))]
    key = client.app.state.service.store.deletion_key()
    assert subjects == keyed_hash(key, ["zoe-7f3"])
    for method, path in (("get", "/users/zoe-7f3"), ("get", "/users/zoe-7f3/recommendations"),
                         ("delete", "/users/zoe-7f3")):  # fmt: skip
        assert client.request(method, path, headers=AUTH).status_code == 404
    assert len(client.get("/users/keep-me", headers=AUTH).json()["history"]) == 5  # nobody else touched
    assert client.post("/users", json={"id": "zoe-7f3"}, headers=AUTH).status_code == 201
    assert client.get("/users/zoe-7f3", headers=AUTH).json() == {"id": "zoe-7f3", "profile_text": "", "history": []}


def test_a_deleted_training_user_loses_their_training_history(client, artifact, db_url):
    service = client.app.state.service
    assert "u3" in service.train_users
    client.post("/users", json={"id": "u3"}, headers=AUTH)
    assert service._state("u3")[0].payload["seen"]  # served from their training history
    assert client.delete("/users/u3", headers=AUTH).json()["events"] == 0
    client.post("/users", json={"id": "u3"}, headers=AUTH)
    assert not service._state("u3")[0].payload["seen"]
    fresh = create_app(artifact, db_url, token=TOKEN)  # a restarted (or another) replica reads the log
    assert "u3" not in fresh.state.service.train_users and "u4" in fresh.state.service.train_users


def test_train_forget_from_leaves_deleted_users_out_of_the_next_artefact(client, db_url, tmp_path):
    import json

    from typer.testing import CliRunner

    from metarec.cli import app

    client.post("/users", json={"id": "u5"}, headers=AUTH)
    assert client.delete("/users/u5", headers=AUTH).status_code == 200
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "f"\nseed = 0\n[dataset]\nsource = "synthetic"\nn_users = 300\nn_items = 200\n'
                   '[protocols.cold-user]\n[models.popularity]\n')  # fmt: skip
    res = CliRunner().invoke(app, ["train", "-c", str(cfg), "--model", "popularity", "--out", str(tmp_path / "m"),
                                   "--forget-from", db_url])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "left out 1 user(s)" in res.output
    users = json.loads((tmp_path / "m" / "ids.json").read_text())["user_ids"]
    assert "u5" not in users and "u6" in users and len(users) == 299


def test_a_state_adapted_before_a_deletion_is_never_cached_after_it(client):
    """A reader that adapted a user just before their deletion finishes after it: its state must not be
    cached (a new user with the same id would be served the deleted user's history)."""
    service = client.app.state.service
    client.post("/users", json={"id": "racer"}, headers=AUTH)
    events = {"events": [{"item": f"i{i}", "kind": "like"} for i in range(4)]}
    client.post("/users/racer/interactions", json=events, headers=AUTH)
    uid = service.user_index["racer"]
    stale = service.states[uid]
    assert client.delete("/users/racer", headers=AUTH).status_code == 200
    assert service._remember("racer", uid, stale) is stale  # the late reader still answers its own request
    assert uid not in service.states and "racer" not in service.user_index
    client.post("/users", json={"id": "racer"}, headers=AUTH)
    assert client.get("/users/racer", headers=AUTH).json()["history"] == []
    assert not service._state("racer")[0].payload["seen"]


@pytest.fixture(scope="module")
def domain_artifact(tmp_path_factory, synth):
    """A model of a catalogue with two domains: even topics and odd topics."""
    import dataclasses

    from metarec.models import build_model
    from metarec.models.io import save_model

    items = synth.items.assign(domain=np.where(synth.items["topic"].to_numpy() % 2 == 0, "even", "odd"))
    ds = dataclasses.replace(synth, items=items)
    features = {"text": {"template": "{title}. {description}"}, "id": {}}
    model = build_model("meta", {"epochs": 4, "dim": 16, "item_features": features}).fit(ds)
    return save_model(model, tmp_path_factory.mktemp("domains") / "m", ds), items["domain"].to_numpy()


def test_recommend_within_a_domain_adapting_from_all(domain_artifact, tmp_path):
    art, domain_of = domain_artifact
    with TestClient(create_app(art, f"sqlite:///{tmp_path / 'd.db'}")) as c:
        c.post("/users", json={"id": "eve"})
        even = [x["id"] for x in c.get("/users/eve/recommendations", params={"k": 10, "domain": "even"}).json()]
        assert len(even) == 10 and all(domain_of[int(i[1:])] == "even" for i in even)
        odd_likes = [f"i{i}" for i in range(200) if domain_of[i] == "odd"][:8]
        c.post("/users/eve/interactions", json={"events": [{"item": i, "kind": "like"} for i in odd_likes]})
        recs = c.get("/users/eve/recommendations", params={"k": 10, "domain": "even"}).json()
        assert {r["domain"] for r in recs} == {"even"}
        assert [r["id"] for r in recs] != even  # what she did in the other domain moved her here too
        odd = c.get("/users/eve/recommendations", params={"k": 10, "domain": "odd"}).json()
        assert {r["domain"] for r in odd} == {"odd"} and not {r["id"] for r in odd} & set(odd_likes)
        r = c.get("/users/eve/recommendations", params={"domain": "books"})
        assert r.status_code == 422 and "'even', 'odd'" in r.json()["detail"][0]["msg"]
        body = {"items": [{"id": "shelf-1", "title": "A new kind", "fields": {"domain": "books"}}]}
        assert c.post("/items", json=body).status_code == 201
        got = c.get("/users/eve/recommendations", params={"k": 5, "domain": "books"}).json()
        assert [(r["id"], r["domain"]) for r in got] == [("shelf-1", "books")]


def test_idempotency_key_stores_a_retried_batch_once(client):
    """POST /users/{id}/interactions with an Idempotency-Key: the same key and events again (a retry after a
    lost answer or a dead replica) store nothing more and answer as the first time; keys are per user; the
    key with other events is a 422; other writes refuse the header instead of ignoring it; keys expire
    after a day and go with the user."""
    for uid in ("ida", "ben"):
        assert client.post("/users", json={"id": uid}, headers=AUTH).status_code == 201
    events = {"events": [{"item": "i1", "kind": "like"}, {"item": "i2", "kind": "click"}]}
    keyed = {**AUTH, "Idempotency-Key": "req-1"}
    first = client.post("/users/ida/interactions", json=events, headers=keyed)
    again = client.post("/users/ida/interactions", json=events, headers=keyed)
    assert first.status_code == again.status_code == 201 and first.json() == again.json() == {"stored": 2}
    assert len(client.get("/users/ida", headers=AUTH).json()["history"]) == 2
    other = client.post("/users/ida/interactions", json=events, headers={**AUTH, "Idempotency-Key": "req-2"})
    assert other.status_code == 201 and len(client.get("/users/ida", headers=AUTH).json()["history"]) == 4
    assert client.post("/users/ben/interactions", json=events, headers=keyed).status_code == 201  # ben's own key
    changed = {"events": [{"item": "i3", "kind": "like"}]}
    reused = client.post("/users/ida/interactions", json=changed, headers=keyed)
    assert reused.status_code == 422 and "other events" in str(reused.json())
    assert _count(client, "interactions") == 6 and _count(client, "request_keys") == 3
    refused = client.post("/users", json={"id": "cy"}, headers=keyed)
    assert refused.status_code == 400 and "Idempotency-Key" in refused.json()["detail"]
    assert client.get("/users/cy", headers=AUTH).status_code == 404
    empty = {**AUTH, "Idempotency-Key": ""}
    assert client.post("/users/ida/interactions", json=events, headers=empty).status_code == 422
    with client.app.state.service.store.engine.begin() as c:  # two days later, req-1 of ida is forgotten
        c.execute(text("UPDATE request_keys SET created_at = :t"), {"t": datetime.datetime(2000, 1, 1)})
    assert client.post("/users/ida/interactions", json=events, headers=keyed).status_code == 201
    assert len(client.get("/users/ida", headers=AUTH).json()["history"]) == 6
    assert client.delete("/users/ida", headers=AUTH).status_code == 200
    assert client.delete("/users/ben", headers=AUTH).status_code == 200
    assert _count(client, "request_keys") == 0
