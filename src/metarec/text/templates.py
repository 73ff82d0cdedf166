"""Turning item and user records into text, with templates set in the config.

A template is a `str.format` pattern over the record's fields plus computed ones:
`{reviews}` (review summaries aggregated from the interactions the model may see), and for items
`{kg}` (knowledge-graph facts). Missing fields render empty; text is passed through untouched
otherwise, so non-English text reaches the tokenizer as written.
"""

from __future__ import annotations

import math
import re
import string
from typing import Any

import numpy as np
import pandas as pd

from metarec.data.schema import ITEM, USER, Dataset
from metarec.errors import DataError

DEFAULT_VALUE_MAPS = {"gender": {"M": "male", "F": "female"}}
_SPACES = re.compile(r"\s+")
_EMPTY_PARENS = re.compile(r"\(\s*\)")


class _Formatter(string.Formatter):
    def __init__(self, value_maps: dict[str, dict[str, str]]) -> None:
        self.value_maps = value_maps

    def get_value(self, key: Any, args: Any, kwargs: Any) -> Any:
        val = kwargs.get(key, "")
        if val is None or (isinstance(val, float) and math.isnan(val)) or val is pd.NA:
            return ""
        if key in self.value_maps:
            return self.value_maps[key].get(str(val), val)
        return val

    def format_field(self, value: Any, format_spec: str) -> str:
        return str(value) if value == "" else super().format_field(value, format_spec)


def render(template: str, records: pd.DataFrame, value_maps: dict[str, dict[str, str]] | None = None) -> list[str]:
    fmt = _Formatter({**DEFAULT_VALUE_MAPS, **(value_maps or {})})
    names = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    cols = [c for c in names if c in records.columns]
    out = []
    for rec in records[cols].to_dict("records") if cols else [{}] * len(records):
        text = fmt.format(template, **{str(k): v for k, v in rec.items()})
        text = _EMPTY_PARENS.sub("", text)  # "Title ()" when a field is missing
        out.append(_SPACES.sub(" ", text).strip())
    return out


def aggregate_reviews(
    interactions: pd.DataFrame, key: str, n_rows: int, field: str = "summary", max_reviews: int = 5
) -> list[str]:
    """Per item (or user), up to `max_reviews` of its latest review fields joined into one string."""
    if field not in interactions.columns:
        return [""] * n_rows
    df = interactions[[key, field, *(["timestamp"] if "timestamp" in interactions.columns else [])]]
    df = df[df[field].astype(str).str.strip() != ""]
    if "timestamp" in df.columns:
        df = df.sort_values([key, "timestamp"], ascending=[True, False], kind="stable")
    df = df.groupby(key, sort=False).head(max_reviews)
    joined = df.groupby(key)[field].agg(lambda s: " | ".join(map(str, s)))
    out = [""] * n_rows
    for k, v in zip(joined.index.to_numpy(np.int64), joined.to_numpy(), strict=True):
        out[k] = v
    return out


#: relations an item's facts are listed in (Freebase names' last part), most telling first
FACT_ORDER = ("directed_by", "written_by", "actor", "produced_by", "genre", "subjects", "sequel", "prequel",
              "story_by", "music", "cinematography", "production_companies", "country", "language")  # fmt: skip
_OPAQUE = r"^[a-z]\.[0-9a-z_]+$"  # Freebase MIDs (m.0abc12): an identifier, not a name


