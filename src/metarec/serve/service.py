"""The recommender service: a trained artefact, the database, the indexes and per-user states.

Requests change the database inside one transaction; the in-memory parts (index, user states) are
updated only after the transaction has committed, under a lock, so a failed request leaves
neither the database nor memory half-changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from metarec.data.pseudonym import keyed_hash
from metarec.errors import MetarecError
from metarec.models.base import Servable, UserState
from metarec.models.io import load_model
from metarec.serve.index import ItemIndex, RowBuffer
from metarec.serve.storage import (
    Deletion,
    Interaction,
    Item,
    RequestKey,
    ServiceMeta,
    Store,
    User,
    display_url,
    keys_expired_before,
)

log = logging.getLogger(__name__)
POSITIVE = {"click", "like"}
#: a new item warms up from its first users with a positive event, at most this many
EARLY_ADOPTERS = 50
KINDS = {"click", "like", "dislike", "rating"}
_WORD = re.compile(r"[^\W\d_]{4,}", re.UNICODE)
_STOP = {"with", "that", "this", "from", "have", "like", "enjoy", "love", "about", "their", "they", "them",
         "what", "when", "which", "year", "years", "old", "stories", "films", "movies", "things"}  # fmt: skip


class NotFound(MetarecError):
    pass


class Conflict(MetarecError):
    pass


@dataclass
class Explained:
    item: int
    score: float
    because: list[str]
    matched_words: list[str]
    sentence: str | None = None  # explain="llm": one checked sentence (or the template's)
    sentence_source: str | None = None  # "llm" or "template"


class RecommenderService:
    def __init__(self, artifact: str | Path, db_url: str, exact_below: int = 20_000, profile_weight: float = 2.0,
                 max_cached_users: int = 100_000, llm: str | None = None, llm_threads: int = 1,
                 shared: bool = False):  # fmt: skip
        #: one of several replicas over one database (Ray Serve): another replica may have added items or
        #: events, so items are synced from the database before use and user states are re-adapted on every
        #: read (the LRU still feeds a writer's extension, guarded by its version check)
        self.shared = shared
        self._sync_lock = threading.RLock()  # add_items holds it too: a sync must not index its items first
        model, info = load_model(artifact)
        if not isinstance(model, Servable):
            raise MetarecError(
                f"{artifact} holds a {info['model']!r} model, which cannot be served; train a meta model"
            )
        view = model.item_text()
        if view is None:
            raise MetarecError("serving needs a model with an item text source (item_features.text)")
        self.model: Servable = model
        self.algorithm = info["params"].get("algorithm")  # shown by /health
        self.text, text = view  # the item text source (template + encoder) and the catalogue's text vectors
        self.store = Store(db_url)
        self.lock = threading.RLock()
        self.profile_weight = profile_weight
        self.item_ids: list[str] = list(info["item_ids"])
        self.titles: list[str] = list(info.get("item_titles") or self.item_ids)
        # each item's domain (the catalogue it belongs to); items added over the API name theirs in `fields`
        self.domains: list[str | None] = list(info.get("item_domains") or [None] * len(self.item_ids))
        self._domain_ids: dict[str, np.ndarray] = {}  # domain -> its item ids (cleared when items are added)
        self.train_users = {u: i for i, u in enumerate(info["user_ids"])}
        self.facts: dict[str, list[str]] = info.get("item_facts") or {}  # column -> value per trained item
        self.explainer = self._explainer(llm, llm_threads) if llm else None
        self._text_rows = RowBuffer(text)
        E, b = self.model.item_vectors()
        self._seed_items()
        self.index = ItemIndex(self._index_rows(E, b, text), exact_below=exact_below)
        # (E, b) of items added after training, in id order from n_items_: they can enter a user's support
        # replaced as one tuple, never mutated: readers take a consistent snapshot without a lock
        self._added_E, self._added_b = (
            RowBuffer(np.zeros((0, E.shape[1]), np.float32)),
            RowBuffer(np.zeros(0, np.float32)),
        )
        self.added: tuple[np.ndarray, np.ndarray] = (self._added_E.view, self._added_b.view)
        self.text_index = ItemIndex(text, exact_below=exact_below)
        # user id -> (state, query vector), least recently used first; a user pushed out is re-adapted from
        # the database on their next request, so memory stays bounded however many users come by
        self.states: OrderedDict[int, tuple[UserState, np.ndarray]] = OrderedDict()
        self.max_cached_users = max_cached_users
        self.user_index: dict[str, int] = {}  # external -> database id (ids never change once created)
        self.profiles: dict[str, np.ndarray] = {}  # profile text -> its vector
        self._deletions_seen = 0  # id of the last deletion-log row applied to `train_users`
        #: database ids of users deleted while this process runs: a reader that adapted one of them just before
        #: the deletion must not cache that state afterwards (SQLite may even give the id to a new user)
        self._gone: set[int] = set()
        self._forget_deleted()
        self._load_added_items()  # and warms them up from their first users (reads user states)

    def _explainer(self, llm: str, threads: int) -> Any:
        """The generative LM and the checker over this catalogue's titles and facts (`metarec[llm]`)."""
        from metarec.llm import CausalLM, GroundedExplainer
        from metarec.llm.explain import GENERIC

        vocabulary = {v for col in self.facts.values() for value in col for v in _fact_values(value)}
        return GroundedExplainer(CausalLM(llm, threads=threads), self.titles,
                                 [v for v in vocabulary if not v.isdigit() and v.lower() not in GENERIC])  # fmt: skip

    @property
    def text_vectors(self) -> np.ndarray:
        """The LLM text vectors of every item, trained and added, in id order."""
        return self._text_rows.view

    # ------------------------------------------------------------------ catalogue
    def _index_rows(self, E: np.ndarray, b: np.ndarray, text: np.ndarray) -> np.ndarray:
        # [e_i, b_i, w * x_i] . [h, 1, p] = model score + w * cos(profile text, item text)
        return np.hstack([E, b[:, None], self.profile_weight * text]).astype(np.float32)

    def _seed_items(self) -> None:
        """Write the artefact's catalogue into a new database, or check that an existing database was
        built for this catalogue: item ids are positions in the model, so a database of another
        catalogue would silently show the wrong items."""
        fingerprint = hashlib.sha256("\n".join(self.item_ids).encode()).hexdigest()[:16]
        with self.store.write_lock, self.store.session_scope() as s:
            recorded = s.get(ServiceMeta, "catalogue_fingerprint")
            if recorded is not None and recorded.value == fingerprint:
                return
            stored = dict(s.execute(select(Item.id, Item.external_id).where(Item.id < len(self.item_ids))).all())
            if recorded is not None or stored:  # a database from elsewhere, or from before the fingerprint
                self._check_catalogue(stored, recorded.value if recorded else None, fingerprint)
            if not stored:
                s.add_all(Item(id=i, external_id=e, title=t, text=t)
                          for i, (e, t) in enumerate(zip(self.item_ids, self.titles, strict=True)))  # fmt: skip
            s.merge(ServiceMeta(key="catalogue_fingerprint", value=fingerprint))

    def _check_catalogue(self, stored: dict[int, str], recorded: str | None, fingerprint: str) -> None:
        where = display_url(self.store.url)
        differ = next((i for i, e in enumerate(self.item_ids) if stored.get(i) != e), None)
        if recorded is None and differ is None:
            return  # the same catalogue, written before fingerprints were recorded: adopt it
        what = "the recorded catalogue fingerprint differs"
        if differ is not None:
            what = (
                f"item #{differ} is {stored.get(differ)!r} in the database, {self.item_ids[differ]!r} in the artefact"
            )
        raise MetarecError(
            f"database {where} was built for another catalogue ({len(stored):,} items, fingerprint "
            f"{recorded or 'none'}) than this artefact ({len(self.item_ids):,} items, fingerprint {fingerprint}): "
            f"{what}. Serve the artefact this database belongs to, or start with a new database (--db)."
        )

    def _load_added_items(self) -> None:
        """Items added through the API after training: re-embedded (from the cache) at start-up."""
        with self.store.session_scope() as s:
            added = s.execute(
                select(Item.id, Item.external_id, Item.title, Item.text, Item.fields)
                .where(Item.id >= len(self.item_ids))
                .order_by(Item.id)
            ).all()
        if added:
            # the same records the add path embedded (rows from before migration 0002 kept only the title)
            records = pd.DataFrame([{"title": r.title, **json.loads(r.fields or "{}")} for r in added])
            rows = self._embed(records, [r.text for r in added])
            domains = [json.loads(r.fields or "{}").get("domain") for r in added]
            self._index_new([r.id for r in added], [r.external_id for r in added], [r.title for r in added], *rows,
                            domains=domains)  # fmt: skip
            self._warm_items({r.id for r in added})

    def _embed(self, records: pd.DataFrame, texts: list[str]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """(E, b) from the model's item sources, the vectors of the rendered item texts, and search
        vectors of everything the items came with (title, text and every field), so search finds a
        new item by any of them, not only by what the model's template reads."""
        vec = self.text.encode(texts)
        searchable = [" ".join(dict.fromkeys(str(v).strip() for v in row.values() if isinstance(v, str) and v.strip()))
                      for row in records.to_dict("records")]  # fmt: skip
        search = self.text.encode(searchable, "search")
        records = records.assign(**{self.text.rendered_column: texts})
        return (*self.model.new_item_vectors(records), vec, search)

    def _index_new(self, ids: list[int], external: list[str], titles: list[str], E: np.ndarray, b: np.ndarray,
                   vec: np.ndarray, search: np.ndarray, domains: list[str | None]) -> None:  # fmt: skip
        with self.lock:
            if ids[0] != len(self.item_ids):
                raise MetarecError("item ids out of step with the index; restart the service")
            # names first: a search that finds a new id (unlocked readers) can always show it
            self.item_ids.extend(external)
            self.titles.extend(titles)
            self.domains.extend(domains)
            self._domain_ids.clear()
            self.index.add(self._index_rows(E, b, vec))
            self.added = (self._added_E.append(E.astype(np.float32)), self._added_b.append(b.astype(np.float32)))
            self.text_index.add(search)
            self._text_rows.append(vec)

    def add_items(self, items: list[dict]) -> list[str]:
        """Embed and index new items; they are recommendable at once (as cold items, from text)."""
        with self._sync_lock if self.shared else nullcontext():
            return self._add_items(items)

    def _add_items(self, items: list[dict]) -> list[str]:
        self.sync()
        ext = [it["id"] for it in items]
        if len(set(ext)) != len(ext):
            raise Conflict("the batch names an item id twice")
        # the same template the model's training items went through; unknown fields render empty
        raw = [{"title": it["title"], "text": it.get("text") or "", "description": it.get("text") or "",
                **(it.get("fields") or {})} for it in items]  # fmt: skip
        fields = pd.DataFrame(raw)
        texts = self.text.render(fields)
        embedded = self._embed(fields, texts)  # before any write: an encoder failure leaves nothing behind
        with self.lock:  # one writer of the catalogue at a time keeps ids dense and in step
            with self.store.write_lock, self.store.session_scope() as s:
                clash = s.scalars(select(Item.external_id).where(Item.external_id.in_(ext))).all()
                if clash:
                    raise Conflict(f"item id(s) already exist: {', '.join(sorted(clash)[:5])}")
                start = (s.scalar(select(func.max(Item.id))) or -1) + 1
                ids = list(range(start, start + len(items)))
                s.add_all(Item(id=i, external_id=e, title=it["title"], text=t, fields=json.dumps(r))
                          for i, e, it, t, r in zip(ids, ext, items, texts, raw, strict=True))  # fmt: skip
            domains = [((it.get("fields") or {}).get("domain") or "").strip() or None for it in items]
            self._index_new(ids, ext, [it["title"] for it in items], *embedded, domains=domains)
        return ext

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        self.sync()
        vec = self.text.encode([query], "query", persist=False)[0]  # one-off: never grows the disk cache
        ids, sims = self.text_index.search(vec, k)
        return list(zip(ids.tolist(), sims.tolist(), strict=True))

    # ------------------------------------------------------------------ users
    def create_user(self, external: str, profile_text: str | None) -> None:
        try:
            with self.store.write_lock, self.store.session_scope() as s:
                s.add(User(external_id=external, profile_text=profile_text or ""))
        except IntegrityError:
            raise Conflict(f"user {external!r} already exists") from None

    def _user(self, s: Session, external: str, for_update: bool = False) -> User:
        """The user's row; `for_update` locks it until the transaction ends (PostgreSQL; SQLite has one
        writer anyway), so two batches for one user never adapt on each other's missing rows."""
        query = select(User).where(User.external_id == external)
        user = s.scalar(query.with_for_update() if for_update else query)
        if user is None:
            raise NotFound(f"unknown user {external!r}; create it with POST /users")
        return user

    def history(self, external: str, limit: int | None = None, offset: int = 0) -> tuple[User, list[Interaction]]:
        """A user and a page of their interactions, oldest first."""
        with self.store.session_scope() as s:
            user = self._user(s, external)
            query = select(Interaction).where(Interaction.user_id == user.id).order_by(Interaction.id).offset(offset)
            rows = s.scalars(query if limit is None else query.limit(limit)).all()
            return user, list(rows)

    def add_interactions(self, external: str, events: list[dict], fail_after_insert: bool = False,
                         key: str | None = None) -> int:  # fmt: skip
        """Store a batch of events and re-adapt the user, all or nothing.

        With `key` (the request's Idempotency-Key) a batch already stored under that key for this user is
        not stored again (its count is returned): the key is written in the events' transaction, so a
        retry after any failure stores the events exactly once."""
        for e in events:
            if e["kind"] not in KINDS:
                raise MetarecError(f"kind must be one of {sorted(KINDS)}, got {e['kind']!r}")
            if e["kind"] == "rating" and e.get("rating") is None:
                raise MetarecError("a 'rating' event needs a rating value")
        self.sync()
        with self.store.write_lock, self.store.session_scope() as s:
            user = self._user(s, external, for_update=True)  # one writer per user: each adapts on all rows
            digest = hashlib.sha256(json.dumps(events, sort_keys=True).encode()).hexdigest() if key is not None else ""
            if key is not None:  # under the user's row lock: a concurrent retry waits, then finds the key
                expired = keys_expired_before()
                s.execute(delete(RequestKey).where(RequestKey.user_id == user.id, RequestKey.created_at < expired))
                done = s.get(RequestKey, (user.id, key))
                if done is not None:
                    if done.body_sha256 != digest:
                        raise MetarecError(f"Idempotency-Key {key!r} was used for other events; send a new key "
                                           "for each new batch")  # fmt: skip
                    return done.stored
            wanted = {e["item"] for e in events}
            index = dict(s.execute(select(Item.external_id, Item.id).where(Item.external_id.in_(wanted))).all())
            missing = sorted(wanted - set(index))
            if missing:
                raise NotFound(f"unknown item(s) {', '.join(map(repr, missing[:5]))}; add them with POST /items")
            last = s.scalar(select(func.max(Interaction.id)).where(Interaction.user_id == user.id)) or 0
            rows = [Interaction(user_id=user.id, item_id=index[e["item"]], kind=e["kind"], rating=e.get("rating"))
                    for e in events]  # fmt: skip
            s.add_all(rows)
            if key is not None:
                s.add(RequestKey(user_id=user.id, key=key, body_sha256=digest, stored=len(rows)))
            s.flush()
            if fail_after_insert:  # test hook: a crash between the writes and the commit
                raise RuntimeError("injected failure after insert")
            cached = self.states.get(user.id)  # one dict read, no self.lock: see the lock order note in _adapt
            # the cached state saw exactly the rows up to `last` (the row lock keeps other writers out):
            # extend it with the new rows instead of re-reading the whole history
            prior = cached[0].payload if cached is not None and cached[0].payload["version"] == last else None
            state = self._adapt(s, user, rows, prior)  # in the transaction: if it fails, nothing is stored
        self._remember(external, user.id, state)
        try:  # after the commit: the events are stored whatever happens here, so never a 5xx for them
            self._warm_items({r.item_id for r in rows if r.item_id >= self.model.n_items_})
        except Exception:  # best effort: the next event on the item warms it again
            log.exception("warming up new items after a write failed")
        return len(rows)

    def _warm_items(self, items: set[int]) -> None:
        """Items added after training move toward their first users (models fitted with `item_warmup`):
        each one's vector is recomputed from its text vector and the mean adapted vector of its first
        `EARLY_ADOPTERS` users with a positive event. Users still adapt over the text vectors
        (`self.added`), as the model does; only the ranking index changes."""
        if not items or not self.model.learns_from_adopters:
            return
        positive = or_(Interaction.kind.in_(POSITIVE), and_(Interaction.kind == "rating", Interaction.rating >= 4))
        indexed = self.model.n_items_ + len(self.added[1])  # an item committed but not yet indexed waits
        adopters: dict[int, list[str]] = {}
        with self.store.session_scope() as s:
            for item in sorted(i for i in items if i < indexed):  # the items of one request: a handful
                first = (
                    s.execute(
                        select(User.external_id)
                        .join(Interaction, User.id == Interaction.user_id)
                        .where(Interaction.item_id == item, positive)
                        .group_by(User.external_id)
                        .order_by(func.min(Interaction.id))
                        .limit(EARLY_ADOPTERS)
                    )
                    .scalars()
                    .all()
                )
                if first:
                    adopters[item] = list(first)
        if not adopters:
            return
        ids = np.array(sorted(adopters), np.int64)
        dim = self.added[0].shape[1]
        # each adopter's state comes from the LRU (or one re-adaptation); at most EARLY_ADOPTERS per item
        taste = np.stack([np.mean([self._state(u)[1][:dim] for u in adopters[int(i)]], axis=0) for i in ids])
        count = np.array([len(adopters[int(i)]) for i in ids], np.float32)
        E_text, b_text = self.added
        rel = ids - self.model.n_items_
        E, b = self.model.warm_up(E_text[rel], b_text[rel], taste, count)
        with self.lock:
            self.index.update(ids, self._index_rows(E, b, self.text_vectors[ids]))

    def _adapt(self, s: Session, user: User, new: list[Interaction] | None = None, prior: dict | None = None
               ) -> tuple[UserState, np.ndarray]:  # fmt: skip
        """Adapt the user on their whole history: read from the database, or, when `prior` (the payload
        of the state adapted on every row before `new`) is given, that payload plus the `new` rows."""
        if prior is not None and new:
            rows: Sequence[Any] = new
            positives, seen = list(prior["positives"]), set(prior["seen"])  # copies: readers use the old ones
        else:
            rows = s.execute(
                select(Interaction.id, Interaction.item_id, Interaction.kind, Interaction.rating)
                .where(Interaction.user_id == user.id)
                .order_by(Interaction.id)
            ).all()
            positives, seen = [], set()
            if user.external_id in self.train_users:
                train_items = self.model.known_items(self.train_users[user.external_id]).tolist()
                positives, seen = list(train_items), set(train_items)
        positives += [r.item_id for r in rows if r.kind in POSITIVE or (r.kind == "rating" and (r.rating or 0) >= 4)]
        seen |= {r.item_id for r in rows}
        # no self.lock here: callers may hold the store's write lock, and add_items takes the two in the
        # other order (that was a deadlock under mixed load); one attribute read is a consistent snapshot
        snapshot = self.added
        added = snapshot if len(snapshot[1]) else None
        n_known = self.model.n_items_ + len(snapshot[1])
        ordered = getattr(self.model, "reads_order", False)
        known = [i for i in dict.fromkeys(positives) if i < n_known]  # first use, in event order
        support = pd.DataFrame({"item": known if ordered else sorted(known)})
        profile = user.profile_text or None
        state = self.model.adapt(support, profile if self.model.reads_profile_text else None, added)
        attended: list[int] = []
        if ordered and len(support):  # the items the sequence encoder weighed most: what explanations cite
            attended = [i for i, _ in getattr(self.model, "attention")(state.history)[0]]  # noqa: B009
        h = self.model.query_vector(state)[0]
        p = self._profile_vector(profile)
        # ids only grow: a later state has a larger one
        version = max((r.id for r in rows), default=prior["version"] if prior is not None else 0)
        state.payload = {
            "seen": seen,
            "positives": positives,
            "profile": profile,
            "version": version,
            "attended": attended,
        }
        return state, np.concatenate([h, [1.0], p]).astype(np.float32)

    def _profile_vector(self, profile: str | None) -> np.ndarray:
        if not profile:
            return np.zeros(self.text_vectors.shape[1], np.float32)
        if profile not in self.profiles:
            self.profiles[profile] = self.text.encode([profile], "profile")[0]
        return self.profiles[profile]

    def sync(self) -> None:
        """With `shared`, index the items other replicas added since and forget the users they deleted
        (two indexed queries when nothing changed)."""
        if self.shared:
            with self._sync_lock:
                self._load_added_items()
                self._forget_deleted()

    def _forget_deleted(self) -> None:
        """Training users deleted on request lose their training history here (the artefact still holds
        it until the next `metarec train --forget-from`): a new user with the same id starts from nothing."""
        with self.store.session_scope() as s:
            rows = s.execute(select(Deletion.id, Deletion.subject).where(Deletion.id > self._deletions_seen)).all()
        if not rows:
            return
        subjects = {r.subject for r in rows}
        names = list(self.train_users)
        gone = [u for u, h in zip(names, keyed_hash(self.store.deletion_key(), names), strict=True) if h in subjects]
        with self.lock:
            for u in gone:
                self.train_users.pop(u, None)
            self._deletions_seen = max(self._deletions_seen, max(r.id for r in rows))

    def delete_user(self, external: str) -> int:
        """Delete a user on request: their events, profile and row in one transaction, their adapted state
        from memory, their training history from use; the log keeps when, and a keyed hash of the id.
        Returns how many events were deleted."""
        key = self.store.deletion_key()
        subject = keyed_hash(key, [external])[0]
        self.sync()
        with self.store.write_lock, self.store.session_scope() as s:
            user = self._user(s, external, for_update=True)
            uid = user.id
            events = s.execute(delete(Interaction).where(Interaction.user_id == uid)).rowcount  # type: ignore[attr-defined]
            s.execute(delete(RequestKey).where(RequestKey.user_id == uid))
            s.execute(delete(User).where(User.id == uid))
            if s.scalar(select(Deletion.id).where(Deletion.subject == subject)) is None:
                s.add(Deletion(subject=subject))
        with self.lock:
            self._gone.add(uid)
            self.states.pop(uid, None)
            self.user_index.pop(external, None)
            self.train_users.pop(external, None)
        return int(events)

    def _state(self, external: str) -> tuple[UserState, np.ndarray]:
        """A user's adapted state: from memory when nothing changed since, else from the database
        (always from the database for a shared replica: adapting takes milliseconds)."""
        self.sync()
        if self.shared:
            with self.store.session_scope() as s:
                user = self._user(s, external)
                fresh = self._adapt(s, user)
            return self._remember(external, user.id, fresh)
        with self.lock:
            uid = self.user_index.get(external)
            cached = self.states.get(uid) if uid is not None else None
            if uid is not None and cached is not None:
                self.states.move_to_end(uid)
        if cached is not None:
            return cached
        with self.store.session_scope() as s:
            user = self._user(s, external)
            cached = self._adapt(s, user)
        return self._remember(external, user.id, cached)

    def _remember(self, external: str, uid: int, entry: tuple[UserState, np.ndarray]) -> tuple[UserState, np.ndarray]:
        """Cache a user's state unless a newer one (adapted on later interactions) is there already:
        writers and readers finish in any order, the cache only moves forward."""
        with self.lock:
            if uid in self._gone:  # adapted before a deletion finished: served once, never cached
                return entry
            current = self.states.get(uid)
            if current is None or current[0].payload["version"] <= entry[0].payload["version"]:
                self.states[uid] = entry
            self.states.move_to_end(uid)
            self.user_index[external] = uid
            kept = self.states[uid]
            while len(self.states) > self.max_cached_users:
                self.states.popitem(last=False)
            return kept

    # ------------------------------------------------------------------ recommend
    def in_domain(self, domain: str) -> np.ndarray:
        """Ids of the items in `domain`; an unknown domain is a clear 422 naming the ones there are."""
        domain = domain.strip()
        with self.lock:
            if not self._domain_ids and any(d is not None for d in self.domains):
                codes, names = pd.factorize(pd.Series(self.domains, dtype=object))
                order = np.argsort(codes, kind="stable")
                bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
                self._domain_ids.update({str(n): order[bounds[i] : bounds[i + 1]] for i, n in enumerate(names)})
            ids = self._domain_ids.get(domain, np.empty(0, np.int64))
        if not len(ids):
            known = sorted({d for d in self.domains if d is not None})
            have = ", ".join(map(repr, known[:20])) if known else ("no domains (the training data had no domain "
                                                                   "column; items added over the API name theirs "
                                                                   "in fields.domain)")  # fmt: skip
            raise MetarecError(f"unknown domain {domain!r}; this catalogue has {have}")
        return ids

    def recommend(self, external: str, k: int, explain: bool | str = False,
                  domain: str | None = None) -> list[Explained]:  # fmt: skip
        """Top-k for a user; `explain` True: nearest own items and profile words; "llm": also one
        sentence per item written by the language model and checked against the data. `domain`: only
        items of that domain (the user is still adapted from everything they did, in every domain)."""
        if explain == "llm" and self.explainer is None:
            raise MetarecError("explain=llm needs a language model: start the service with --llm NAME "
                               "(e.g. --llm smollm2-135m after `metarec llm fetch`)")  # fmt: skip
        allowed = None if domain is None else self.in_domain(domain)  # before adapting: a bad domain costs nothing
        state, query = self._state(external)
        with self.lock:
            ids, scores = self.index.search(query, k, exclude=state.payload["seen"], allowed=allowed)
        items = ids.tolist()
        why: list[tuple[list[int], list[str]]] = (self._explain(items, state.payload) if explain
                                                  else [([], [])] * len(items))  # fmt: skip
        out = [Explained(i, float(sc), [self.titles[j] for j in b], w)
               for i, sc, (b, w) in zip(items, scores.tolist(), why, strict=True)]  # fmt: skip
        explainer = self.explainer
        if explain == "llm" and explainer is not None:
            facts = self._facts_of(items + [j for near, _ in why for j in near])
            for rec, (near, _) in zip(out, why, strict=True):
                e = explainer.explain([facts[j] for j in near], facts[rec.item])
                rec.sentence, rec.sentence_source = e.text, e.source
        return out

    def _facts_of(self, items: list[int]) -> dict[int, Any]:
        """What an explanation may cite about each item: its title and its facts (trained items from
        the artefact, items added over the API from the short fields they came with)."""
        from metarec.llm import Known

        n0 = self.model.n_items_
        added: dict[int, dict] = {}
        if any(i >= n0 for i in items):
            with self.store.session_scope() as s:
                rows = s.execute(select(Item.id, Item.fields).where(Item.id.in_([i for i in items if i >= n0]))).all()
            added = {r.id: json.loads(r.fields or "{}") for r in rows}
        out = {}
        for i in set(items):
            if i < n0:
                raw = {col: values[i] for col, values in self.facts.items()}
            else:
                raw = {c: str(v) for c, v in added.get(i, {}).items() if c not in ("title", "text", "description")
                       and isinstance(v, str | int | float) and len(str(v)) <= 40}  # fmt: skip
            out[i] = Known(self.titles[i], {c: _fact_values(v) for c, v in raw.items() if v})
        return out

    def _explain(self, items: list[int], info: dict) -> list[tuple[list[int], list[str]]]:
        """Why, per item: the user's own items nearest in the LLM space, and profile words found in the
        item's text (all items' texts in one query: one session per request, not one per item)."""
        pos = [p for p in dict.fromkeys(info["positives"]) if p < len(self.text_vectors)]
        if info.get("attended"):  # a sequence-aware model says which past items drove the user's vector
            pos = [p for p in info["attended"][:3] if p < len(self.text_vectors)] or pos
        texts = self._item_texts(items) if info["profile"] else {}
        profile_words = list(dict.fromkeys(_WORD.findall((info["profile"] or "").lower())))
        # one product for all items: column j holds item j's similarity to each of the user's items
        nearest = np.argsort(-(self.text_vectors[pos] @ self.text_vectors[items].T), axis=0)[:2] if pos else None
        out = []
        for j, item in enumerate(items):
            because = [pos[r] for r in nearest[:, j]] if nearest is not None else []
            text = f"{self.titles[item]} {texts.get(item, '')}".lower()
            words = [w for w in profile_words if w not in _STOP and w in text] if texts else []
            out.append((because, words))
        return out

    def _item_texts(self, items: list[int]) -> dict[int, str]:
        """Items' texts and, for items added over the API, every field they came with."""
        with self.store.session_scope() as s:
            rows = s.execute(select(Item.id, Item.text, Item.fields).where(Item.id.in_(items))).all()
        return {r.id: " ".join([r.text or "", *(str(v) for v in json.loads(r.fields or "{}").values()
                                               if isinstance(v, str))]) for r in rows}  # fmt: skip


def _fact_values(value: str) -> list[str]:
    """'Action Adventure' -> ['Action', 'Adventure'], 'a|b' -> ['a', 'b'], '1995' -> ['1995']."""
    return [v for v in re.split(r"\s*[|;,]\s*|\s+", str(value).strip()) if v]
