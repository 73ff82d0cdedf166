"""Amazon review dumps in McAuley's JSON-lines format (2014 / 2018 releases).

Reviews become interactions that keep their `summary` and `review_text`, because for catalogues
without descriptions the reviews are the only item text there is. An optional metadata file adds
titles, descriptions and categories.
"""

from __future__ import annotations

import ast
import gzip
import json
import typing
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd

from metarec.data.checks import rating_problem, time_problem
from metarec.data.schema import Dataset
from metarec.errors import DataError

REQUIRED = ("reviewerID", "asin", "overall")


def _open(path: Path) -> IO[bytes]:
    """Bytes, decoded line by line below, so a bad byte is reported on its own line."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".gz":
        return typing.cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered lines; a damaged or mislabelled file stops with the line it was read up to."""
    lineno = 0
    try:
        with _open(path) as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"{path}: line {lineno} is not UTF-8 text ({exc.reason}); re-encode the file as UTF-8"
                    ) from None
                yield lineno, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(
            f"{path}: the compressed file is damaged or truncated after line {lineno} ({exc}); download it again"
        ) from None


def _parse(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return ast.literal_eval(line)  # the 2014 metadata files are Python literals


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """JSON per line; the 2014 metadata files are Python literals, so fall back to those."""
    for lineno, line in _lines(path):
        line = line.strip()
        if not line:
            continue
        try:
            rec = _parse(line)
        except (ValueError, SyntaxError, MemoryError) as exc:
            raise DataError(
                f"{path}: line {lineno} is not a JSON object ({exc}); each line must be one review"
            ) from None
        except RecursionError:
            raise DataError(f"{path}: line {lineno} is nested too deeply to be a review; fix or drop it") from None
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
        rating, when = _number(path, lineno, rec, "overall"), _number(path, lineno, rec, "unixReviewTime")
        for value, field, problem in ((rating, "overall", rating_problem), (when, "unixReviewTime", time_problem)):
            if (why := problem(value)) is not None:
                raise DataError(f"{path}: line {lineno}, field '{field}': {rec[field]!r} {why}")
        rows.append(
            (
                str(rec["reviewerID"]),
                str(rec["asin"]),
                rating,
                int(when),
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


def _number(path: Path, lineno: int, rec: dict[str, Any], field: str) -> float:
    """A numeric field (a missing review time is 0, the epoch)."""
    value = rec.get(field) or 0
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{path}: line {lineno}, field '{field}' must be a number, got {value!r}") from None


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
