"""Generic CSV / Parquet / JSON-lines files (or folders of part files) with column mapping, for any catalogue.

`columns` maps our names to the file's: {"user": "uid", "item": "sku", "rating": "stars",
"timestamp": "ts", "split": "fold", "domain": "catalogue"}. A `split` column carries a predefined
train/valid/test split. A `domain` column (in the interactions, the items file or both) names the catalogue
each item belongs to (films, music, books): it becomes the item table's `domain`, one per item.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from metarec.data.checks import check_column
from metarec.data.schema import Dataset
from metarec.errors import DataError

SPLIT_VALUES = {"train", "valid", "test"}


#: set inside a Ray session (`distributed.cluster`): reads a file or folder with Ray Data instead
remote: Callable[[Path, str | None, str], pd.DataFrame] | None = None

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


def part_files(folder: Path) -> list[Path]:
    """The data files of a folder of parts, in name order (hidden and `_` files such as `_SUCCESS` or `.crc`
    checksums left out, as Spark and Ray write them)."""
    inside = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith((".", "_")))
    if not inside:
        raise DataError(f"{folder}: the folder holds no data files")
    return inside


def table_format(path: Path) -> str:
    """'parquet', 'json' (JSON lines) or 'csv', from the suffix; a folder by the files inside it."""
    if path.is_dir():
        path = part_files(path)[0]
    if path.suffix in (".parquet", ".pq"):
        return "parquet"
    return "json" if path.suffix in JSON_SUFFIXES else "csv"


def read_table(path: str | Path, sep: str | None = None, encoding: str = "utf-8") -> pd.DataFrame:
    """Every CSV cell as a string (ids keep leading zeros); `sep` defaults to tab for .tsv, comma
    otherwise. Parquet and JSON lines keep their types. A folder of part files is read as one table
    (in parallel by Ray Data inside a Ray session)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file")
    fmt = table_format(path)
    if remote is not None:
        return remote(path, sep, encoding)
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        if fmt == "json":
            parts = part_files(path) if path.is_dir() else [path]
            return pd.concat([pd.read_json(f, lines=True, dtype=False, convert_dates=False, encoding=encoding)
                              for f in parts], ignore_index=True)  # fmt: skip
        if path.is_dir():
            raise DataError(f"{path}: a folder of CSV parts is read by Ray Data only ([distributed] backend = "
                            "'ray'); concatenate the parts or write them as Parquet")  # fmt: skip
        return pd.read_csv(
            path,
            sep=sep or ("\t" if path.suffix in (".tsv", ".tab") else ","),
            dtype=str,
            keep_default_na=False,
            encoding=encoding,
        )
    except LookupError:
        raise DataError(
            f"{path}: unknown encoding {encoding!r}; use a Python codec name such as utf-8 or latin-1"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: byte {exc.start} is not valid {encoding} ({exc.reason}); "
            "pass the file's encoding (--encoding latin-1, or encoding = '...' in [dataset])"
        ) from None
    except (pd.errors.ParserError, OSError, ValueError) as exc:
        hint = "" if sep else "; if the columns are not comma-separated, pass --sep (e.g. --sep ';' or --sep '\\t')"
        raise DataError(f"{path}: cannot be read as a table ({exc}){hint}") from None


