"""Amazon review dumps in McAuley's JSON-lines format (2014 / 2018 releases).

Reviews become interactions that keep their `summary` and `review_text`, because for catalogues
without descriptions the reviews are the only item text there is. An optional metadata file adds
titles, descriptions and categories.
"""

from __future__ import annotations

import ast
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from metarec.data.schema import Dataset
from metarec.errors import DataError

REQUIRED = ("reviewerID", "asin", "overall")


def _open(path: Path) -> IO[str]:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """JSON per line; the 2014 metadata files are Python literals, so fall back to those."""
    with _open(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                try:
                    rec = ast.literal_eval(line)
                except (ValueError, SyntaxError) as exc:
                    raise DataError(
                        f"{path}: line {lineno} is not a JSON object ({exc}); each line must be one review"
                    ) from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}: line {lineno} is a {type(rec).__name__}, expected a JSON object")
            yield lineno, rec


def load(path: str | Path, meta_path: str | Path | None = None, name: str | None = None) -> Dataset:
    path = Path(path).expanduser()
    rows = []
    for lineno, rec in _records(path):
        missing = [k for k in REQUIRED if k not in rec or rec[k] in (None, "")]
        if missing:
            raise DataError(f"{path}: line {lineno} lacks {', '.join(missing)} (required: {', '.join(REQUIRED)})")
        try:
            rating = float(rec["overall"])
        except (TypeError, ValueError):
            raise DataError(f"{path}: line {lineno}: 'overall' must be a number, got {rec['overall']!r}") from None
        rows.append(
            (
                str(rec["reviewerID"]),
                str(rec["asin"]),
                rating,
                int(rec.get("unixReviewTime") or 0),
                rec.get("summary") or "",
                rec.get("reviewText") or "",
                rec.get("reviewerName") or "",
            )
        )
    if not rows:
        raise DataError(f"{path}: no reviews found")
    inter = pd.DataFrame(
        rows, columns=["user_id", "item_id", "rating", "timestamp", "summary", "review_text", "reviewer_name"]
    )
    users = (
        inter.groupby("user_id", sort=False)["reviewer_name"].agg(lambda s: next((x for x in s if x), "")).reset_index()
    )
    inter = inter.drop(columns="reviewer_name")
    items = pd.DataFrame({"item_id": pd.unique(inter["item_id"])})
    if meta_path is not None:
        items = items.merge(_load_meta(Path(meta_path).expanduser()), on="item_id", how="left")
        for col in ("title", "description", "categories", "brand"):
            if col in items.columns:
                items[col] = items[col].fillna("")
    return Dataset.from_frames(name or path.name.split(".")[0], inter, items, users, source=str(path))


def _load_meta(path: Path) -> pd.DataFrame:
    rows = []
    for lineno, rec in _records(path):
        if "asin" not in rec:
            raise DataError(f"{path}: line {lineno} lacks 'asin', the item id that links metadata to reviews")
        desc = rec.get("description") or ""
        if isinstance(desc, list):
            desc = " ".join(map(str, desc))
        cats = rec.get("categories") or rec.get("category") or []
        if cats and isinstance(cats[0], list):
            cats = [c for group in cats for c in group]
        rows.append(
            {
                "item_id": str(rec["asin"]),
                "title": str(rec.get("title") or ""),
                "description": str(desc),
                "categories": ", ".join(dict.fromkeys(map(str, cats))),
                "brand": str(rec.get("brand") or ""),
            }
        )
    return pd.DataFrame(rows).drop_duplicates("item_id")
