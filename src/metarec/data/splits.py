"""Evaluation protocols as data: which interactions a model may fit on and what it is asked.

A `Fold` is one training set (models fit once per fold) with the `EvalTask`s scored against it:
for cold users one task per shot count k. All splits are seeded and vectorised (groupby ranks, not
Python loops over users), and the invariants they promise are tested in tests/test_splits.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from metarec.data.schema import ITEM, RATING, USER, Dataset, time_columns
from metarec.errors import ConfigError

PROTOCOLS = ("warm", "next-item", "cold-user", "cold-item", "cold-both", "query-set", "predefined", "bridge")
RANK_WITHIN = ("catalogue", "query", "test-items")


@dataclass
class EvalTask:
    """Users to rank for, what the model may know of them, and the truth to score against."""

    protocol: str
    fold: int
    k: int | None
    users: np.ndarray  # dense user ids, one row each in `history` / `target`
    support: pd.DataFrame  # interactions the model may see for these users (train rows or k shots)
    query: pd.DataFrame  # held-out interactions: the ground truth
    n_items: int
    candidates: np.ndarray | None = None  # restrict ranking to these items (cold-item); None = catalogue
    candidates_cold: bool = True  # the candidates are unseen in training (cold-item); False: a domain's items
    cold_users: bool = False  # users unseen in training: models must fold them in from `support`
    explicit: bool = False  # MeLU protocol: predict / order the query ratings instead of ranking the catalogue
    within_query: bool = False  # rank each user's query items among themselves only (query-set protocol)
    label_threshold: float | None = None  # gains are rating >= this (binary), label-0 rows stay as negatives

    @property
    def label(self) -> str:
        return self.protocol if self.k is None else f"{self.protocol}@{self.k}"

    def _matrix(self, df: pd.DataFrame, values: str | None = None) -> sp.csr_matrix:
        row = pd.Index(self.users).get_indexer(df[USER].to_numpy())
        data = np.ones(len(df), np.float32) if values is None else df[values].to_numpy(np.float32)
        m = sp.csr_matrix((data, (row, df[ITEM].to_numpy())), shape=(len(self.users), self.n_items))
        m.sum_duplicates()
        if values is None:
            m.data[:] = 1.0
        return m

    @property
    def history_ratings(self) -> sp.csr_matrix:
        return self._matrix(self.support, RATING)

    @property
    def target_ratings(self) -> sp.csr_matrix:
        return self._matrix(self.query, RATING)

    @property
    def history(self) -> sp.csr_matrix:
        return self._matrix(self.support)

    @property
    def history_order(self) -> sp.csr_matrix:
        """`history` with each entry's 1-based time position per user as its value, for models that read
        order (`reads_order`); oldest first, file order breaking timestamp ties."""
        return order_matrix(self.support, len(self.users), self.n_items, _row_map(self.users, self.support))

    @property
    def target(self) -> sp.csr_matrix:
        return self._matrix(self.query)


@dataclass
class Fold:
    """One training set and the tasks scored against it.

    `valid` holds meta-valid users' interactions (early stopping and selection only, never trained
    on); `revealed` holds cold items' early-adopter interactions, which models may read as item side
    information (counts, review text) but never train on or score. Both are passed to `fit` by name.
    """

    protocol: str
    fold: int
    train: Dataset
    valid_users: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    cold_items: np.ndarray | None = None
    tasks: list[EvalTask] = field(default_factory=list)
    valid: pd.DataFrame | None = None
    revealed: pd.DataFrame | None = None


def _time_order(df: pd.DataFrame) -> pd.DataFrame:
    """Per user, oldest first; the original row order breaks timestamp ties (stable sort)."""
    cols = time_columns(df, USER, "'earliest' / 'latest' per user")
    return df.sort_values(cols, kind="stable")


def _fold_ids(folds: list[int] | None, n_folds: int) -> list[int]:
    """The folds asked for (`--folds`): each in 0..n_folds-1, none twice (a repeated fold would count its users
    twice in every interval)."""
    if folds is None:
        return list(range(n_folds))
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad or len(set(folds)) != len(folds):
        raise ConfigError(f"folds {folds}: give distinct fold numbers in 0..{n_folds - 1} (n_folds = {n_folds})")
    return list(folds)


def _chunks(ids: np.ndarray, n_folds: int, seed: int) -> list[np.ndarray]:
    perm = np.random.default_rng(seed).permutation(ids)
    return [np.sort(c) for c in np.array_split(perm, n_folds)]


# -------------------------------------------------------------------------------------------- warm
def warm(ds: Dataset, test_ratio: float = 0.2, leave_out: int | None = None, min_train: int = 1) -> Fold:
    """Per-user temporal split: each user's latest interactions are the test set.

    `leave_out=n` holds out exactly the last n per user (leave-last-out); otherwise the last
    `test_ratio` share, at least one. Users who would keep fewer than `min_train` stay train-only.
    """
    df = _time_order(ds.interactions)
    n = df.groupby(USER, sort=False)[ITEM].transform("size").to_numpy()
    pos = df.groupby(USER, sort=False).cumcount().to_numpy()
    n_test = np.full_like(n, leave_out) if leave_out else np.maximum(1, np.floor(n * test_ratio).astype(int))
    n_test = np.where(n - n_test >= min_train, n_test, 0)
    is_test = pos >= n - n_test
    train, test = df[~is_test], df[is_test]
    users = np.unique(test[USER].to_numpy())
    task = EvalTask("warm", 0, None, users, train[train[USER].isin(users)], test, ds.n_items)
    return Fold("warm", 0, ds.with_interactions(train), tasks=[task])


def order_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in time order per user (timestamp, then any other time column, then file order)."""
    if "timestamp" not in df.columns:
        return df
    return df.sort_values(time_columns(df, USER, "a sequence"), kind="stable")


