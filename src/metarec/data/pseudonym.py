"""Keyed pseudonyms of user ids, for sharing a dataset and for leaving out users deleted on request.

A keyed hash (HMAC-SHA256) rather than a plain hash: user ids are often guessable (small integers, emails),
and anyone could hash every candidate and match it against an unkeyed digest. Without the key, a pseudonym
says nothing about the id; with it, the same id always maps to the same pseudonym (so one user's events stay
together, and a deletion log can be matched against the next training set without storing the id).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

import pandas as pd

from metarec.data.schema import TIME, USER, Dataset
from metarec.errors import ConfigError

#: time units a pseudonymised export can round timestamps down to, in seconds
TIME_UNITS = {"hour": 3600, "day": 86_400, "week": 7 * 86_400}


def keyed_hash(key: str | bytes, ids: Iterable[str], length: int = 32) -> list[str]:
    """HMAC-SHA256 of each id under `key`, as `length` hex characters."""
    if not key:
        raise ConfigError("a pseudonymisation key must not be empty: pass a long random secret")
    k = key.encode() if isinstance(key, str) else key
    return [hmac.new(k, str(i).encode(), hashlib.sha256).hexdigest()[:length] for i in ids]


def without_users(ds: Dataset, subjects: set[str], key: str | bytes) -> tuple[Dataset, int]:
    """The dataset without the users whose keyed hash is in `subjects` (their events, their row in the users
    table and so their id in any artefact trained on it); returns (dataset, users left out)."""
    if not subjects:
        return ds, 0
    gone = pd.Series(keyed_hash(key, ds.users["user_id"].astype(str))).isin(subjects).to_numpy()
    if not gone.any():
        return ds, 0
    frame = ds.external_interactions()[~gone[ds.interactions[USER].to_numpy()]]
    users = ds.users[~gone]
    users = users[users["user_id"].isin(set(frame["user_id"]))]
    return Dataset.from_frames(ds.name, frame, ds.items, users, ds.kg), int(gone.sum())


def pseudonymise(ds: Dataset, key: str, time_unit: str = "day", keep_user_fields: Iterable[str] = ()
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """(interactions, items, users) for sharing: user ids replaced by keyed hashes, timestamps rounded down
    to `time_unit`, and every user field dropped except `keep_user_fields` (free text such as a profile
    names people and places; only fields the owner judged safe stay). Items are a catalogue: kept as is."""
    if time_unit not in TIME_UNITS:
        raise ConfigError(f"time unit must be one of {', '.join(TIME_UNITS)}, got {time_unit!r}")
    keep = list(keep_user_fields)
    unknown = [c for c in keep if c not in ds.users.columns or c == "user_id"]
    if unknown:
        fields = [c for c in ds.users.columns if c != "user_id"]
        raise ConfigError(f"--keep-user-field {unknown[0]!r} is not a user field; the users table has {fields}")
    pseudo = pd.Series(keyed_hash(key, ds.users["user_id"].astype(str)))
    out = ds.external_interactions()
    out["user_id"] = pseudo.to_numpy()[ds.interactions[USER].to_numpy()]
    if TIME in out.columns:
        unit = TIME_UNITS[time_unit]
        out[TIME] = (out[TIME] // unit) * unit
    users = pd.DataFrame({"user_id": pseudo, **{c: ds.users[c].to_numpy() for c in keep}})
    return out, ds.items.copy(), users
