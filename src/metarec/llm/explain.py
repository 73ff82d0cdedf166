"""Grounded one-sentence explanations: the LLM writes, a checker decides whether it may be shown.

A small model invents films, years and genres. So every generated sentence is checked against what
is known before it is shown: a title it names must be one of the user's own items (or the recommended
item), a year must belong to one of those, and a fact word (a genre, any value of the item's fields)
must be among the facts of the recommended item or of the user's items. A sentence that fails, or is
empty or rambling, is replaced by the template explanation built from the same data; the result says
which one the user got and why a sentence was refused.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_TRAILING_ARTICLE = re.compile(r"^(.*), (the|a|an|la|le|les|il|el|der|die|das)$")
_QUOTED = re.compile(r"[\"“”]([^\"“”]{4,80})[\"“”]")  # double quotes only: titles hold apostrophes
_SPACES = re.compile(r"\s+")
MIN_TITLE_CHARS = 6  # shorter titles ("Heat", "Big") are common words: not matched as citations
_WORDS = re.compile(r"[\w']+")  # any script: a word in Chinese is checked like one in English
#: words a sentence may use besides the titles and facts it cites: connectives and plain praise, no
#: claims. Anything else ("an Italian director", "about a young woman") is a fact the data does not hold.
_GENERIC_WORDS = (
    "a an the and or but of with for to in on at by from as is are was it its it's this that which who "
    "you your you'll you've may might will would also too both other similar like liked likes "
    "enjoy enjoyed love loved because so if than more very much just well great good fun "
    "favourite favorite film films movie movies story stories one kind type mix blend tale close"
)
GENERIC = frozenset(_GENERIC_WORDS.split())


class Generator(Protocol):
    def generate(self, prompt: str, max_new_tokens: int | None = None, prefill: str = "") -> str: ...


@dataclass(frozen=True)
class Known:
    """What may be cited about one item: its title and its facts (field -> values)."""

    title: str
    facts: dict[str, list[str]] = field(default_factory=dict)

    @property
    def year(self) -> str | None:
        m = re.search(r"\((1[89]\d\d|20\d\d)\)\s*$", self.title)  # '2001: A Space Odyssey (1968)' -> 1968
        return m.group(1) if m else None


@dataclass
class Explanation:
    text: str
    source: str  # "llm" (checked and kept) or "template" (no LLM, or its sentence was refused)
    violations: list[str]
    seconds: float


def natural_title(title: str) -> str:
    """'Empire Strikes Back, The (1980)' -> 'The Empire Strikes Back': how a sentence would say it."""
    t = _SPACES.sub(" ", re.sub(r"\s*\(\d{4}\)\s*$", "", title.strip()))
    m = _TRAILING_ARTICLE.match(t.lower())
    return f"{t[len(m.group(1)) + 2 :]} {t[: len(m.group(1))]}" if m else t


def normalise_title(title: str) -> str:
    """The natural title, lower case: what the checker looks for in a sentence."""
    return natural_title(title).lower()


class GroundedExplainer:
    """Writes and checks explanations over one catalogue (`titles`: every item's title; `vocabulary`:
    every fact value of the catalogue, e.g. all genre names, so invented facts are recognisable)."""

    def __init__(self, lm: Generator | None, titles: Iterable[str], vocabulary: Iterable[str],
                 max_new_tokens: int = 40, max_words: int = 45) -> None:  # fmt: skip
        self.lm = lm
        self.catalogue = {n for t in titles if len(n := normalise_title(t)) >= MIN_TITLE_CHARS}
        self.vocabulary = {v.lower() for v in vocabulary if v and len(v) >= 3}
        self.max_new_tokens = max_new_tokens
        self.max_words = max_words

    # ------------------------------------------------------------------ the check
    def check(self, sentence: str, history: list[Known], item: Known) -> list[str]:
        """Everything in `sentence` that is not grounded in `history` and `item` (empty: it may be shown)."""
        text = _SPACES.sub(" ", sentence.lower())
        problems = []
        words = text.split()
        if not words:
            return ["empty"]
        if len(words) > self.max_words:
            problems.append(f"{len(words)} words (at most {self.max_words})")
        allowed = [item, *history]
        allowed_titles = {normalise_title(k.title) for k in allowed}
        masked = text  # allowed titles blanked out first: 'toy story 2' may be cited, 'toy story' not
        for t in sorted(allowed_titles, key=len, reverse=True):
            masked = re.sub(rf"(?<!\w){re.escape(t)}(?!\w)", " ", masked)
        for title in self.catalogue - allowed_titles:
            if title in masked and _mentions(masked, title):
                problems.append(f"cites '{title}', which is not in the user's history")
        for quoted in _QUOTED.findall(sentence):
            q = normalise_title(quoted)
            if not any(q in t or t in q for t in allowed_titles) and q not in self._facts(allowed):
                problems.append(f"quotes '{quoted}', which is neither a history title nor a fact")
        years = {k.year for k in allowed if k.year} | {v for k in allowed for v in k.facts.get("year", [])}
        # what is said outside the cited titles ('2001: a space odyssey' is a title, not a year)
        problems += [f"year {y} is not in the data" for y in _YEAR.findall(masked) if y not in years]
        facts = self._facts([item])  # a genre said in the sentence must be the recommended item's own
        for word in self.vocabulary - facts:
            if _mentions(masked, word):
                problems.append(f"'{word}' is not a fact of the recommended item")
        cited = [k for k in history if _mentions(text, normalise_title(k.title))]
        if not cited:
            problems.append("cites none of the user's own items")
        problems += _liked_problems(text, item, cited)
        known_words = set(_WORDS.findall(" ".join(v.lower() for k in allowed for vs in k.facts.values() for v in vs)))
        unknown = [w for w in dict.fromkeys(_WORDS.findall(masked)) if w not in GENERIC and w not in known_words
                   and not _YEAR.fullmatch(w)]  # fmt: skip
        if unknown:
            problems.append(f"says {', '.join(repr(w) for w in unknown[:5])}, which the data does not hold")
        own = {normalise_title(item.title)} | self._facts([item])
        if not any(_mentions(text, w) for w in own):
            problems.append("says nothing about the recommended item (neither its title nor a fact of it)")
        return problems

    @staticmethod
    def _facts(items: list[Known]) -> set[str]:
        return {v.lower() for k in items for values in k.facts.values() for v in values}

    # ------------------------------------------------------------------ writing
    def template(self, history: list[Known], item: Known) -> str:
        genres = ", ".join(item.facts.get("genres", [])[:3])
        what = f" ({genres})" if genres else ""
        name = natural_title(item.title)
        if history:
            return f"Because you liked {natural_title(history[0].title)}: {name}{what} is close to it."
        return f"{name}{what}."

    def prompt(self, history: list[Known], item: Known) -> str:
        liked = "; ".join(natural_title(k.title) for k in history[:3])
        facts = "; ".join(f"{f}: {', '.join(v)}" for f, v in item.facts.items() if v)
        return (
            f"A user liked these films: {liked}.\nWe recommend: {natural_title(item.title)}"
            + (f" ({facts})" if facts else "")
            + ".\nIn one short sentence, say why they may like it. Mention one film they liked and what the "
            "recommended film is. Do not name any other film."
        )  # fmt: skip

    def explain(self, history: list[Known], item: Known) -> Explanation:
        """`history`: the user's items to cite, most relevant first (e.g. nearest in the LLM space)."""
        t0 = time.perf_counter()
        if self.lm is None or not history:  # nothing of the user's to cite: the LM's sentence would be refused
            return Explanation(self.template(history, item), "template", [], time.perf_counter() - t0)
        # the answer starts with a real citation and the item; the model writes what links them
        first, name = (natural_title(history[0].title) if history else ""), natural_title(item.title)
        prefill = f"Because you liked {first}, you may enjoy {name}," if history else f"You may enjoy {name},"
        raw = self.lm.generate(self.prompt(history, item), self.max_new_tokens, prefill=prefill)
        sentence = first_sentence(raw)
        problems = self.check(sentence, history, item)
        if problems:
            return Explanation(self.template(history, item), "template", problems, time.perf_counter() - t0)
        return Explanation(sentence, "llm", [], time.perf_counter() - t0)


def _liked_problems(text: str, item: Known, cited: list[Known]) -> list[str]:
    """'you liked <the recommended item>' (or 'which you loved'): a claim about the user that is false."""
    name, out = normalise_title(item.title), []
    for liked in re.finditer(r"you(?:'ve)? (?:liked|enjoyed|watched|loved|love|saw|seen) ([^,.;]*)", text):
        said_of = liked.group(1)
        if _mentions(said_of, name) and not any(_mentions(said_of, normalise_title(k.title)) for k in cited):
            out.append("says the user liked the recommended item, which is not in their history")
    if re.search(r"which you(?:'ve)? (?:liked|enjoyed|watched|loved|saw|seen)", text):
        out.append("says the user liked the recommended item, which is not in their history")
    return out


def _mentions(text: str, phrase: str) -> bool:
    return bool(phrase) and re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (not one inside '(1977).' or 'Mr.')."""
    text = _SPACES.sub(" ", text.strip())
    m = re.search(r"(?<![A-Z][a-z])(?<!\b[A-Z])[.!?](\s|$)", text)
    return text[: m.end()].strip() if m else text


__all__ = ["GENERIC", "Explanation", "GroundedExplainer", "Known", "first_sentence", "natural_title", "normalise_title"]