def order_matrix(df: pd.DataFrame, n_rows: int, n_items: int, row_of: np.ndarray | None = None) -> sp.csr_matrix:
    """users x items with each entry's 1-based position in the user's time-ordered history (a re-used item
    keeps its latest position); `row_of` maps user ids to rows (default: the user id is the row)."""
    df = order_rows(df)
    pos = df.groupby(USER, sort=False).cumcount().to_numpy() + 1
    last = ~df.duplicated([USER, ITEM], keep="last").to_numpy()  # a re-used item: its latest use only
    users, items, pos = df[USER].to_numpy()[last], df[ITEM].to_numpy()[last], pos[last]
    rows = users if row_of is None else row_of[users]
    return sp.csr_matrix((pos.astype(np.float32), (rows, items)), shape=(n_rows, n_items))


def _row_map(users: np.ndarray, df: pd.DataFrame) -> np.ndarray:
    """user id -> row of `users` (an array indexable by every user id in `df`)."""
    top = int(max(users.max(initial=-1), df[USER].max() if len(df) else -1)) + 1
    out = np.full(top, -1, np.int64)
    out[users] = np.arange(len(users))
    return out


def next_item(ds: Dataset, repeats: int = 1, min_interactions: int = 3) -> Iterator[Fold]:
    """Leave-last-out next-item prediction (SASRec's protocol): each user's latest interaction is the test
    item, the one before it the validation item (early stopping only), the rest is training. The model
    sees the whole earlier history, validation item included, when it ranks the full catalogue.

    `repeats` yields the same split that many times as folds 0..repeats-1, so each model is fitted with
    that many seeds (the runner seeds a model with seed + fold) and every user counts once per seed.
    Users with fewer than `min_interactions` stay in training and are not scored.
    """
    if repeats < 1 or min_interactions < 3:
        raise ConfigError("next-item: need repeats >= 1 and min_interactions >= 3 (train, valid and test items)")
    df = _time_order(ds.interactions)
    n = df.groupby(USER, sort=False)[ITEM].transform("size").to_numpy()
    pos = df.groupby(USER, sort=False).cumcount().to_numpy()
    scored = n >= min_interactions
    is_test = scored & (pos == n - 1)
    is_valid = scored & (pos == n - 2)
    train, valid, test = df[~is_test & ~is_valid], df[is_valid], df[is_test]
    users = np.unique(test[USER].to_numpy())
    support = df[~is_test & df[USER].isin(users).to_numpy()]
    for r in range(repeats):
        task = EvalTask("next-item", r, None, users, support, test, ds.n_items)
        yield Fold("next-item", r, ds.with_interactions(train), tasks=[task], valid=valid)


