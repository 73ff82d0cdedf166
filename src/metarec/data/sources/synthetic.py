"""Synthetic catalogue with planted structure: fast tests can assert that a model beats random.

Items belong to topics; each topic has its own vocabulary, so item text carries the topic.
Users prefer a few topics (Dirichlet mixture) and their profile text names their favourite, so a
text-only cold user is recoverable too. Popularity within a topic is Zipf-like, which makes the
Popularity baseline non-trivial, as in real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from metarec.data.schema import Dataset

_TOPIC_WORDS = [
    ["space", "rocket", "alien", "planet", "galaxy", "orbit"],
    ["love", "wedding", "romance", "heart", "kiss", "date"],
    ["murder", "detective", "crime", "police", "clue", "heist"],
    ["dragon", "wizard", "magic", "quest", "castle", "sword"],
    ["war", "soldier", "battle", "army", "general", "front"],
    ["comedy", "laugh", "prank", "joke", "silly", "party"],
    ["horror", "ghost", "haunted", "blood", "scream", "night"],
    ["music", "band", "song", "guitar", "concert", "stage"],
    ["sport", "team", "football", "coach", "match", "goal"],
    ["ocean", "island", "pirate", "ship", "treasure", "storm"],
    ["robot", "machine", "future", "android", "circuit", "code"],
    ["family", "child", "mother", "home", "holiday", "dog"],
]
_FILLER = ["the", "story", "of", "a", "new", "old", "great", "last", "first", "return", "day", "city"]


def make(
    n_users: int = 300,
    n_items: int = 200,
    n_topics: int = 6,
    interactions_per_user: tuple[int, int] = (25, 60),
    concentration: float = 0.15,
    seed: int = 0,
    name: str = "synthetic",
) -> Dataset:
    if not 1 <= n_topics <= len(_TOPIC_WORDS):
        raise ValueError(f"n_topics must be in 1..{len(_TOPIC_WORDS)}")
    rng = np.random.default_rng(seed)
    item_topic = rng.integers(0, n_topics, size=n_items)
    item_pop = rng.zipf(1.6, size=n_items).clip(max=50).astype(float)
    titles, descriptions = [], []
    for i in range(n_items):
        words = _TOPIC_WORDS[item_topic[i]]
        t = rng.choice(words, size=2, replace=False)
        f = rng.choice(_FILLER, size=2, replace=False)
        titles.append(f"{f[0]} {t[0]} {f[1]} {t[1]}".title())
        descriptions.append(f"A tale of {' and '.join(rng.choice(words, size=3, replace=False))}.")
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": titles,
            "genres": [_TOPIC_WORDS[t][0] for t in item_topic],
            "description": descriptions,
            "topic": item_topic,  # the planted truth, also a structured field for feature-source tests
        }
    )
    prefs = rng.dirichlet(np.full(n_topics, concentration), size=n_users)
    fav = prefs.argmax(1)
    users = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(n_users)],
            "age": rng.integers(18, 70, size=n_users),
            "profile": [f"I enjoy {_TOPIC_WORDS[t][0]} and {_TOPIC_WORDS[t][1]} stories" for t in fav],
            "favourite_topic": fav,
        }
    )
    topic_items = [np.flatnonzero(item_topic == t) for t in range(n_topics)]
    # per topic, the cumulative popularity of its items: drawing is a searchsorted, not a loop
    cum = [np.cumsum(item_pop[pool]) / item_pop[pool].sum() if len(pool) else None for pool in topic_items]
    rows: list[tuple[str, str, float, int]] = []
    lo, hi = interactions_per_user
    for u in range(n_users):
        n = int(rng.integers(lo, hi + 1))
        topics = rng.choice(n_topics, size=4 * n, p=prefs[u])
        draws = rng.random(4 * n)
        picked = np.full(4 * n, -1)
        for t in np.unique(topics):
            if cum[t] is None:
                continue
            at = topics == t
            picked[at] = topic_items[t][np.minimum(np.searchsorted(cum[t], draws[at]), len(cum[t]) - 1)]
        keep = picked >= 0
        picked, topics = picked[keep], topics[keep]
        _, first = np.unique(picked, return_index=True)
        order = np.sort(first)[:n]
        noise = rng.normal(0, 0.7, size=len(order))
        ratings = np.clip(np.round(3 + 2 * prefs[u, topics[order]] + noise), 1, 5)
        for i, r in zip(picked[order], ratings, strict=True):
            rows.append((f"u{u}", f"i{i}", float(r), 1_000_000 + len(rows)))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return Dataset.from_frames(name, inter, items, users)


#: one colour per topic: the planted structure an image encoder can pick up
_PALETTE = [(220, 40, 40), (40, 170, 60), (40, 80, 220), (230, 200, 40), (150, 60, 190), (40, 200, 200),
            (240, 130, 30), (120, 120, 120)]  # fmt: skip


def topic_images(items: pd.DataFrame, folder: str | Path, size: int = 32, noise: float = 40.0,
                 seed: int = 0) -> pd.Series:  # fmt: skip
    """Write one PNG per item (its topic's colour, a random bright square, pixel noise) into `folder`
    and return the file names (relative to `folder`) as an `image` column for the item table."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for item, topic in zip(items["item_id"].astype(str), items["topic"].to_numpy(), strict=True):
        pixels = np.array(_PALETTE[int(topic) % len(_PALETTE)], float) + rng.normal(0, noise, (size, size, 3))
        x, y = rng.integers(0, size // 2, 2)
        pixels[y : y + size // 3, x : x + size // 3] = 255.0
        name = f"{item}.png"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / name)
        names.append(name)
    return pd.Series(names, index=items.index, name="image")
