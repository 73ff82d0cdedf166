"""LLM-written item text where the data is thin: one short description per item that has none.

A catalogue of bare titles (MovieLens) gives a text encoder a few words per item. A generative LM
has read about many of those items; asked for one sentence, it may add what the title leaves out
(genre, setting, who it is for) or invent it. Whether that helps is an empirical question, so the
option is measured on launch-day items before anyone keeps it (configs/ml-100k-text.toml).

Generation is greedy (deterministic), batched with left padding, and cached on disk per model and
prompt (`~/.cache/metarec/descriptions/`), so a second fit generates nothing. Only items whose
`fill` column is empty or missing are described; the text goes into that column, so a template such
as "{title}. {description}" reads real descriptions where they exist and generated ones elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from metarec.errors import ConfigError

_SPACES = re.compile(r"\s+")


class DescribeConfig(BaseModel):
    """Settings of the description writer (validated; unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid")

    model: str = "smollm2-135m"
    prompt: str = "In one sentence, what is {title} ({year}) about?"
    fill: str = "description"
    max_new_tokens: int = Field(40, ge=4, le=256)
    batch_size: int = Field(16, ge=1)
    threads: int | None = None


def descriptions_home() -> Path:
    return Path.home() / ".cache" / "metarec" / "descriptions"


def _clean(text: str) -> str:
    """The answer's first sentence, one line."""
    from metarec.llm.explain import first_sentence

    return first_sentence(_SPACES.sub(" ", text).strip())


class DescriptionWriter:
    """Writes (and caches) descriptions for the records that lack one."""

    def __init__(self, cfg: DescribeConfig) -> None:
        self.cfg = cfg
        self._lm: Any = None
        key = hashlib.sha256(json.dumps([cfg.model, cfg.prompt, cfg.max_new_tokens]).encode()).hexdigest()[:16]
        self.path = descriptions_home() / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', cfg.model)[-60:]}-{key}.json"
        self.generated = 0

    def _load_cache(self) -> dict[str, str]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def _save_cache(self, cache: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".part")
        tmp.write_text(json.dumps(cache))
        tmp.replace(self.path)

    def prompts(self, records: pd.DataFrame) -> list[str]:
        from metarec.text.templates import render

        return render(self.cfg.prompt, records)

    def fill(self, records: pd.DataFrame) -> pd.DataFrame:
        """`records` with empty `fill` values replaced by generated descriptions (a copy)."""
        col = self.cfg.fill
        out = records.copy()
        current = (out[col].astype("string").fillna("").str.strip() if col in out.columns
                   else pd.Series([""] * len(out), index=out.index, dtype="string"))  # fmt: skip
        need = (current == "").to_numpy()
        if not need.any():
            return out
        prompts = self.prompts(out[need])
        cache = self._load_cache()
        todo = sorted({p for p in prompts if p and p not in cache})
        for start in range(0, len(todo), self.cfg.batch_size):
            batch = todo[start : start + self.cfg.batch_size]
            answers = self.lm.generate_batch(batch, max_new_tokens=self.cfg.max_new_tokens)
            cache.update({p: _clean(a) for p, a in zip(batch, answers, strict=True)})
            self.generated += len(batch)
            self._save_cache(cache)  # a long run that stops keeps what it wrote
        filled = current.to_numpy(dtype=object)
        filled[need] = [cache.get(p, "") for p in prompts]
        out[col] = filled
        return out

    @property
    def lm(self) -> Any:
        if self._lm is None:
            from metarec.llm.model import CausalLM

            self._lm = CausalLM(self.cfg.model, threads=self.cfg.threads, max_new_tokens=self.cfg.max_new_tokens)
        return self._lm


def describe_config(spec: dict[str, Any] | None, where: str) -> DescribeConfig | None:
    if spec is None:
        return None
    try:
        return DescribeConfig(**spec)
    except ValueError as exc:
        raise ConfigError(f"{where}.describe: {exc}") from None


__all__ = ["DescribeConfig", "DescriptionWriter", "describe_config", "descriptions_home"]