def kg_facts(ds: Dataset, max_facts: int = 10, also_in: int = 2) -> list[str]:
    """An item's facts as phrases a language model can read: "directed by (also: Jaws; E.T.)".

    A tail with a readable label (a user's graph: "Steven Spielberg") is written as is. An opaque id
    (Freebase's m.0abc) is named by the catalogue's own titles: a linked item it is, or up to
    `also_in` other items that share it through the same relation; a fact nobody else shares says
    nothing a reader could use and is left out. Facts are listed in `FACT_ORDER`, at most `max_facts`.
    """
    if ds.kg is None:
        return [""] * ds.n_items
    links = ds.kg.links.assign(item_id=ds.kg.links["item_id"].astype(str))
    title_col = "title" if "title" in ds.items.columns else "item_id"
    titles = ds.items[["item_id", title_col]].astype(str).set_axis(["item_id", "title"], axis=1)
    named = links.merge(titles, on="item_id")  # entity -> its item's title
    title_of = dict(zip(named["entity"], named["title"], strict=False))
    kg = ds.kg.triples[ds.kg.triples["head"].isin(title_of)]  # facts about items
    rel = kg["relation"].astype(str).str.rsplit(".", n=1).str[-1]
    facts = pd.DataFrame(
        {"head": kg["head"].to_numpy(), "rel": rel.to_numpy(), "tail": kg["tail"].astype(str).to_numpy()}
    )
    rank = {r: i for i, r in enumerate(FACT_ORDER)}
    facts["order"] = facts["rel"].map(rank).fillna(len(FACT_ORDER))
    row_of = {e: r for r, e in enumerate(ds.items["item_id"].astype(str).map(dict(zip(named["item_id"], named["entity"],
                                                                                     strict=False))))}  # fmt: skip
    facts["row"] = facts["head"].map(row_of)
    facts = facts.sort_values(["row", "order"], kind="stable")  # catalogue order, then FACT_ORDER
    # who else shares each (relation, tail): the first `also_in + 1` items' titles, in catalogue order
    sharers = facts.groupby(["rel", "tail"], sort=False)["head"].agg(lambda h: [title_of[x] for x in h[: also_in + 1]])
    opaque = facts["tail"].str.match(_OPAQUE)
    words = facts["rel"].str.replace("_", " ")
    phrase = []
    for head, tail, word, is_id, key in zip(
        facts["head"], facts["tail"], words, opaque, zip(facts["rel"], facts["tail"], strict=True), strict=True
    ):
        if not is_id:
            phrase.append(f"{word} {tail}")
        elif tail in title_of:
            phrase.append(f"{word} {title_of[tail]}")
        else:
            others = [t for t in sharers[key] if t != title_of[head]][:also_in]
            phrase.append(f"{word} (also: {'; '.join(others)})" if others else "")
    facts["phrase"] = phrase
    facts = facts[facts["phrase"] != ""].groupby("head", sort=False).head(max_facts)
    lookup = facts.groupby("head", sort=False)["phrase"].agg(", ".join).to_dict()
    ent_of = dict(zip(links["item_id"], links["entity"], strict=False))
    return [lookup.get(ent_of.get(str(i), ""), "") for i in ds.items["item_id"]]


def item_texts(ds: Dataset, template: str, value_maps: dict | None = None, max_reviews: int = 5,
               review_field: str = "summary", max_facts: int = 10, extra_reviews: pd.DataFrame | None = None,
               require_text: bool = True) -> list[str]:  # fmt: skip
    """One text per catalogue item, from its fields and what the training interactions say of it."""
    records = ds.items.copy()
    names = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    if "reviews" in names:
        inter = ds.interactions if extra_reviews is None else pd.concat([ds.interactions, extra_reviews])
        records["reviews"] = aggregate_reviews(inter, ITEM, ds.n_items, review_field, max_reviews)
    if "kg" in names:
        records["kg"] = kg_facts(ds, max_facts)
    unknown = names - set(records.columns)
    if unknown:
        raise DataError(
            f"item template uses {sorted(unknown)}, which {ds.name} items lack; "
            f"available: {sorted(c for c in records.columns if c != 'item_id')}"
        )
    texts = render(template, records, value_maps)
    if require_text:
        empty = [i for i, t in enumerate(texts) if not t]
        if len(empty) == len(texts):
            raise DataError(
                f"item template {template!r} renders empty text for every item of {ds.name}; "
                "use fields the items have (e.g. {title}) or {reviews}"
            )
    return texts


def user_texts(ds: Dataset, template: str, value_maps: dict | None = None, max_reviews: int = 5,
               review_field: str = "summary") -> list[str]:  # fmt: skip
    """One profile text per user (empty where the user table has nothing to say)."""
    records = ds.users.copy()
    names = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    if "reviews" in names:
        records["reviews"] = aggregate_reviews(ds.interactions, USER, ds.n_users, review_field, max_reviews)
    unknown = names - set(records.columns)
    if unknown:
        raise DataError(
            f"user template uses {sorted(unknown)}, which {ds.name} users lack; "
            f"available: {sorted(c for c in records.columns if c != 'user_id')}"
        )
    return render(template, records, value_maps)