# ------------------------------------------------------------------------------- cold user / item
def _shots(df: pd.DataFrame, k: int, min_query: int, support: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """First k interactions per user (by time, or a seeded random k) vs the rest."""
    if support == "earliest":
        df = _time_order(df)
    elif support == "random":
        df = df.sample(frac=1.0, random_state=seed).sort_values(USER, kind="stable")
    else:
        raise ConfigError(f"support must be 'earliest' or 'random', got {support!r}")
    n = df.groupby(USER, sort=False)[ITEM].transform("size").to_numpy()
    df = df[n >= k + min_query]
    pos = df.groupby(USER, sort=False).cumcount().to_numpy()
    return df[pos < k], df[pos >= k]


def shot_tasks(rows: pd.DataFrame, shots: list[int], n_items: int, fold: int, min_query: int = 1,
               support: str = "earliest", seed: int = 0, protocol: str = "cold-user",
               explicit: bool = False) -> list[EvalTask]:  # fmt: skip
    """One cold-user task per k: each user of `rows` known by k shots, asked for the rest."""
    tasks = []
    for k in shots:
        sup, qry = _shots(rows, k, min_query, support, seed)
        users = np.unique(sup[USER].to_numpy())
        tasks.append(EvalTask(protocol, fold, k, users, sup, qry, n_items, cold_users=True, explicit=explicit))
    return tasks


def cold_user(
    ds: Dataset,
    shots: list[int] = (1, 3, 5, 10, 20),  # type: ignore[assignment]
    n_folds: int = 5,
    valid_ratio: float = 0.1,
    min_query: int = 1,
    support: str = "earliest",
    seed: int = 0,
    folds: list[int] | None = None,
    explicit: bool = False,
) -> Iterator[Fold]:
    """User-level K-fold: each fold's test users are unseen in training and known by k shots.

    `explicit=True` is MeLU's protocol: models predict the ratings of the query items (MAE / RMSE)
    and order them (nDCG@k with the ratings as gains) instead of ranking the whole catalogue.
    """
    if explicit and not ds.has_ratings:
        raise ConfigError("explicit=true needs a rating column in the interactions")
    users = np.unique(ds.interactions[USER].to_numpy())
    chunks = _chunks(users, n_folds, seed)
    n_valid = round(valid_ratio * len(users))
    for f in _fold_ids(folds, n_folds):
        test_users = chunks[f]
        rest = np.setdiff1d(users, test_users)
        valid_users = np.sort(np.random.default_rng(seed + 1000 + f).choice(rest, n_valid, replace=False))
        train_users = np.setdiff1d(rest, valid_users)
        inter = ds.interactions
        train = inter[inter[USER].isin(train_users)]
        test = inter[inter[USER].isin(test_users)]
        tasks = shot_tasks(test, shots, ds.n_items, f, min_query, support, seed + f, explicit=explicit)
        valid = inter[inter[USER].isin(valid_users)]
        yield Fold("cold-user", f, ds.with_interactions(train), valid_users, tasks=tasks, valid=valid)


def reveal_earliest(rows: pd.DataFrame, share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split each item's earliest `share` of interactions (at least one, never all) off as revealed."""
    if share <= 0:
        return rows.iloc[:0], rows
    rows = rows.sort_values(time_columns(rows, ITEM, "the early adopters revealed per item"), kind="stable")
    n = rows.groupby(ITEM, sort=False)[USER].transform("size").to_numpy()
    pos = rows.groupby(ITEM, sort=False).cumcount().to_numpy()
    n_rev = np.minimum(np.maximum(1, np.ceil(n * share)), n - 1)
    return rows[pos < n_rev], rows[pos >= n_rev]


def cold_item(
    ds: Dataset, n_folds: int = 5, reveal_share: float = 0.0, seed: int = 0, folds: list[int] | None = None
) -> Iterator[Fold]:
    """Item-level K-fold: a fold's cold items have no training interaction, only their text.

    `reveal_share` > 0 models a launch: each cold item's earliest share of interactions (at least
    one, never all) is revealed, i.e. its early adopters' reviews and counts may be read as item
    side information (`Fold.revealed`), but those rows are neither trained on nor scored.
    """
    items = np.unique(ds.interactions[ITEM].to_numpy())
    chunks = _chunks(items, n_folds, seed)
    inter = ds.interactions
    for f in _fold_ids(folds, n_folds):
        cold = chunks[f]
        is_cold = inter[ITEM].isin(cold).to_numpy()
        train, test = inter[~is_cold], inter[is_cold]
        revealed, test = reveal_earliest(test, reveal_share)
        users = np.unique(test[USER].to_numpy())
        task = EvalTask("cold-item", f, None, users, train[train[USER].isin(users)], test, ds.n_items, cold)
        yield Fold("cold-item", f, ds.with_interactions(train), cold_items=cold, tasks=[task], revealed=revealed)


def cold_both(
    ds: Dataset,
    shots: list[int] = (1, 3, 5, 10, 20),  # type: ignore[assignment]
    n_folds: int = 5,
    valid_ratio: float = 0.1,
    support: str = "earliest",
    reveal_share: float = 0.0,
    seed: int = 0,
    folds: list[int] | None = None,
) -> Iterator[Fold]:
    """Unseen users known by k shots on warm items, asked to rank unseen (cold) items.

    `reveal_share` > 0: the earliest share of the cold items' interactions by *training* users is
    revealed as side information (reviews, early popularity), as in `cold_item`; test users' own
    interactions never are."""
    inter = ds.interactions
    users = np.unique(inter[USER].to_numpy())
    items = np.unique(inter[ITEM].to_numpy())
    u_chunks, i_chunks = _chunks(users, n_folds, seed), _chunks(items, n_folds, seed + 7)
    n_valid = round(valid_ratio * len(users))
    for f in _fold_ids(folds, n_folds):
        test_users, cold = u_chunks[f], i_chunks[f]
        rest = np.setdiff1d(users, test_users)
        valid_users = np.sort(np.random.default_rng(seed + 1000 + f).choice(rest, n_valid, replace=False))
        train_users = np.setdiff1d(rest, valid_users)
        is_cold = inter[ITEM].isin(cold).to_numpy()
        train = inter[inter[USER].isin(train_users).to_numpy() & ~is_cold]
        test_warm = inter[inter[USER].isin(test_users).to_numpy() & ~is_cold]
        test_cold = inter[inter[USER].isin(test_users).to_numpy() & is_cold]
        tasks = []
        for k in shots:
            sup, _ = _shots(test_warm, k, 0, support, seed + f)
            qry = test_cold[test_cold[USER].isin(sup[USER].unique())]
            sup = sup[sup[USER].isin(qry[USER].unique())]
            tusers = np.unique(sup[USER].to_numpy())
            tasks.append(EvalTask("cold-both", f, k, tusers, sup, qry, ds.n_items, cold, cold_users=True))
        revealed, _ = reveal_earliest(inter[inter[USER].isin(train_users).to_numpy() & is_cold], reveal_share)
        valid = inter[inter[USER].isin(valid_users).to_numpy() & ~is_cold]
        yield Fold("cold-both", f, ds.with_interactions(train), valid_users, cold, tasks, valid, revealed)


# ----------------------------------------------------------------------------- query set (MeLU)
def query_set_roles(ds: Dataset, seed: int = 0, n_query: int = 10, min_interactions: int = 13,
                    max_interactions: int = 100, valid_ratio: float = 0.1, test_ratio: float = 0.1
                    ) -> pd.DataFrame:  # fmt: skip
    """MeLU's / RecBole-MetaRec's split as two columns per interaction, `split` and `role`.

    Users with `min_interactions`..`max_interactions` interactions only (the others are dropped:
    split ""), split 8:1:1 into train / valid / test users; for every valid and test user a query of
    `n_query` random interactions (role "query"), the rest is their support (role "support")."""
    inter = ds.interactions
    n = inter.groupby(USER)[ITEM].transform("size").to_numpy()
    keep = (n >= min_interactions) & (n <= max_interactions)
    users = np.unique(inter.loc[keep, USER].to_numpy())
    rng = np.random.default_rng(seed)
    perm = rng.permutation(users)
    n_test, n_valid = round(test_ratio * len(users)), round(valid_ratio * len(users))
    which = pd.Series("train", index=perm)
    which.iloc[:n_test] = "test"
    which.iloc[n_test : n_test + n_valid] = "valid"
    split = np.where(keep, which.reindex(inter[USER].to_numpy()).fillna("").to_numpy(), "")
    # a random order within each user: the first n_query rows are the query
    order = pd.Series(rng.random(len(inter)), index=inter.index).groupby(inter[USER].to_numpy()).rank(method="first")
    role = np.where(np.isin(split, ["valid", "test"]), np.where(order.to_numpy() <= n_query, "query", "support"), "")
    return pd.DataFrame({"split": split, "role": role}, index=inter.index)


def query_set(ds: Dataset, seeds: int = 5, seed: int = 0, n_query: int = 10, min_interactions: int = 13,
              max_interactions: int = 100, valid_ratio: float = 0.1, test_ratio: float = 0.1,
              label_threshold: float | None = 4.0) -> Iterator[Fold]:  # fmt: skip
    """The query-set protocol, one fold per split seed: new users known by their support, each asked
    to order their own `n_query` items (binary labels rating >= `label_threshold`), nDCG@k within them."""
    for f in range(seeds):
        roles = query_set_roles(ds, seed + f, n_query, min_interactions, max_interactions, valid_ratio, test_ratio)
        inter = ds.interactions.assign(split=roles["split"], role=roles["role"])
        yield _predefined_fold(ds.with_interactions(inter), "split", "role", "query", label_threshold, f, "query-set")


# ------------------------------------------------------------------------------------- predefined
def _check_values(inter: pd.DataFrame, column: str, allowed: set[str]) -> None:
    values = inter[column].astype(str).str.lower()
    bad = ~values.isin(allowed)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ConfigError(
            f"column '{column}', interaction row {row + 1}: {inter[column].iloc[row]!r} is not one of "
            f"{sorted(v for v in allowed if v)} (empty = not used)"
        )


def predefined(ds: Dataset, column: str | list[str] = "split", role: str | list[str] | None = "role",
               rank_within: str = "catalogue", label_threshold: float | None = None) -> Iterator[Fold]:  # fmt: skip
    """Use the split a data provider shipped: a `column` with train / valid / test (rows left empty are
    not used), and optionally a `role` column with support / query for valid and test users, which makes
    those users cold (their support is all a model sees of them). A list of columns is a list of folds
    (e.g. one per split seed). `rank_within`: "catalogue" (full ranking), "query" (each user's query items
    among themselves) or "test-items" (the items of the test rows: cold items). `label_threshold`: gains
    are rating >= it, and rows below stay in the query as negatives."""
    columns = column if isinstance(column, list) else [column]
    roles = role if isinstance(role, list) else [role] * len(columns)
    if len(roles) != len(columns):
        raise ConfigError(f"predefined: {len(columns)} split columns but {len(roles)} role columns")
    for f, (c, r) in enumerate(zip(columns, roles, strict=True)):
        yield _predefined_fold(ds, c, r, rank_within, label_threshold, f, "predefined")


def _predefined_fold(ds: Dataset, column: str, role: str | None, rank_within: str, label_threshold: float | None,
                     fold: int, protocol: str) -> Fold:  # fmt: skip
    inter = ds.interactions
    if column not in inter.columns:
        raise ConfigError(f"protocol 'predefined' needs a '{column}' column in the interactions")
    if rank_within not in RANK_WITHIN:
        raise ConfigError(f"rank_within must be one of {', '.join(RANK_WITHIN)}, got {rank_within!r}")
    if label_threshold is not None and RATING not in inter.columns:
        raise ConfigError("label_threshold needs a rating column in the interactions")
    _check_values(inter, column, {"train", "valid", "test", ""})
    split = inter[column].astype(str).str.lower()
    train, test = inter[split == "train"], inter[split == "test"]
    valid = inter[split == "valid"]
    has_roles = role is not None and role in inter.columns
    if has_roles:
        assert role is not None
        _check_values(inter, role, {"support", "query", ""})
        r = inter[role].astype(str).str.lower()
        support, query = test[r[split == "test"] == "support"], test[r[split == "test"] == "query"]
    else:
        support, query = train[train[USER].isin(np.unique(test[USER].to_numpy()))], test
    users = np.unique(query[USER].to_numpy())
    support = support[support[USER].isin(users)]
    cold = has_roles or not np.isin(users, train[USER].to_numpy()).all()
    if has_roles and np.isin(users, train[USER].to_numpy()).any():
        raise ConfigError(f"'{column}': a user with support / query rows also has train rows; a cold user has none")
    candidates = np.unique(query[ITEM].to_numpy()) if rank_within == "test-items" else None
    task = EvalTask(protocol, fold, None, users, support, query, ds.n_items, candidates=candidates, cold_users=cold,
                    within_query=rank_within == "query", label_threshold=label_threshold)  # fmt: skip
    valid_users = np.unique(valid[USER].to_numpy())
    return Fold(protocol, fold, ds.with_interactions(train), valid_users, tasks=[task], valid=valid)


def item_domains(ds: Dataset, partition: dict[str, Any] | None = None, names: tuple[str, str] = ("source", "target")
                 ) -> np.ndarray:  # fmt: skip
    """Each item's domain: the data's `domain` column, or a declared partition of one item column,
    `{column = "genres", target = ["Comedy", "Romance"]}`: items with any of those values (tokens split
    on `sep`, default whitespace or '|') are in the target domain, the rest in the source (`names`)."""
    if partition is None:
        dom = ds.item_domains()
        if dom is None:
            raise ConfigError("the bridge protocol needs item domains: a 'domain' column in the data, or "
                              "partition = {column = 'genres', target = ['Comedy']} in [protocols.bridge]")  # fmt: skip
        return dom
    bad = set(partition) - {"column", "target", "sep"}
    if bad or "column" not in partition or partition.get("target") in (None, "", []):
        raise ConfigError(f"protocols.bridge.partition: needs column and target (a list of values), optional sep; "
                          f"got {sorted(partition)}")  # fmt: skip
    column = partition["column"]
    if column not in ds.items.columns:
        raise ConfigError(f"protocols.bridge.partition: the items have no column {column!r}; they have "
                          f"{sorted(map(str, ds.items.columns))}")  # fmt: skip
    sep = partition.get("sep")
    target = partition["target"]
    wanted = {str(v).strip() for v in ([target] if isinstance(target, str | int | float) else target)}
    values = ds.items[column]
    if pd.api.types.is_float_dtype(values) and values.dropna().mod(1).eq(0).all():
        values = values.astype("Int64")  # 3.0 -> "3", as the config writes it
    tokens = values.astype(str).fillna("").str.split(sep if sep else r"[\s|]+", regex=not sep)
    hit = tokens.map(lambda ts: bool(wanted & {t.strip() for t in ts})).to_numpy(bool)
    if not hit.any():
        raise ConfigError(f"protocols.bridge.partition: no item has {sorted(wanted)} in {column!r}")
    return np.where(hit, names[1], names[0]).astype(object)


def bridge(
    ds: Dataset,
    source: str = "source",
    target: str = "target",
    shots: list[int] = (0, 1, 3, 5),  # type: ignore[assignment]
    n_folds: int = 5,
    valid_ratio: float = 0.1,
    min_source: int = 5,
    min_query: int = 1,
    support: str = "earliest",
    partition: dict[str, Any] | None = None,
    seed: int = 0,
    folds: list[int] | None = None,
) -> Iterator[Fold]:
    """Bridge users: active in the `source` domain, cold in the `target` one (cross-domain cold start).

    Bridge users (>= `min_source` source items, enough target items for the largest k) are split into
    folds. A fold's test users keep their source history in training and lose their target one; each k
    gives two tasks over the target items only: `bridge@k` (support = the source history + the k
    earliest target items; k = 0 is the source history alone) and `bridge-target-only@k` (the k target
    items alone), so the source history's worth is measured on the same users and queries. Meta-valid
    users are other bridge users whose target history is held out of training (their source history stays,
    as the test users'); early stopping scores them on target items after k target shots.

    The source history is all of it, later rows included (a user active in films is asked about music
    knowing what they watched, whenever): a cross-domain measure, not a time-split one."""
    if not shots or min(shots) < 0:
        raise ConfigError(f"protocols.bridge.shots: a non-empty list of k >= 0, got {list(shots)}")
    dom = np.asarray(item_domains(ds, partition, (source, target)), dtype=object)
    names = sorted(set(dom.tolist()))
    for name in (source, target):
        if name not in names:
            raise ConfigError(f"protocols.bridge: no domain {name!r}; the items' domains are {names[:20]}")
    if source == target:
        raise ConfigError("protocols.bridge: source and target must differ")
    inter = ds.interactions
    item_dom = dom[inter[ITEM].to_numpy()]
    is_src, is_tgt = item_dom == source, item_dom == target
    users = inter[USER].to_numpy()
    n_src = np.bincount(users[is_src], minlength=ds.n_users)
    n_tgt = np.bincount(users[is_tgt], minlength=ds.n_users)
    bridge_users = np.flatnonzero((n_src >= min_source) & (n_tgt >= max(shots) + min_query))
    if len(bridge_users) < n_folds + 1:
        raise ConfigError(f"protocols.bridge: {len(bridge_users)} users have >= {min_source} {source!r} items and "
                          f">= {max(shots) + min_query} {target!r} items; lower min_source or the shots")  # fmt: skip
    target_items = np.flatnonzero(dom == target)
    chunks = _chunks(bridge_users, n_folds, seed)
    for f in _fold_ids(folds, n_folds):
        test_users = chunks[f]
        rest = np.setdiff1d(bridge_users, test_users)
        n_valid = round(valid_ratio * len(rest))
        valid_users = np.sort(np.random.default_rng(seed + 1000 + f).choice(rest, n_valid, replace=False))
        in_test, in_valid = inter[USER].isin(test_users).to_numpy(), inter[USER].isin(valid_users).to_numpy()
        train = inter[~((in_valid | in_test) & is_tgt)]
        src_rows, tgt_rows = inter[in_test & is_src], inter[in_test & is_tgt]
        tasks = []
        for k in shots:
            sup, qry = _shots(tgt_rows, k, min_query, support, seed + f)
            ks = np.unique(qry[USER].to_numpy())
            with_src = pd.concat([src_rows[src_rows[USER].isin(ks)], sup])
            tasks.append(EvalTask("bridge", f, k, ks, with_src, qry, ds.n_items, target_items, candidates_cold=False,
                                  cold_users=True))  # fmt: skip
            tasks.append(EvalTask("bridge-target-only", f, k, ks, sup, qry, ds.n_items, target_items,
                                  candidates_cold=False, cold_users=True))  # fmt: skip
        valid = inter[in_valid & is_tgt]
        yield Fold("bridge", f, ds.with_interactions(train), valid_users, tasks=tasks, valid=valid)


def make_folds(ds: Dataset, protocol: str, params: dict, seed: int) -> Iterator[Fold]:
    """Dispatch a config's [protocols.<name>] table to its split function."""
    params = dict(params)
    try:
        if protocol == "warm":
            yield warm(ds, **params)
        elif protocol == "next-item":
            yield from next_item(ds, **params)
        elif protocol == "cold-user":
            yield from cold_user(ds, seed=seed, **params)
        elif protocol == "cold-item":
            yield from cold_item(ds, seed=seed, **params)
        elif protocol == "cold-both":
            yield from cold_both(ds, seed=seed, **params)
        elif protocol == "query-set":
            yield from query_set(ds, seed=seed, **params)
        elif protocol == "predefined":
            yield from predefined(ds, **params)
        elif protocol == "bridge":
            yield from bridge(ds, seed=seed, **params)
        else:
            raise ConfigError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    except TypeError as exc:
        raise ConfigError(f"protocols.{protocol}: {exc}") from None