def _numbers(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """Side-table columns whose every non-empty cell is a number become numbers (an age, a year, a
    price), so feature sources treat them as quantities; codes with leading zeros (zip codes) stay text."""
    for col in df.columns:
        if col == key or not (pd.api.types.is_object_dtype(df[col]) or pd.api.types.is_string_dtype(df[col])):
            continue
        text = df[col].astype(str).str.strip()
        filled = text[text != ""]
        if filled.empty or filled.str.match(r"^-?0\d").any():
            continue
        num = pd.to_numeric(filled, errors="coerce")
        if num.notna().all():
            df[col] = num.reindex(df.index)  # empty cells become NaN
    return df


def _empty(ids: pd.Series) -> np.ndarray:
    """Missing or blank ids, without turning a numeric column of millions of rows into strings."""
    if ids.dtype == object:
        return (ids.isna() | (ids.astype(str).str.strip() == "")).to_numpy(bool)
    if pd.api.types.is_string_dtype(ids):
        return (ids.isna() | (ids.str.strip() == "")).to_numpy(bool)
    return ids.isna().to_numpy(bool)  # numbers, categories, dates: only missing values are empty


def _rename(df: pd.DataFrame, mapping: dict[str, str], required: list[str], path: str) -> pd.DataFrame:
    missing = [mapping[k] for k in required if mapping[k] not in df.columns]
    if missing:
        only = str(df.columns[0]) if len(df.columns) == 1 else ""
        seps = [s for s in (";", "\t", "|") if s in only]
        fix = (f"The header looks {seps[0]!r}-separated: pass --sep (sep = '...' in [dataset])" if seps else
               "Set the column mapping (e.g. columns = {user = 'uid', item = 'sku'}) in the config or CLI")  # fmt: skip
        raise DataError(f"{path}: missing column(s) {missing}; the file has {list(df.columns)}. {fix}")
    return df.rename(columns={v: k for k, v in mapping.items() if v in df.columns})


def _domain_codes(raw: pd.Series, path: str, column: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Per row, a code into the returned domain names (stripped; only distinct values become strings). An
    empty cell is an error naming its line."""
    codes, distinct = pd.factorize(raw)  # missing cells get -1
    stripped = pd.Index(distinct).astype(str).str.strip()
    empty = (codes < 0) | np.isin(codes, np.flatnonzero(stripped == ""))
    if empty.any():
        raise DataError(f"{path}: line {int(np.argmax(empty)) + 2}, column '{column}' is empty: {what} (or drop "
                        "the column)")  # fmt: skip
    merged, names = pd.factorize(stripped)  # "films " and "films" are one domain
    return merged[codes], np.asarray(names, dtype=object)


def _item_domains(inter: pd.DataFrame, item_df: pd.DataFrame | None, column: str, inter_path: str,
                  items_path: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:  # fmt: skip
    """The `domain` column (`column` in the files) as the item table's `domain`, checked: every item has
    exactly one domain, no cell is empty, and the two files agree where both name it. The files' own
    column stays as it is (a template may read it); the interactions' is dropped once moved."""
    in_inter = column in inter.columns
    in_items = item_df is not None and column in item_df.columns
    if not in_inter and not in_items:
        return inter, item_df
    found = None
    if in_inter:
        dcode, dname = _domain_codes(inter[column], inter_path, column, "every row needs its item's domain")
        icode, iname = pd.factorize(inter["item_id"])
        pair = pd.DataFrame({"i": icode, "d": dcode}).drop_duplicates()  # integers: no string per row
        two = pair["i"].duplicated(keep=False).to_numpy()
        if two.any():
            i = int(pair["i"].to_numpy()[two][0])
            ds_ = pair["d"].to_numpy()[pair["i"].to_numpy() == i][:2]
            lines = [int(np.argmax((icode == i) & (dcode == d))) + 2 for d in ds_]
            raise DataError(f"{inter_path}: item {str(iname[i])!r} is in domain {str(dname[ds_[0]])!r} on line "
                            f"{lines[0]} and {str(dname[ds_[1]])!r} on line {lines[1]}: an item belongs to one "
                            "domain")  # fmt: skip
        found = pd.DataFrame({"item_id": pd.Index(iname).astype(str)[pair["i"].to_numpy()],
                              "domain": dname[pair["d"].to_numpy()]})  # fmt: skip
        inter = inter.drop(columns=column)
    if item_df is None:
        return inter, found
    if column != "domain" and "domain" in item_df.columns:
        raise DataError(f"{items_path}: has both a 'domain' column and the mapped domain column {column!r}: "
                        "rename one of them")  # fmt: skip
    if in_items:
        codes, names = _domain_codes(item_df[column], items_path, column, "every item needs a domain")
        item_df = item_df.assign(domain=names[codes])
        if found is not None:
            both = found.merge(item_df[["item_id", "domain"]].astype(str), on="item_id", suffixes=("", "_file"))
            differ = both["domain"] != both["domain_file"]
            if differ.any():
                row = both[differ].iloc[0]
                raise DataError(f"{inter_path} puts item {row['item_id']!r} in domain {row['domain']!r}, "
                                f"{items_path} in {row['domain_file']!r}: make them agree")  # fmt: skip
        return inter, item_df
    assert found is not None
    merged = item_df.assign(item_id=item_df["item_id"].astype(str)).merge(found, on="item_id", how="left")
    if merged["domain"].isna().any():
        unknown = ~found["item_id"].isin(merged["item_id"])
        if unknown.any():  # the files name items differently: say that, not "no domain"
            raise DataError(f"{inter_path}: item {found['item_id'][unknown].iloc[0]!r} is not in {items_path}; "
                            "the two files must use the same item ids")  # fmt: skip
        item = merged["item_id"][merged["domain"].isna()].iloc[0]
        raise DataError(f"{items_path}: {int(merged['domain'].isna().sum())} items have no interactions and so "
                        f"no domain (e.g. {item!r}): add a '{column}' column to the items file")  # fmt: skip
    return inter, merged


def load(
    interactions: str | Path,
    items: str | Path | None = None,
    users: str | Path | None = None,
    columns: dict[str, str] | None = None,
    item_id_column: str | None = None,
    user_id_column: str | None = None,
    name: str | None = None,
    sep: str | None = None,
    encoding: str = "utf-8",
) -> Dataset:
    cols = {
        "user": "user_id",
        "item": "item_id",
        "rating": "rating",
        "timestamp": "timestamp",
        "split": "split",
        "domain": "domain",
    }
    cols.update(columns or {})
    inter = read_table(interactions, sep, encoding)
    if inter.empty:
        raise DataError(f"{interactions}: no interactions (the file has a header and no rows, or nothing at all)")
    inter = _rename(inter, cols, ["user", "item"], str(interactions))
    inter = inter.rename(columns={"user": "user_id", "item": "item_id"})
    for col in ("rating", "timestamp"):
        if col in inter.columns:
            num = pd.to_numeric(inter[col], errors="coerce")
            bad = num.isna()
            if bad.any():
                line = int(bad.to_numpy().argmax()) + 2  # 1-based + header
                raw = inter[col][bad].iloc[0]
                what = "is empty" if str(raw).strip() == "" else f"is not a number: {raw!r}"
                raise DataError(f"{interactions}: line {line}, column '{cols[col]}' {what}; fill or drop that row")
            column = cols[col]

            def where(i: int, column: str = column) -> str:
                return f"{interactions}: line {i + 2}, column '{column}'"

            check_column(num.to_numpy(), col, where)
            inter[col] = num
    if "split" in inter.columns:
        inter["split"] = inter["split"].astype(str).str.lower()
        bad = ~inter["split"].isin(SPLIT_VALUES)
        if bad.any():
            raise DataError(
                f"{interactions}: column '{cols['split']}' must hold train / valid / test, "
                f"found {inter['split'][bad].iloc[0]!r}"
            )
    empty = _empty(inter["user_id"]) | _empty(inter["item_id"])
    if empty.any():
        raise DataError(f"{interactions}: line {int(empty.argmax()) + 2} has an empty user or item id")
    item_df = user_df = None
    if items is not None:
        item_df = read_table(items, sep, encoding)
        key = item_id_column or cols["item"]
        item_df = _rename(item_df, {"item_id": key}, ["item_id"], str(items)).rename(columns={key: "item_id"})
        item_df = _numbers(item_df, "item_id")
    if users is not None:
        user_df = read_table(users, sep, encoding)
        key = user_id_column or cols["user"]
        user_df = _rename(user_df, {"user_id": key}, ["user_id"], str(users)).rename(columns={key: "user_id"})
        user_df = _numbers(user_df, "user_id")
    # the interactions' domain column was renamed to "domain" with the others; the items file keeps its name
    inter_col = "domain" if cols["domain"] in inter.columns or "domain" in inter.columns else cols["domain"]
    inter, item_df = _item_domains(inter.rename(columns={inter_col: cols["domain"]}) if inter_col in inter.columns
                                   else inter, item_df, cols["domain"], str(interactions), str(items))  # fmt: skip
    return Dataset.from_frames(name or Path(interactions).stem, inter, item_df, user_df, source=str(interactions))
