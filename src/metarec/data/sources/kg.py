"""A user's knowledge graph: a triples file (head, relation, tail) and a links file (item_id, entity).

Any CSV / TSV (or Parquet) with a header works; RecBole's atomic-file headers (`head_id:token`, ...)
are read too. Bad rows are never a traceback: a missing column stops with the file, the columns found
and the fix; rows with an empty field, repeated triples, links to items the catalogue does not have
and second links of one item are dropped, counted in `KnowledgeGraph.report`, and announced in one
warning that names the file and the first lines concerned.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from metarec.data.schema import KnowledgeGraph
from metarec.data.sources.tabular import read_table
from metarec.errors import DataError


class KGDropWarning(UserWarning):
    """Rows of a knowledge-graph file were dropped (counted in `KnowledgeGraph.report`)."""


def _columns(df: pd.DataFrame, path: Path, need: tuple[str, ...], aliases: dict[str, str]) -> pd.DataFrame:
    plain = {c: c.split(":")[0].strip().lower() for c in df.columns}  # RecBole: head_id:token -> head_id
    df = df.rename(columns={c: aliases.get(p, p) for c, p in plain.items()})
    missing = [c for c in need if c not in df.columns]
    if missing:
        hint = ""
        if len(plain) == 1:
            seps = [ch for ch in (",", "\t", ";", "|") if ch in next(iter(plain))]
            if seps:
                hint = (f"; the header looks separated by {seps[0]!r}, not what the file's extension says: name "
                        "it .tsv for tabs, .csv for commas")  # fmt: skip
        raise DataError(f"{path}: missing column(s) {missing}; found {list(plain.values())}. The file needs a header "
                        f"row naming {', '.join(need)} (e.g. {','.join(need)}){hint}")  # fmt: skip
    return df[list(need)].astype(str).apply(lambda s: s.str.strip())


def _lines(mask: pd.Series, limit: int = 3) -> str:
    """File line numbers (header = line 1) of the first rows in `mask`."""
    return ", ".join(str(int(i) + 2) for i in mask[mask].index[:limit])


def read_kg(triples: str | Path, links: str | Path, items: pd.DataFrame, sep: str | None = None) -> KnowledgeGraph:
    """Read, check and attach-ready: triples and links restricted to what the catalogue can use."""
    tp, lp = Path(triples).expanduser(), Path(links).expanduser()
    t = _columns(read_table(tp, sep), tp, ("head", "relation", "tail"),
                 {"head_id": "head", "relation_id": "relation", "tail_id": "tail"})  # fmt: skip
    lk = _columns(read_table(lp, sep), lp, ("item_id", "entity"), {"entity_id": "entity", "item": "item_id"})
    report: dict[str, Any] = {"triples_read": len(t), "links_read": len(lk)}
    problems: list[str] = []

    def drop(df: pd.DataFrame, mask: pd.Series, key: str, path: Path, what: str) -> pd.DataFrame:
        n = int(mask.sum())
        report[key] = n
        if n:
            problems.append(f"{path}: {n} {what} dropped (lines {_lines(mask)})")
        return df[~mask]

    t = drop(t, (t == "").any(axis=1), "triples_empty_field", tp, "triple(s) with an empty field")
    t = drop(t, t.duplicated(), "triples_duplicate", tp, "repeated triple(s)")
    lk = drop(lk, (lk == "").any(axis=1), "links_empty_field", lp, "link(s) with an empty field")
    known = set(items["item_id"].astype(str))
    unknown = ~lk["item_id"].isin(known)
    if unknown.any():
        examples = ", ".join(repr(x) for x in lk.loc[unknown, "item_id"].head(3))
        problems.append(f"{lp}: e.g. item ids {examples} are not in the catalogue")
    lk = drop(lk, unknown, "links_unknown_item", lp, "link(s) to items not in the catalogue")
    lk = drop(lk, lk["item_id"].duplicated(), "links_second_entity", lp, "second link(s) of an item (first kept)")
    if not len(t):
        raise DataError(
            f"{tp}: no usable triples after dropping bad rows; {'; '.join(problems) or 'the file is empty'}"
        )
    linked = set(lk["entity"])
    report.update(triples=len(t), links=len(lk), relations=int(t["relation"].nunique()),
                  linked_items=len(lk), linked_with_facts=int(lk["entity"].isin(set(t["head"])).sum()),
                  entities_linked_without_facts=len(linked - set(t["head"])))  # fmt: skip
    if problems:
        warnings.warn("knowledge graph: " + "; ".join(problems), KGDropWarning, stacklevel=2)
    return KnowledgeGraph(t.reset_index(drop=True), lk.reset_index(drop=True), report)


__all__ = ["KGDropWarning", "read_kg"]
