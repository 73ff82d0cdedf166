"""Cleaning steps shared by every source: duplicates, explicit -> implicit, k-core."""

from __future__ import annotations

import numpy as np
import pandas as pd

from metarec.data.schema import ITEM, RATING, TIME, USER, Dataset
from metarec.errors import DataError


def drop_duplicates(ds: Dataset) -> Dataset:
    """Keep one row per (user, item): the latest if timestamped, else the last seen."""
    df = ds.interactions
    if ds.has_timestamps:
        df = df.sort_values(TIME, kind="stable")
    df = df.drop_duplicates([USER, ITEM], keep="last")
    if ds.has_timestamps:
        df = df.sort_values([USER, TIME], kind="stable")
    return ds.with_interactions(df)


def binarize(ds: Dataset, threshold: float) -> Dataset:
    """Explicit -> implicit: keep ratings >= threshold as positive interactions."""
    if not ds.has_ratings:
        raise DataError(f"{ds.name}: implicit_threshold={threshold} needs a rating column, and there is none")
    return ds.with_interactions(ds.interactions[ds.interactions[RATING] >= threshold])


def kcore(ds: Dataset, k_user: int, k_item: int | None = None, max_rounds: int = 100) -> Dataset:
    """Iteratively drop users / items with fewer than k interactions until stable."""
    k_item = k_user if k_item is None else k_item
    df = ds.interactions
    for _ in range(max_rounds):
        uc = np.bincount(df[USER].to_numpy(), minlength=ds.n_users)
        ic = np.bincount(df[ITEM].to_numpy(), minlength=ds.n_items)
        keep = (uc[df[USER].to_numpy()] >= k_user) & (ic[df[ITEM].to_numpy()] >= k_item)
        if keep.all():
            break
        df = df[keep]
    if df.empty:
        raise DataError(f"{ds.name}: {k_user}-core filtering removed every interaction; lower kcore")
    return ds.with_interactions(df)


def compact(ds: Dataset) -> Dataset:
    """Drop users and items left with no interaction and re-densify ids (after filtering)."""
    df = ds.interactions
    u_keep = np.unique(df[USER].to_numpy())
    i_keep = np.unique(df[ITEM].to_numpy())
    if len(u_keep) == ds.n_users and len(i_keep) == ds.n_items:
        return ds
    u_map = np.full(ds.n_users, -1, np.int32)
    u_map[u_keep] = np.arange(len(u_keep), dtype=np.int32)
    i_map = np.full(ds.n_items, -1, np.int32)
    i_map[i_keep] = np.arange(len(i_keep), dtype=np.int32)
    df = df.assign(**{USER: u_map[df[USER].to_numpy()], ITEM: i_map[df[ITEM].to_numpy()]})
    return Dataset(
        ds.name,
        df.reset_index(drop=True),
        ds.items.iloc[i_keep].reset_index(drop=True),
        ds.users.iloc[u_keep].reset_index(drop=True),
        ds.kg,
    )


def clean(
    ds: Dataset,
    dedupe: bool = True,
    implicit_threshold: float | None = None,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
) -> Dataset:
    """The standard cleaning chain; order matters (threshold before k-core)."""
    if dedupe:
        ds = drop_duplicates(ds)
    if implicit_threshold is not None:
        ds = binarize(ds, implicit_threshold)
    if min_user_interactions > 0 or min_item_interactions > 0:
        ds = kcore(ds, min_user_interactions, min_item_interactions)
    ds = ds.with_interactions(sort_interactions(ds.interactions))
    filtered = implicit_threshold is not None or min_user_interactions > 0 or min_item_interactions > 0
    # Only filtering may orphan ids; an item with text but no interaction yet is kept otherwise.
    return compact(ds) if filtered else ds


def sort_interactions(df: pd.DataFrame) -> pd.DataFrame:
    cols = [USER, TIME] if TIME in df.columns else [USER]
    return df.sort_values(cols, kind="stable")
